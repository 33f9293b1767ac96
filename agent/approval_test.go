package agent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
)

// TestApprovalAcrossRestart parks a reply on a tool that needs approval,
// restarts the runtime on the same data, approves, and checks that the
// same reply goes on to complete, its stream positions continuing
// without a gap.
func TestApprovalAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	var ran sync.Map
	e := newEnv(t, dir, guardAgent("guard", &ran, time.Hour))
	_, sse := e.open(t, "POST", "/v1/agents/guard/r/messages", []byte(`{"text":"open the door"}`))
	evs := sse.rest(t)
	if got := eventNames(evs); got != "message-start,step-start,text-delta,tool-call,tool-approval-request,message-end" {
		t.Fatalf("parked stream = %s", got)
	}
	parked := endMessage(t, evs[len(evs)-1])
	lastID := evs[len(evs)-1].ID
	if parked.Status != agent.AwaitingApproval {
		t.Fatalf("reply status %s, want awaiting-approval", parked.Status)
	}
	var call agent.Part
	for _, p := range parked.Parts {
		if p.Type == agent.PartToolCall {
			call = p
		}
	}
	if !call.Approval.Pending() || call.Approval.Deadline.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("tool call %+v, want a pending approval due in an hour", call)
	}
	// Other events are served meanwhile: the session is not held.
	if m := e.send(t, "guard/r", "still there?"); m.Status != agent.AwaitingApproval {
		t.Errorf("a second message's reply = %s, want it parked as well", m.Status)
	}
	e.close(t)

	e = newEnv(t, dir, guardAgent("guard", &ran, time.Hour))
	code, b := e.do(t, "GET", "/v1/agents/guard/r/approvals", nil)
	var list struct{ Approvals []agent.PendingApproval }
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Approvals) != 2 {
		t.Fatalf("GET /approvals after a restart: %d %s, want the two pending calls", code, b)
	}
	if a := list.Approvals[0]; a.MessageID != parked.ID || a.ToolName != "guarded" || string(a.Input) != `{"what":"door"}` {
		t.Errorf("first pending approval = %+v", a)
	}
	if _, ok := ran.Load(`{"what":"door"}`); ok {
		t.Fatal("the tool ran before it was approved")
	}
	code, b = e.do(t, "POST", "/v1/agents/guard/r/approvals/"+call.ToolCallID, []byte(`{"approved":true}`))
	var done agent.Message
	if code != http.StatusOK || json.Unmarshal(b, &done) != nil {
		t.Fatalf("approve: %d %s", code, b)
	}
	if done.ID != parked.ID || done.Status != agent.Complete || done.Text() != `Let me check.the tool said "opened"` || done.Rounds != 2 {
		t.Errorf("approved reply = %s %s %q rounds %d, want %s complete, the tool's output, 2 rounds", done.ID, done.Status, done.Text(), done.Rounds, parked.ID)
	}
	if _, ok := ran.Load(`{"what":"door"}`); !ok {
		t.Error("the approved tool did not run")
	}
	if code, b := e.do(t, "POST", "/v1/agents/guard/r/approvals/"+call.ToolCallID, []byte(`{"approved":false}`)); code != http.StatusConflict && code != http.StatusNotFound {
		t.Errorf("a second decision: %d %s, want 409", code, b)
	}
	// A client that had the parked stream resumes from its message-end
	// and gets exactly the rest.
	_, rest := e.open(t, "GET", "/v1/agents/guard/r/messages/"+parked.ID+"/stream", nil, "Last-Event-ID", lastID)
	if got := eventNames(rest.rest(t)); got != "tool-result,step-end,step-start,text-delta,step-end,message-end" {
		t.Errorf("stream after the parked message-end = %s", got)
	}
	_, all := e.open(t, "GET", "/v1/agents/guard/r/messages/"+parked.ID+"/stream", nil)
	if got := eventNames(all.rest(t)); got != "message-start,step-start,text-delta,tool-call,tool-approval-request,tool-result,step-end,step-start,text-delta,step-end,message-end" {
		t.Errorf("whole stream = %s", got)
	}
}

// TestApprovalDeadline checks that a call nobody decides is denied at its
// deadline, with no client connected, and that the reply goes on with
// the denial as the tool's result.
func TestApprovalDeadline(t *testing.T) {
	var ran sync.Map
	e := newEnv(t, "", guardAgent("guard", &ran, time.Second))
	m := e.send(t, "guard/d", "open the door")
	if m.Status != agent.AwaitingApproval {
		t.Fatalf("reply status %s, want awaiting-approval", m.Status)
	}
	parkedAt := time.Now()
	var h []agent.Message
	waitFor(t, "the deadline to deny the call", func() bool {
		h = e.history(t, "guard/d")
		return len(h) == 2 && h[1].Status == agent.Complete
	})
	if d := time.Since(parkedAt); d < 900*time.Millisecond {
		t.Errorf("denied after %v, before the 1 s deadline", d)
	}
	want := `Let me check.the tool said "a person denied this tool call: no decision before the deadline"`
	if h[1].Text() != want {
		t.Errorf("reply = %q, want %q", h[1].Text(), want)
	}
	var denied bool
	for _, p := range h[1].Parts {
		if p.Type == agent.PartToolCall && p.Approval != nil && p.Approval.Approved != nil && !*p.Approval.Approved {
			denied = strings.Contains(p.Approval.Reason, "deadline")
		}
	}
	if !denied {
		t.Errorf("the call's approval is not marked denied by the deadline: %+v", h[1].Parts)
	}
	if _, ok := ran.Load(`{"what":"door"}`); ok {
		t.Error("a denied tool ran")
	}
	if code, b := e.do(t, "GET", "/v1/agents/guard/d/schedules", nil); code != http.StatusOK || string(b) != "{\"schedules\":[]}\n" {
		t.Errorf("schedules = %d %s, want none (deadlines are not listed)", code, b)
	}
}
