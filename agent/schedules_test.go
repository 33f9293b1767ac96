package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
)

// slack is how late a schedule may fire: the schedule package states
// about a second on a loaded machine, and its tests allow 2 s.
const slack = 2 * time.Second

// addSchedule posts a schedule and returns it.
func addSchedule(tb testing.TB, e *env, session, body string) agent.Schedule {
	tb.Helper()
	code, b := e.do(tb, "POST", "/v1/agents/"+session+"/schedules", []byte(body))
	if code != http.StatusCreated {
		tb.Fatalf("POST schedules %s: %d %s", body, code, b)
	}
	var s agent.Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		tb.Fatal(err)
	}
	return s
}

func listSchedules(tb testing.TB, e *env, session string) []agent.Schedule {
	tb.Helper()
	code, b := e.do(tb, "GET", "/v1/agents/"+session+"/schedules", nil)
	var out struct{ Schedules []agent.Schedule }
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil {
		tb.Fatalf("GET schedules: %d %s", code, b)
	}
	return out.Schedules
}

// waitReply waits for the reply to a scheduled message and checks that it
// came on time: not before the schedule's time, at most slack after.
func waitReply(tb testing.TB, e *env, session, text string, at time.Time) {
	tb.Helper()
	var h []agent.Message
	waitFor(tb, "the reply to "+text, func() bool {
		h = e.history(tb, session)
		for i, m := range h {
			if m.Role == agent.User && m.Text() == text && i+1 < len(h) && h[i+1].Status == agent.Complete {
				return true
			}
		}
		return false
	})
	for i, m := range h {
		if m.Role != agent.User || m.Text() != text {
			continue
		}
		if late := m.CreatedAt.Sub(at); late < 0 || late > slack {
			tb.Errorf("%q sent %v after its time %v, want 0 to %v", text, late, at, slack)
		}
		if r := h[i+1]; r.Text() != "echo: "+text {
			tb.Errorf("reply to %q = %q", text, r.Text())
		}
	}
}

// TestSchedules checks schedules after a delay, at a time and on a cron
// expression: they fire on time with no client connected, a message
// gets a reply, and they are listed and cancelled.
func TestSchedules(t *testing.T) {
	e := newEnv(t, "")
	d := addSchedule(t, e, "default/s", `{"delay_seconds":0.5,"message":"after a delay","payload":{"n":1}}`)
	if d.Type != "delayed" || d.DelaySeconds != 0.5 || d.Message != "after a delay" || string(d.Payload) != `{"n":1}` {
		t.Errorf("delayed schedule = %+v", d)
	}
	at := time.Now().Add(time.Second).UTC().Truncate(time.Millisecond)
	a := addSchedule(t, e, "default/s", fmt.Sprintf(`{"id":"at-one","at":%q,"message":"at a time"}`, at.Format(time.RFC3339Nano)))
	if a.ID != "at-one" || a.Type != "scheduled" || !a.Time.Equal(at) {
		t.Errorf("timed schedule = %+v, want at-one at %v", a, at)
	}
	c := addSchedule(t, e, "default/s", `{"id":"tick","cron":"* * * * * *","tz":"Europe/Paris","payload":"tick"}`)
	if c.Type != "cron" || c.Cron != "* * * * * *" || c.TZ != "Europe/Paris" {
		t.Errorf("cron schedule = %+v", c)
	}
	if l := listSchedules(t, e, "default/s"); len(l) != 3 || l[1].Time.Before(l[0].Time) || l[2].Time.Before(l[1].Time) {
		t.Errorf("schedules = %+v, want 3 in firing order", l)
	}
	waitReply(t, e, "default/s", "after a delay", d.Time)
	waitReply(t, e, "default/s", "at a time", at)
	var tick agent.Schedule
	waitFor(t, "the cron schedule to run twice", func() bool {
		for _, s := range listSchedules(t, e, "default/s") {
			if s.ID == "tick" {
				tick = s
			}
		}
		return tick.Runs >= 2
	})
	if !tick.Time.After(time.Now().Add(-slack)) {
		t.Errorf("cron schedule's next time %v is in the past", tick.Time)
	}
	if code, b := e.do(t, "DELETE", "/v1/agents/default/s/schedules/tick", nil); code != http.StatusOK {
		t.Errorf("DELETE: %d %s", code, b)
	}
	if l := listSchedules(t, e, "default/s"); len(l) != 0 {
		t.Errorf("schedules after they ran and the cron one was cancelled = %+v", l)
	}
	if code, _ := e.do(t, "DELETE", "/v1/agents/default/s/schedules/tick", nil); code != http.StatusNotFound {
		t.Errorf("DELETE again: %d, want 404", code)
	}
	for _, bad := range []string{
		`{}`,
		`{"delay_seconds":1,"cron":"* * * * *"}`,
		`{"cron":"* * * * *","tz":"Mars/Olympus"}`,
		`{"cron":"not a cron"}`,
		`{"delay_seconds":-1}`,
		`{"id":"approval:x","delay_seconds":1}`,
		`{"delay_seconds":1,"message":"  "}`,
	} {
		if code, b := e.do(t, "POST", "/v1/agents/default/s/schedules", []byte(bad)); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s, want 400", bad, code, b)
		}
	}
}

// TestScheduleAfterRestart checks that a schedule survives a restart of
// the runtime and fires on time after it, with nobody having touched the
// session since.
func TestScheduleAfterRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir)
	s := addSchedule(t, e, "default/r", `{"delay_seconds":1.5,"message":"wake up"}`)
	e.close(t)
	e = newEnv(t, dir)
	waitReply(t, e, "default/r", "wake up", s.Time)
}

// TestScheduleStreamsToSockets checks that a scheduled message's reply
// streams to connected WebSocket clients, and that a schedule's firing
// is pushed to them.
func TestScheduleStreamsToSockets(t *testing.T) {
	e := newSDKEnv(t, "", nil, nil)
	c := wsDial(t, e, "/agents/default/w")
	frame(t, c, "cf_agent_identity")
	addSchedule(t, e, "default/w", `{"delay_seconds":0.2,"message":"hello sockets","payload":[1]}`)
	if f := frame(t, c, "cairn_schedule"); mustMarshal(f["schedule"].(map[string]any)["payload"]) != `[1]` {
		t.Errorf("schedule frame = %v", f)
	}
	var text string
	for {
		f := frame(t, c, "cf_agent_use_chat_response")
		if f["done"] == true {
			if f["outcome"] != "completed" {
				t.Errorf("outcome %v", f["outcome"])
			}
			break
		}
		var chunk map[string]any
		json.Unmarshal([]byte(f["body"].(string)), &chunk)
		if chunk["type"] == "text-delta" {
			text += chunk["delta"].(string)
		}
	}
	if text != "echo: hello sockets" {
		t.Errorf("streamed text %q", text)
	}
}
