package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
)

// addTool adds two integers.
func addTool() agent.Tool {
	return agent.Tool{
		Name: "add", Description: "adds a and b",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}}}`),
		Call: func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			var v struct{ A, B int }
			if err := json.Unmarshal(in, &v); err != nil {
				return nil, err
			}
			return json.Marshal(v.A + v.B)
		},
	}
}

// partsText renders parts compactly, for comparisons.
func partsText(parts []agent.Part) string {
	var s []string
	for _, p := range parts {
		switch p.Type {
		case agent.PartText, agent.PartReasoning:
			s = append(s, p.Type+":"+p.Text)
		case agent.PartToolCall:
			s = append(s, fmt.Sprintf("call:%s:%s:%s", p.ToolCallID, p.ToolName, p.Input))
		case agent.PartToolResult:
			e := ""
			if p.IsError {
				e = "!"
			}
			s = append(s, fmt.Sprintf("result%s:%s:%s:%s", e, p.ToolCallID, p.ToolName, p.Output))
		}
	}
	return strings.Join(s, " | ")
}

// TestToolLoop runs a reply of two rounds through the OpenAI double: the
// model calls two tools at once (their arguments split over chunks), the
// calls run in parallel, and the model answers with their results.
func TestToolLoop(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		last := r.Messages[len(r.Messages)-1]
		if last.Role != "tool" {
			return llmtest.Reply{Deltas: []string{"Let me ", "check."}, ToolCalls: []llmtest.ToolCall{
				{ID: "call_1", Name: "add", Arguments: `{"a":2,"b":3}`, ArgChunks: 3},
				{ID: "call_2", Name: "upper", Arguments: `{"s":"hi"}`, ArgChunks: 2},
			}, Usage: &llmtest.Usage{PromptTokens: 10, CompletionTokens: 5}}
		}
		return llmtest.Reply{Deltas: []string{"5 and ", "HI"}, Usage: &llmtest.Usage{PromptTokens: 20, CompletionTokens: 3}}
	})
	// Each tool waits until both have started: run one after the other,
	// the first would wait for ever (bounded, to fail rather than hang).
	var started sync.WaitGroup
	started.Add(2)
	both := make(chan struct{})
	go func() { started.Wait(); close(both) }()
	barrier := func(ctx context.Context) error {
		started.Done()
		select {
		case <-both:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("the other call never started: calls do not run in parallel")
		}
	}
	add := addTool()
	addCall := add.Call
	add.Call = func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if err := barrier(ctx); err != nil {
			return nil, err
		}
		return addCall(ctx, in)
	}
	upper := agent.Tool{Name: "upper", Call: func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if err := barrier(ctx); err != nil {
			return nil, err
		}
		var v struct{ S string }
		json.Unmarshal(in, &v)
		return json.Marshal(strings.ToUpper(v.S))
	}}
	a := openaiAgent(d)
	a.Tools = []agent.Tool{add, upper}
	e := newEnv(t, "", a)

	_, sse := e.open(t, "POST", "/v1/agents/gpt/tl/messages", []byte(`{"text":"2+3, and shout hi"}`))
	evs := sse.rest(t)
	var names []string
	for _, ev := range evs {
		if ev.Event != "text-delta" && ev.Event != "tool-call-delta" {
			names = append(names, ev.Event)
		}
	}
	if got, want := strings.Join(names, ","), "message-start,step-start,tool-call,tool-call,tool-result,tool-result,step-end,step-start,step-end,message-end"; got != want {
		t.Errorf("events (no deltas) = %s\nwant %s", got, want)
	}
	deltas := 0
	for _, ev := range evs {
		if ev.Event == "tool-call-delta" {
			deltas++
		}
	}
	if deltas < 5 {
		t.Errorf("%d tool-call-delta events, want the split arguments' (at least 5)", deltas)
	}
	for _, ev := range evs {
		if ev.Event == "tool-result" && (ev.Data["isError"] != false || ev.Data["toolName"] == nil) {
			t.Errorf("tool-result %+v, want a result that is no error", ev.Data)
		}
	}
	m := endMessage(t, evs[len(evs)-1])
	want := `text:Let me check. | call:call_1:add:{"a":2,"b":3} | call:call_2:upper:{"s":"hi"} | result:call_1:add:5 | result:call_2:upper:"HI" | text:5 and HI`
	if got := partsText(m.Parts); got != want {
		t.Errorf("parts = %s\nwant    %s", got, want)
	}
	if m.Status != agent.Complete || m.Rounds != 2 || len(agent.Steps(m.Parts)) != 2 {
		t.Errorf("status %s rounds %d steps %d, want complete 2 2", m.Status, m.Rounds, len(agent.Steps(m.Parts)))
	}
	if m.Usage == nil || m.Usage.InputTokens != 30 || m.Usage.OutputTokens != 8 {
		t.Errorf("usage = %+v, want the rounds' sum 30/8", m.Usage)
	}
	h := e.history(t, "gpt/tl")
	if len(h) != 2 || partsText(h[1].Parts) != want || h[1].Rounds != 2 {
		t.Errorf("stored reply = %s (rounds %d), want %s", partsText(h[1].Parts), h[1].Rounds, want)
	}

	// The second round's request holds the first round: the calls, then
	// one tool message per call with its output.
	reqs := d.Requests()
	if len(reqs) != 2 {
		t.Fatalf("model requests = %d, want 2", len(reqs))
	}
	var got []string
	for _, cm := range reqs[1].Messages {
		got = append(got, cm.Role+":"+cm.ToolCallID+":"+cm.Text())
	}
	// (A string output may be sent as is or unquoted.)
	if g, w := strings.Replace(strings.Join(got, "|"), `"HI"`, "HI", 1), `system::be kind|user::2+3, and shout hi|assistant::Let me check.|tool:call_1:5|tool:call_2:HI`; g != w {
		t.Errorf("second request = %s\nwant %s", g, w)
	}
	if !bytes.Contains(reqs[1].Messages[2].ToolCalls, []byte(`"call_2"`)) {
		t.Errorf("second request's assistant message has tool calls %s, want call_1 and call_2", reqs[1].Messages[2].ToolCalls)
	}
}

// TestToolErrors checks that a call that cannot be answered well becomes
// an error result for the model, not a failed turn: an unknown tool,
// input that is not a JSON object, a failing tool and a panicking one.
// (A call needing approval parks the reply: see approval_test.go.)
func TestToolErrors(t *testing.T) {
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		if n == 1 {
			return []agent.Event{
				callEv(0, "c1", "nope", `{}`),
				callEv(1, "c2", "fail", `{}`),
				callEv(2, "c3", "add", `{"a":`),
				callEv(3, "c4", "boom", `{}`),
				callEv(5, "c6", "add", `{"a":1,"b":1}`),
				doneEv("tool_calls"),
			}
		}
		return []agent.Event{textEv("noted"), doneEv("stop")}
	}}
	tools := []agent.Tool{
		addTool(),
		{Name: "fail", Call: func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, errors.New("the disk is full")
		}},
		{Name: "boom", Call: func(context.Context, json.RawMessage) (json.RawMessage, error) { panic("kaput") }},
	}
	e := newEnv(t, "", agent.Agent{Name: "t", Provider: p, Model: "m", Tools: tools})
	m := e.send(t, "t/errs", "go")
	if m.Status != agent.Complete || m.Text() != "noted" {
		t.Fatalf("reply = %s %q (%s), want complete noted", m.Status, m.Text(), m.Error)
	}
	results := agent.Steps(m.Parts)[0].Results
	wantErr := []struct {
		id, text string
		isErr    bool
	}{
		{"c1", `unknown tool \"nope\"`, true},
		{"c2", "the disk is full", true},
		{"c3", "is not a JSON object", true},
		{"c4", "panicked: kaput", true},
		{"c6", "2", false},
	}
	if len(results) != len(wantErr) {
		t.Fatalf("results = %s, want %d", partsText(results), len(wantErr))
	}
	for i, w := range wantErr {
		r := results[i]
		if r.ToolCallID != w.id || r.IsError != w.isErr || !strings.Contains(string(r.Output), w.text) {
			t.Errorf("result %d = %s, want %s error=%v containing %s", i, partsText([]agent.Part{r}), w.id, w.isErr, w.text)
		}
		var s string
		if w.isErr && json.Unmarshal(r.Output, &s) != nil {
			t.Errorf("result %d output %s is not a JSON string", i, r.Output)
		}
	}
	// The model was offered the tools, in order, and its second request
	// holds the reply in progress with the first round.
	reqs := p.requests()
	var names []string
	for _, ts := range reqs[0].Tools {
		names = append(names, ts.Name)
	}
	if got := strings.Join(names, ","); got != "add,fail,boom" {
		t.Errorf("tools offered = %s", got)
	}
	if s := string(reqs[0].Tools[1].InputSchema); s != `{"type":"object"}` {
		t.Errorf("default input schema = %s", s)
	}
	last := reqs[1].Messages[len(reqs[1].Messages)-1]
	if last.Role != agent.Assistant || last.ID != m.ID || len(last.Parts) != 10 {
		t.Errorf("second request's last message = %s %s with %d parts, want the reply with 10", last.Role, last.ID, len(last.Parts))
	}
}

// TestMaxToolRounds checks that a model still calling tools after the
// agent's limit ends the reply with an error, its last calls not run.
func TestMaxToolRounds(t *testing.T) {
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		return []agent.Event{textEv(fmt.Sprint("round ", n, " ")), callEv(0, fmt.Sprint("c", n), "add", `{"a":1,"b":2}`), doneEv("tool_calls")}
	}}
	var calls atomic.Int32
	add := addTool()
	inner := add.Call
	add.Call = func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		return inner(ctx, in)
	}
	e := newEnv(t, "", agent.Agent{Name: "t", Provider: p, Model: "m", Tools: []agent.Tool{add}, MaxToolRounds: 3})
	m := e.send(t, "t/max", "loop")
	if m.Status != agent.Failed || !strings.Contains(m.Error, "after 3 rounds") {
		t.Errorf("reply = %s %q, want error after 3 rounds", m.Status, m.Error)
	}
	if n := len(p.requests()); n != 3 {
		t.Errorf("model calls = %d, want 3", n)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("tool ran %d times, want 2 (not in the last round)", n)
	}
	steps := agent.Steps(m.Parts)
	if len(steps) != 3 || m.Rounds != 3 {
		t.Fatalf("steps %d rounds %d, want 3 3: %s", len(steps), m.Rounds, partsText(m.Parts))
	}
	last := steps[2].Results
	if len(last) != 1 || !last[0].IsError || !strings.Contains(string(last[0].Output), "not run") {
		t.Errorf("last round's results = %s, want one error: not run", partsText(last))
	}
	if got := partsText(steps[1].Results); got != "result:c2:add:3" {
		t.Errorf("second round's results = %s", got)
	}
}

// flakySet is a toolset that fails while fail is set.
type flakySet struct {
	name  string
	fail  atomic.Bool
	tools []agent.Tool
}

func (f *flakySet) Name() string { return f.name }

func (f *flakySet) Tools(ctx context.Context) ([]agent.Tool, error) {
	if f.fail.Load() {
		return nil, errors.New("server unreachable")
	}
	return f.tools, nil
}

// TestToolsets checks that toolsets are asked at each round, that one
// that fails sits the round out without failing the turn (and is
// logged), and that a name offered twice keeps its first tool.
func TestToolsets(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	flaky := &flakySet{name: "flaky", tools: []agent.Tool{{Name: "echo", Call: func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		return in, nil
	}}}}
	flaky.fail.Store(true)
	var shadowRan atomic.Bool
	shadow := &flakySet{name: "shadow", tools: []agent.Tool{
		{Name: "add", Call: func(context.Context, json.RawMessage) (json.RawMessage, error) {
			shadowRan.Store(true)
			return json.RawMessage(`"wrong add"`), nil
		}},
		{Name: "bad name!", Call: func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil }},
	}}
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		if n == 1 {
			// The flaky set recovers for the next round.
			flaky.fail.Store(false)
			return []agent.Event{callEv(0, "c1", "add", `{"a":1,"b":1}`), callEv(1, "c2", "echo", `{"x":1}`), doneEv("tool_calls")}
		}
		if n == 2 {
			return []agent.Event{callEv(0, "c3", "echo", `{"x":2}`), doneEv("tool_calls")}
		}
		return []agent.Event{textEv("done"), doneEv("stop")}
	}}
	e := newEnvWith(t, "", func(rt *cairn.Runtime) { rt.Logger = logger },
		agent.Agent{Name: "t", Provider: p, Model: "m", Tools: []agent.Tool{addTool()}, Toolsets: []agent.Toolset{flaky, shadow}})
	m := e.send(t, "t/sets", "go")
	if m.Status != agent.Complete {
		t.Fatalf("reply = %s %q, want complete", m.Status, m.Error)
	}
	want := `call:c1:add:{"a":1,"b":1} | call:c2:echo:{"x":1} | result:c1:add:2 | result!:c2:echo:"unknown tool \"echo\"" | call:c3:echo:{"x":2} | result:c3:echo:{"x":2} | text:done`
	if got := partsText(m.Parts); got != want {
		t.Errorf("parts = %s\nwant    %s", got, want)
	}
	if shadowRan.Load() {
		t.Error("the shadowed tool ran; the first of a name must win")
	}
	toolNames := func(r *agent.Request) string {
		var s []string
		for _, ts := range r.Tools {
			s = append(s, ts.Name)
		}
		return strings.Join(s, ",")
	}
	reqs := p.requests()
	if got := toolNames(reqs[0]); got != "add" {
		t.Errorf("round 1 tools = %s, want add (flaky failed, shadow's add shadowed, its bad name left out)", got)
	}
	if got := toolNames(reqs[1]); got != "add,echo" {
		t.Errorf("round 2 tools = %s, want add,echo", got)
	}
	for _, w := range []string{"toolset unavailable", "server unreachable", "shadowed", "unusable tool"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("logs lack %q:\n%s", w, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestToolLoopPersisted checks that each finished round is stored before
// the next model call (what a crash mid-loop keeps), and that the tool
// calls and results are in the history, and in the model's context, after
// a restart.
func TestToolLoopPersisted(t *testing.T) {
	hold := make(chan struct{})
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		switch n {
		case 1:
			return []agent.Event{textEv("adding"), callEv(0, "c1", "add", `{"a":40,"b":2}`), usageEv(3, 4), doneEv("tool_calls")}
		case 2:
			select {
			case <-hold:
			case <-ctx.Done():
				return []agent.Event{{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "stopped")}}
			}
			return []agent.Event{textEv("42"), doneEv("stop")}
		}
		return []agent.Event{textEv("ok"), doneEv("stop")}
	}}
	a := agent.Agent{Name: "t", Provider: p, Model: "m", Tools: []agent.Tool{addTool()}}
	dir := t.TempDir()
	e := newEnv(t, dir, a)
	done := make(chan agent.Message, 1)
	go func() { done <- e.send(t, "t/p", "what is 40+2?") }()
	waitFor(t, "the second round at the model", func() bool { return len(p.requests()) == 2 })
	h := e.history(t, "t/p")
	if len(h) != 2 || h[1].Status != agent.Streaming || h[1].Rounds != 1 {
		t.Fatalf("history mid-loop = %s, reply %s rounds %d; want the reply streaming after 1 round", roles(h), h[1].Status, h[1].Rounds)
	}
	if got, want := partsText(h[1].Parts), `text:adding | call:c1:add:{"a":40,"b":2} | result:c1:add:42`; got != want {
		t.Errorf("stored mid-loop = %s, want %s", got, want)
	}
	if h[1].Usage == nil || h[1].Usage.OutputTokens != 4 {
		t.Errorf("stored usage mid-loop = %+v, want round 1's", h[1].Usage)
	}
	close(hold)
	m := <-done
	wantParts := `text:adding | call:c1:add:{"a":40,"b":2} | result:c1:add:42 | text:42`
	if m.Status != agent.Complete || partsText(m.Parts) != wantParts {
		t.Fatalf("reply = %s %s", m.Status, partsText(m.Parts))
	}
	e.close(t)

	e2 := newEnv(t, dir, a)
	h = e2.history(t, "t/p")
	if len(h) != 2 || partsText(h[1].Parts) != wantParts || h[1].Rounds != 2 || h[1].Status != agent.Complete {
		t.Fatalf("history after restart = %s rounds %d %s", partsText(h[1].Parts), h[1].Rounds, h[1].Status)
	}
	e2.send(t, "t/p", "thanks")
	reqs := p.requests()
	ctxMsgs := reqs[len(reqs)-1].Messages
	if len(ctxMsgs) != 3 || ctxMsgs[1].Role != agent.Assistant || partsText(ctxMsgs[1].Parts) != wantParts {
		t.Errorf("context after restart has %d messages; the reply's parts %s, want %s", len(ctxMsgs), partsText(ctxMsgs[1].Parts), wantParts)
	}
}

// TestToolLoopCancel checks that POST /cancel during the tool calls
// stops them (their context ends) and the loop: no further round.
func TestToolLoopCancel(t *testing.T) {
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		return []agent.Event{callEv(0, "c1", "wait", `{}`), doneEv("tool_calls")}
	}}
	started := make(chan struct{})
	wait := agent.Tool{Name: "wait", Call: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	e := newEnv(t, "", agent.Agent{Name: "t", Provider: p, Model: "m", Tools: []agent.Tool{wait}})
	done := make(chan agent.Message, 1)
	go func() { done <- e.send(t, "t/c", "go") }()
	<-started
	if !e.cancelSession(t, "t/c") {
		t.Fatal("cancel = false, want true")
	}
	m := <-done
	if m.Status != agent.Cancelled || len(p.requests()) != 1 {
		t.Errorf("reply %s after %d model calls, want cancelled after 1", m.Status, len(p.requests()))
	}
	if got := partsText(m.Parts); !strings.HasPrefix(got, `call:c1:wait:{} | result!:c1:wait:`) || !strings.Contains(got, "cancelled") {
		t.Errorf("parts = %s, want the call and an error result saying it was cancelled", got)
	}
}

func TestNewServiceRejectsTools(t *testing.T) {
	ok := func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil }
	for _, tc := range []struct {
		name  string
		tools []agent.Tool
	}{
		{"bad name", []agent.Tool{{Name: "a b", Call: ok}}},
		{"empty name", []agent.Tool{{Name: "", Call: ok}}},
		{"long name", []agent.Tool{{Name: strings.Repeat("x", 65), Call: ok}}},
		{"twice", []agent.Tool{{Name: "a", Call: ok}, {Name: "a", Call: ok}}},
		{"no call", []agent.Tool{{Name: "a"}}},
		{"bad schema", []agent.Tool{{Name: "a", Call: ok, InputSchema: json.RawMessage(`{`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.NewService(agent.Agent{Name: "a", Tools: tc.tools}); err == nil {
				t.Error("NewService succeeded, want an error")
			}
		})
	}
}

func TestBuiltins(t *testing.T) {
	if got := strings.Join(agent.BuiltinNames(), ","); got != "now,random" {
		t.Errorf("BuiltinNames = %s", got)
	}
	if _, ok := agent.Builtin("nope"); ok {
		t.Error("Builtin(nope) found a tool")
	}
	// Built-ins are valid agent tools.
	now, _ := agent.Builtin("now")
	random, _ := agent.Builtin("random")
	if _, err := agent.NewService(agent.Agent{Name: "a", Tools: []agent.Tool{now, random}}); err != nil {
		t.Fatalf("NewService with built-ins: %v", err)
	}
	ctx := context.Background()

	before := time.Now().UTC().Truncate(time.Second)
	out, err := now.Call(ctx, json.RawMessage(`{}`))
	after := time.Now().UTC()
	var s string
	if err != nil || json.Unmarshal(out, &s) != nil {
		t.Fatalf("now = %s, %v", out, err)
	}
	at, err := time.Parse(time.RFC3339, s)
	if err != nil || !strings.HasSuffix(s, "Z") || at.Before(before) || at.After(after) {
		t.Errorf("now = %s (%v), want RFC 3339 UTC between %v and %v", s, err, before, after)
	}

	for _, tc := range []struct {
		in       string
		lo, hi   int64
		wantsErr bool
	}{
		{`{"min":1,"max":6}`, 1, 6, false},
		{`{"min":-3,"max":-3}`, -3, -3, false},
		{`{"min":-9223372036854775808,"max":9223372036854775807}`, -1 << 63, 1<<63 - 1, false},
		{`{"min":5,"max":1}`, 0, 0, true},
		{`{"min":1}`, 0, 0, true},
		{`{"min":1.5,"max":3}`, 0, 0, true},
		{`{"min":"1","max":3}`, 0, 0, true},
		{`{"min":1,"max":99999999999999999999}`, 0, 0, true},
	} {
		seen := map[int64]bool{}
		for range 200 {
			out, err := random.Call(ctx, json.RawMessage(tc.in))
			if tc.wantsErr {
				if err == nil {
					t.Errorf("random(%s) = %s, want an error", tc.in, out)
				}
				break
			}
			var n int64
			if err != nil || json.Unmarshal(out, &n) != nil || n < tc.lo || n > tc.hi {
				t.Fatalf("random(%s) = %s, %v; want an integer in [%d, %d]", tc.in, out, err, tc.lo, tc.hi)
			}
			seen[n] = true
		}
		if tc.in == `{"min":1,"max":6}` && len(seen) < 2 {
			t.Errorf("random(1..6) gave %d distinct values in 200 draws", len(seen))
		}
	}
}
