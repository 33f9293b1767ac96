package anthropic_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/anthropic"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
)

// collect runs a stream to its end.
func collect(tb testing.TB, p agent.Provider, req *agent.Request) []agent.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return collectCtx(tb, ctx, p, req)
}

func collectCtx(tb testing.TB, ctx context.Context, p agent.Provider, req *agent.Request) []agent.Event {
	tb.Helper()
	var evs []agent.Event
	for ev := range p.Stream(ctx, req) {
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		tb.Fatal("stream yielded nothing")
	}
	for i, ev := range evs[:len(evs)-1] {
		if ev.Type == agent.EventDone || ev.Type == agent.EventError {
			tb.Fatalf("event %d of %d is %+v: a stream ends with its only done or error event", i, len(evs), ev)
		}
	}
	return evs
}

func userMsg(text string) agent.Message {
	return agent.Message{Role: agent.User, Parts: []agent.Part{{Type: agent.PartText, Text: text}}, Status: agent.Complete}
}

func newProvider(d *llmtest.Anthropic) *anthropic.Provider {
	return anthropic.New(anthropic.Config{BaseURL: d.URL, APIKey: "sk-ant-test", MaxRetries: -1})
}

// texts returns the text and reasoning of evs.
func texts(evs []agent.Event) (text, reasoning string) {
	for _, ev := range evs {
		switch ev.Type {
		case agent.EventText:
			text += ev.Text
		case agent.EventReasoning:
			reasoning += ev.Text
		}
	}
	return text, reasoning
}

func TestStreamText(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"Hel", "lo", " there"}, Usage: &llmtest.Usage{PromptTokens: 12, CompletionTokens: 3}}
	})
	req := &agent.Request{Model: "claude-test", System: "be brief", Messages: []agent.Message{
		userMsg("hi"),
		{Role: agent.Assistant, Parts: []agent.Part{{Type: agent.PartText, Text: "hello"}}, Status: agent.Complete},
		userMsg("again"),
	}}
	evs := collect(t, newProvider(d), req)
	text, _ := texts(evs)
	if got, want := text, "Hello there"; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	var usage *agent.Usage
	for _, ev := range evs {
		if ev.Type == agent.EventUsage {
			usage = ev.Usage
		}
	}
	if usage == nil || usage.InputTokens != 12 || usage.OutputTokens != 3 {
		t.Errorf("last usage = %+v, want 12 in, 3 out", usage)
	}
	if last := evs[len(evs)-1]; last.Type != agent.EventDone || last.FinishReason != "stop" {
		t.Errorf("last event = %+v, want done with finish reason stop", last)
	}

	reqs := d.Requests()
	if len(reqs) != 1 {
		t.Fatalf("double got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.APIKey != "sk-ant-test" && r.Authorization != "Bearer sk-ant-test" {
		t.Errorf("X-Api-Key = %q, Authorization = %q; want the key in one", r.APIKey, r.Authorization)
	}
	if r.Version == "" {
		t.Error("no anthropic-version header")
	}
	if !r.Stream || r.Model != "claude-test" || r.MaxTokens != anthropic.DefaultMaxTokens {
		t.Errorf("stream = %v, model = %q, max_tokens = %d; want true, claude-test, %d", r.Stream, r.Model, r.MaxTokens, anthropic.DefaultMaxTokens)
	}
	if got := r.SystemText(); got != "be brief" {
		t.Errorf("system = %q, want %q", got, "be brief")
	}
	if len(r.Tools) != 0 {
		t.Errorf("tools = %+v, want none", r.Tools)
	}
	var msgs []string
	for _, m := range r.Messages {
		msgs = append(msgs, m.Role+":"+m.Text())
	}
	if got, want := strings.Join(msgs, "|"), "user:hi|assistant:hello|user:again"; got != want {
		t.Errorf("messages = %s, want %s", got, want)
	}
}

func TestMaxTokens(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := anthropic.New(anthropic.Config{BaseURL: d.URL, MaxRetries: -1, MaxTokens: 100})
	collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
	if got := d.Requests()[0].MaxTokens; got != 100 {
		t.Errorf("max_tokens = %d, want 100", got)
	}
}

func TestReasoning(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
		return llmtest.Reply{Reasoning: []string{"think", "ing"}, Deltas: []string{"answer"}}
	})
	evs := collect(t, newProvider(d), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
	text, reasoning := texts(evs)
	if reasoning != "thinking" || text != "answer" {
		t.Errorf("reasoning %q, text %q; want thinking, answer", reasoning, text)
	}
	// Reasoning comes before the text, as the model produced it.
	var kinds []agent.EventType
	for _, ev := range evs {
		if ev.Type == agent.EventReasoning || ev.Type == agent.EventText {
			if len(kinds) == 0 || kinds[len(kinds)-1] != ev.Type {
				kinds = append(kinds, ev.Type)
			}
		}
	}
	if len(kinds) != 2 || kinds[0] != agent.EventReasoning {
		t.Errorf("event kinds in order = %v, want reasoning then text", kinds)
	}
}

func TestStreamToolCalls(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
		return llmtest.Reply{
			Deltas: []string{"Let me look."},
			ToolCalls: []llmtest.ToolCall{
				{ID: "toolu_1", Name: "weather", Arguments: `{"city":"Paris","unit":"C"}`, ArgChunks: 4},
				{ID: "toolu_2", Name: "time", Arguments: `{"tz":"Europe/Paris"}`, ArgChunks: 3},
				{ID: "toolu_3", Name: "now", Arguments: ``}, // no parameters
			},
			Usage: &llmtest.Usage{PromptTokens: 40, CompletionTokens: 25},
		}
	})
	tools := []agent.ToolSpec{
		{Name: "weather", Description: "The weather in a city.", InputSchema: json.RawMessage(
			`{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["C","F"]}},"required":["city"],"additionalProperties":false}`)},
		{Name: "time", InputSchema: json.RawMessage(`{"type":"object","properties":{"tz":{"type":"string"}}}`)},
		{Name: "now"},
	}
	evs := collect(t, newProvider(d), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("weather?")}, Tools: tools})
	var calls []agent.ToolCall
	deltas := map[int]string{}
	names := map[int]string{}
	for i, ev := range evs {
		switch ev.Type {
		case agent.EventToolCall:
			calls = append(calls, *ev.ToolCall)
		case agent.EventToolCallDelta:
			tc := ev.ToolCall
			deltas[tc.Index] += tc.Input
			if tc.Name != "" {
				names[tc.Index] = tc.ID + " " + tc.Name
			}
			for _, prev := range calls {
				if prev.Index == tc.Index {
					t.Errorf("event %d: a delta of call %d after the call was whole", i, tc.Index)
				}
			}
		}
	}
	want := []agent.ToolCall{
		{Index: 0, ID: "toolu_1", Name: "weather", Input: `{"city":"Paris","unit":"C"}`},
		{Index: 1, ID: "toolu_2", Name: "time", Input: `{"tz":"Europe/Paris"}`},
		{Index: 2, ID: "toolu_3", Name: "now", Input: `{}`},
	}
	if len(calls) != len(want) {
		t.Fatalf("tool calls = %+v, want %+v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("tool call %d = %+v, want %+v", i, calls[i], want[i])
		}
		if i < 2 && deltas[i] != want[i].Input {
			t.Errorf("deltas of call %d add up to %q, want %q", i, deltas[i], want[i].Input)
		}
		if got := names[i]; got != want[i].ID+" "+want[i].Name {
			t.Errorf("first delta of call %d names %q, want %q", i, got, want[i].ID+" "+want[i].Name)
		}
	}
	if last := evs[len(evs)-1]; last.Type != agent.EventDone || last.FinishReason != "tool_calls" {
		t.Errorf("last event = %+v, want done with tool_calls", last)
	}

	got := d.Requests()[0].Tools
	if len(got) != len(tools) {
		t.Fatalf("request tools = %+v, want %d", got, len(tools))
	}
	for i, tool := range tools {
		if got[i].Name != tool.Name || got[i].Description != tool.Description {
			t.Errorf("tool %d = %s %q, want %s %q", i, got[i].Name, got[i].Description, tool.Name, tool.Description)
		}
		schema := tool.InputSchema
		if schema == nil {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		if !jsonEqual(t, got[i].InputSchema, schema) {
			t.Errorf("tool %d input_schema = %s, want %s", i, got[i].InputSchema, schema)
		}
	}
}

func jsonEqual(tb testing.TB, a, b json.RawMessage) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		tb.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		tb.Fatalf("%s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestHistoryWithToolCalls renders a two-round tool loop: each round an
// assistant message, its results a user message of tool_result blocks.
func TestHistoryWithToolCalls(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	req := &agent.Request{Model: "m", Messages: []agent.Message{
		userMsg("weather in Paris and Rome?"),
		{Role: agent.Assistant, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartReasoning, Text: "two cities"},
			{Type: agent.PartText, Text: "Looking."},
			{Type: agent.PartToolCall, ToolCallID: "toolu_1", ToolName: "weather", Input: json.RawMessage(`{"city":"Paris"}`)},
			{Type: agent.PartToolCall, ToolCallID: "toolu_2", ToolName: "weather", Input: json.RawMessage(`{"city":"Rome"}`)},
			{Type: agent.PartToolResult, ToolCallID: "toolu_1", ToolName: "weather", Output: json.RawMessage(`{"temp":21}`)},
			{Type: agent.PartToolResult, ToolCallID: "toolu_2", ToolName: "weather", Output: json.RawMessage(`"city not found"`), IsError: true},
			{Type: agent.PartToolCall, ToolCallID: "toolu_3", ToolName: "weather", Input: json.RawMessage(`"{\"city\":\"Roma"`)},
			{Type: agent.PartToolResult, ToolCallID: "toolu_3", ToolName: "weather", Output: json.RawMessage(`{"temp":25}`)},
			{Type: agent.PartText, Text: "Paris 21, Rome 25."},
		}},
		userMsg("thanks"),
	}}
	evs := collect(t, newProvider(d), req)
	if last := evs[len(evs)-1]; last.Type != agent.EventDone {
		t.Fatalf("last event = %+v, want done (the double refuses a bad history)", last)
	}
	var got []string
	for _, m := range d.Requests()[0].Messages {
		var bs []string
		for _, b := range m.Blocks() {
			switch b.Type {
			case "text":
				bs = append(bs, "text "+b.Text)
			case "tool_use":
				bs = append(bs, "tool_use "+b.ID+" "+b.Name+" "+string(b.Input))
			case "tool_result":
				s := "tool_result " + b.ToolUseID + " " + b.ContentText()
				if b.IsError {
					s += " (error)"
				}
				bs = append(bs, s)
			default:
				bs = append(bs, b.Type)
			}
		}
		got = append(got, m.Role+": "+strings.Join(bs, ", "))
	}
	want := []string{
		"user: text weather in Paris and Rome?",
		`assistant: text Looking., tool_use toolu_1 weather {"city":"Paris"}, tool_use toolu_2 weather {"city":"Rome"}`,
		`user: tool_result toolu_1 {"temp":21}, tool_result toolu_2 city not found (error)`,
		`assistant: tool_use toolu_3 weather {}`,
		`user: tool_result toolu_3 {"temp":25}`,
		"assistant: text Paris 21, Rome 25.",
		"user: text thanks",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestHistoryEdgeCases covers histories the API would refuse as they
// are: results in tool messages, a call without result, a result for no
// call, a system message, empty text.
func TestHistoryEdgeCases(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	req := &agent.Request{Model: "m", System: "top", Messages: []agent.Message{
		{Role: agent.System, Parts: []agent.Part{{Type: agent.PartText, Text: "also this"}}},
		userMsg("a"),
		{Role: agent.Assistant, Parts: []agent.Part{
			{Type: agent.PartToolCall, ToolCallID: "t1", ToolName: "x", Input: json.RawMessage(`{}`)},
		}},
		{Role: agent.ToolRole, Parts: []agent.Part{{Type: agent.PartToolResult, ToolCallID: "t1", Output: json.RawMessage(`1`)}}},
		{Role: agent.Assistant, Parts: []agent.Part{
			{Type: agent.PartText, Text: ""},
			{Type: agent.PartToolCall, ToolCallID: "t2", ToolName: "x", Input: json.RawMessage(`{}`)},
			{Type: agent.PartToolResult, ToolCallID: "other", Output: json.RawMessage(`2`)},
		}},
		userMsg(""),
		userMsg("b"),
	}}
	evs := collect(t, newProvider(d), req)
	if last := evs[len(evs)-1]; last.Type != agent.EventDone {
		t.Fatalf("last event = %+v, want done", last)
	}
	r := d.Requests()[0]
	if got, want := r.SystemText(), "top\nalso this"; got != want {
		t.Errorf("system = %q, want %q", got, want)
	}
	var got []string
	for _, m := range r.Messages {
		var bs []string
		for _, b := range m.Blocks() {
			s := b.Type + " " + b.Text + b.ID + b.ToolUseID + b.ContentText()
			if b.IsError {
				s += " (error)"
			}
			bs = append(bs, strings.TrimSpace(s))
		}
		got = append(got, m.Role+": "+strings.Join(bs, ", "))
	}
	want := []string{
		"user: text a",
		"assistant: tool_use t1",
		"user: tool_result t11",
		"assistant: tool_use t2",
		"user: tool_result t2the tool call has no result (the turn ended before it ran) (error), text b",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestStreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply llmtest.Reply
		text  string // text yielded before the error
		msg   string // in the error's message
	}{
		{"http status", llmtest.Reply{Status: 401, ErrorMessage: "invalid x-api-key"}, "", "401 authentication_error: invalid x-api-key"},
		{"overloaded", llmtest.Reply{Status: 529, ErrorMessage: "Overloaded"}, "", "529 overloaded_error: Overloaded"},
		{"error mid-stream", llmtest.Reply{Deltas: []string{"par", "tial"}, StreamError: "Overloaded"}, "partial", "overloaded_error: Overloaded"},
		{"cut connection", llmtest.Reply{Deltas: []string{"cut"}, Truncate: true}, "cut", "ended before the model finished"},
		{"cut tool call", llmtest.Reply{ToolCalls: []llmtest.ToolCall{{ID: "t", Name: "x", Arguments: `{"a":1}`}}, Truncate: true}, "", "ended before the model finished"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply { return tc.reply })
			evs := collect(t, newProvider(d), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
			if text, _ := texts(evs); text != tc.text {
				t.Errorf("text = %q, want %q", text, tc.text)
			}
			for _, ev := range evs {
				if ev.Type == agent.EventToolCall {
					t.Errorf("tool call %+v from a stream that failed", ev.ToolCall)
				}
			}
			last := evs[len(evs)-1]
			if last.Type != agent.EventError {
				t.Fatalf("last event = %+v, want an error", last)
			}
			var ce *cairn.Error
			if !errors.As(last.Err, &ce) {
				t.Fatalf("error %T %v, want a *cairn.Error", last.Err, last.Err)
			}
			if got := cairn.ErrorCode(last.Err); got != cairn.Unavailable {
				t.Errorf("code = %s, want %s", got, cairn.Unavailable)
			}
			if got := cairn.ErrorMessage(last.Err); !strings.Contains(got, tc.msg) || !strings.HasPrefix(got, "anthropic: ") {
				t.Errorf("message = %q, want it to start with anthropic: and contain %q", got, tc.msg)
			}
		})
	}
}

func TestBadRequestKeepsAPIMessage(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	// No messages: the API refuses it, and the provider says why.
	evs := collect(t, newProvider(d), &agent.Request{Model: "m"})
	last := evs[len(evs)-1]
	if last.Type != agent.EventError || !strings.Contains(cairn.ErrorMessage(last.Err), "400 invalid_request_error: messages") {
		t.Errorf("last event = %+v, want the 400's message", last)
	}
}

func TestStreamStopsEarly(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"one", "two", "three"}, Hold: hold}
	})
	n := 0
	for ev := range newProvider(d).Stream(context.Background(), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}}) {
		if ev.Type == agent.EventText {
			n++
			break // while the double still holds the rest: Stream must return
		}
	}
	if n != 1 {
		t.Errorf("got %d text events, want 1", n)
	}
}

func TestStreamContextEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    cairn.Code
		timeout time.Duration // 0: cancel after the first text
	}{
		{"cancelled", cairn.Unavailable, 0},
		{"deadline", cairn.Timeout, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
				return llmtest.Reply{Deltas: []string{"one", "two"}, Hold: hold}
			})
			ctx, cancel := context.WithCancel(context.Background())
			if tc.timeout > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), tc.timeout)
			}
			defer cancel()
			var evs []agent.Event
			for ev := range newProvider(d).Stream(ctx, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}}) {
				evs = append(evs, ev)
				if ev.Type == agent.EventText && tc.timeout == 0 {
					cancel() // the double holds the rest until the end
				}
			}
			last := evs[len(evs)-1]
			if last.Type != agent.EventError {
				t.Fatalf("last event = %+v, want an error", last)
			}
			if got := cairn.ErrorCode(last.Err); got != tc.code {
				t.Errorf("code = %s (%v), want %s", got, last.Err, tc.code)
			}
			if text, _ := texts(evs); text != "one" {
				t.Errorf("text = %q, want one", text)
			}
		})
	}
}

func TestStopReasons(t *testing.T) {
	for _, tc := range []struct{ stop, want string }{
		{"end_turn", "stop"},
		{"max_tokens", "length"},
		{"stop_sequence", "stop_sequence"},
		{"refusal", "refusal"},
	} {
		t.Run(tc.stop, func(t *testing.T) {
			d := llmtest.NewAnthropic(t, func(*llmtest.MessagesRequest) llmtest.Reply {
				return llmtest.Reply{Deltas: []string{"x"}, FinishReason: tc.stop}
			})
			evs := collect(t, newProvider(d), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
			if last := evs[len(evs)-1]; last.Type != agent.EventDone || last.FinishReason != tc.want {
				t.Errorf("last event = %+v, want done with %s", last, tc.want)
			}
		})
	}
}

// TestConcurrent runs several streams on one provider at once (with
// -race).
func TestConcurrent(t *testing.T) {
	d := llmtest.NewAnthropic(t, func(r *llmtest.MessagesRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"re: ", r.Messages[len(r.Messages)-1].Text()}}
	})
	p := newProvider(d)
	errc := make(chan error, 8)
	for i := range 8 {
		go func() {
			q := strings.Repeat("q", i+1)
			var text string
			for ev := range p.Stream(context.Background(), &agent.Request{Model: "m", Messages: []agent.Message{userMsg(q)}}) {
				text += ev.Text
			}
			if text != "re: "+q {
				errc <- errors.New("got " + text + ", want re: " + q)
				return
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// FuzzHistory checks that whatever the history, the API (as the double
// checks it) takes its rendering.
func FuzzHistory(f *testing.F) {
	f.Add([]byte{0, 1, 3, 4, 1})
	f.Add([]byte{3, 10, 3, 1, 0, 3, 6, 2})
	f.Add([]byte{0, 3, 3, 4, 11, 18, 240, 241, 3, 203, 0})
	f.Add([]byte{6, 4, 0, 2, 3, 6, 6, 3, 3, 5, 12})
	d := llmtest.NewAnthropic(f, func(*llmtest.MessagesRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := newProvider(d)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64 {
			return
		}
		evs := collect(t, p, &agent.Request{Model: "m", Messages: llmtest.History(data)})
		if last := evs[len(evs)-1]; last.Type != agent.EventDone {
			t.Fatalf("history %v: last event = %+v, want done", data, last)
		}
	})
}
