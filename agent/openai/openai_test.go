package openai_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
	"github.com/cairn-dev/cairn/agent/openai"
)

// collect runs a stream to its end.
func collect(tb testing.TB, p agent.Provider, req *agent.Request) []agent.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var evs []agent.Event
	for ev := range p.Stream(ctx, req) {
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		tb.Fatal("stream yielded nothing")
	}
	return evs
}

func userMsg(text string) agent.Message {
	return agent.Message{Role: agent.User, Parts: []agent.Part{{Type: agent.PartText, Text: text}}, Status: agent.Complete}
}

func TestStreamText(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"Hel", "lo", " there"}, Usage: &llmtest.Usage{PromptTokens: 12, CompletionTokens: 3}}
	})
	p := openai.New(openai.Config{BaseURL: d.URL, APIKey: "sk-test", MaxRetries: -1})
	req := &agent.Request{Model: "m1", System: "be brief", Messages: []agent.Message{
		userMsg("hi"),
		{Role: agent.Assistant, Parts: []agent.Part{{Type: agent.PartText, Text: "hello"}}, Status: agent.Complete},
		userMsg("again"),
	}}
	evs := collect(t, p, req)
	var text string
	var usage *agent.Usage
	for _, ev := range evs {
		switch ev.Type {
		case agent.EventText:
			text += ev.Text
		case agent.EventUsage:
			usage = ev.Usage
		}
	}
	if got, want := text, "Hello there"; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	if usage == nil || usage.InputTokens != 12 || usage.OutputTokens != 3 {
		t.Errorf("usage = %+v, want 12 in, 3 out", usage)
	}
	last := evs[len(evs)-1]
	if last.Type != agent.EventDone || last.FinishReason != "stop" {
		t.Errorf("last event = %+v, want done with finish reason stop", last)
	}

	reqs := d.Requests()
	if len(reqs) != 1 {
		t.Fatalf("double got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if got, want := r.Authorization, "Bearer sk-test"; got != want {
		t.Errorf("Authorization = %q, want %q", got, want)
	}
	if !r.Stream || r.StreamOptions == nil || !r.StreamOptions.IncludeUsage {
		t.Errorf("stream = %v, stream_options = %+v; want streaming with usage", r.Stream, r.StreamOptions)
	}
	if r.Model != "m1" {
		t.Errorf("model = %q, want m1", r.Model)
	}
	var roles []string
	for _, m := range r.Messages {
		roles = append(roles, m.Role+":"+m.Text())
	}
	if got, want := strings.Join(roles, "|"), "system:be brief|user:hi|assistant:hello|user:again"; got != want {
		t.Errorf("messages = %s, want %s", got, want)
	}
}

func TestStreamToolCalls(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{
			Deltas: []string{"Let me look."},
			ToolCalls: []llmtest.ToolCall{
				{ID: "call_1", Name: "weather", Arguments: `{"city":"Paris","unit":"C"}`, ArgChunks: 4},
				{ID: "call_2", Name: "time", Arguments: `{"tz":"Europe/Paris"}`, ArgChunks: 3},
			},
		}
	})
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	tools := []agent.ToolSpec{
		{Name: "weather", Description: "The weather in a city.", InputSchema: json.RawMessage(
			`{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["C","F"]}},"required":["city"]}`)},
		{Name: "time", InputSchema: json.RawMessage(`{"type":"object","properties":{"tz":{"type":"string"}}}`)},
		{Name: "now"},
	}
	evs := collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("weather?")}, Tools: tools})
	var calls []agent.ToolCall
	deltas := map[int]string{}
	for _, ev := range evs {
		switch ev.Type {
		case agent.EventToolCall:
			calls = append(calls, *ev.ToolCall)
		case agent.EventToolCallDelta:
			deltas[ev.ToolCall.Index] += ev.ToolCall.Input
		}
	}
	want := []agent.ToolCall{
		{Index: 0, ID: "call_1", Name: "weather", Input: `{"city":"Paris","unit":"C"}`},
		{Index: 1, ID: "call_2", Name: "time", Input: `{"tz":"Europe/Paris"}`},
	}
	if len(calls) != len(want) {
		t.Fatalf("tool calls = %+v, want %+v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("tool call %d = %+v, want %+v", i, calls[i], want[i])
		}
		if deltas[i] != want[i].Input {
			t.Errorf("deltas of call %d add up to %q, want %q", i, deltas[i], want[i].Input)
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
		fn := got[i].Function
		if got[i].Type != "function" || fn.Name != tool.Name || fn.Description != tool.Description {
			t.Errorf("tool %d = %s %s %q, want function %s %q", i, got[i].Type, fn.Name, fn.Description, tool.Name, tool.Description)
		}
		schema := tool.InputSchema
		if schema == nil {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		if !jsonEqual(t, fn.Parameters, schema) {
			t.Errorf("tool %d parameters = %s, want %s", i, fn.Parameters, schema)
		}
	}
}

func TestNoTools(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
	var raw map[string]json.RawMessage
	json.Unmarshal(d.Requests()[0].Raw, &raw)
	if _, ok := raw["tools"]; ok {
		t.Errorf("request has tools: %s, want none", raw["tools"])
	}
}

func TestBadToolSchema(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	evs := collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")},
		Tools: []agent.ToolSpec{{Name: "bad", InputSchema: json.RawMessage(`[1]`)}}})
	last := evs[len(evs)-1]
	if last.Type != agent.EventError || !strings.Contains(cairn.ErrorMessage(last.Err), `tool "bad"`) {
		t.Errorf("last event = %+v, want an error naming the tool", last)
	}
	if n := len(d.Requests()); n != 0 {
		t.Errorf("double got %d requests, want none", n)
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

// toolCallJSON is a tool call of an assistant message, as the API sends it.
type toolCallJSON struct {
	ID       string `json:"id"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// renderMessages renders a request's messages one a line.
func renderMessages(msgs []llmtest.ChatMessage) string {
	var lines []string
	for _, m := range msgs {
		line := m.Role + ":"
		if t := m.Text(); t != "" {
			line += " " + t
		}
		if m.ToolCallID != "" {
			line += " [" + m.ToolCallID + "]"
		}
		var tcs []toolCallJSON
		json.Unmarshal(m.ToolCalls, &tcs)
		for _, tc := range tcs {
			line += " call " + tc.ID + " " + tc.Function.Name + " " + tc.Function.Arguments
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// TestHistorySteps renders a two-round tool loop: each round an
// assistant message with its calls, then one tool message per call.
func TestHistorySteps(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	req := &agent.Request{Model: "m", Messages: []agent.Message{
		userMsg("weather in Paris and Rome?"),
		{Role: agent.Assistant, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartReasoning, Text: "two cities"},
			{Type: agent.PartText, Text: "Looking."},
			{Type: agent.PartToolCall, ToolCallID: "call_1", ToolName: "weather", Input: json.RawMessage(`{"city":"Paris"}`)},
			{Type: agent.PartToolCall, ToolCallID: "call_2", ToolName: "weather", Input: json.RawMessage(`{"city":"Rome"}`)},
			{Type: agent.PartToolResult, ToolCallID: "call_2", ToolName: "weather", Output: json.RawMessage(`"city not found"`), IsError: true},
			{Type: agent.PartToolResult, ToolCallID: "call_1", ToolName: "weather", Output: json.RawMessage(`{"temp":21}`)},
			{Type: agent.PartToolCall, ToolCallID: "call_3", ToolName: "weather", Input: json.RawMessage(`"{\"city\":\"Roma"`)},
			{Type: agent.PartToolResult, ToolCallID: "call_3", ToolName: "weather", Output: json.RawMessage(`{"temp":25}`)},
			{Type: agent.PartText, Text: "Paris 21, Rome 25."},
		}},
		userMsg("and a call cut short?"),
		{Role: agent.Assistant, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartReasoning, Text: "only thoughts"},
		}},
		{Role: agent.Assistant, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartToolCall, ToolCallID: "call_4", ToolName: "x", Input: json.RawMessage(`{}`)},
			{Type: agent.PartToolResult, ToolCallID: "call_other", Output: json.RawMessage(`1`)},
		}},
		userMsg("bye"),
	}}
	evs := collect(t, p, req)
	if last := evs[len(evs)-1]; last.Type != agent.EventDone {
		t.Fatalf("last event = %+v, want done (the double refuses a bad history)", last)
	}
	want := strings.Join([]string{
		"user: weather in Paris and Rome?",
		`assistant: Looking. call call_1 weather {"city":"Paris"} call call_2 weather {"city":"Rome"}`,
		`tool: {"temp":21} [call_1]`,
		`tool: error: city not found [call_2]`,
		`assistant: call call_3 weather {"city":"Roma`,
		`tool: {"temp":25} [call_3]`,
		"assistant: Paris 21, Rome 25.",
		"user: and a call cut short?",
		"assistant: call call_4 x {}",
		"tool: error: the tool call has no result (the turn ended before it ran) [call_4]",
		"user: bye",
	}, "\n")
	if got := renderMessages(d.Requests()[0].Messages); got != want {
		t.Errorf("messages:\n%s\nwant:\n%s", got, want)
	}
}

func TestHistoryWithToolCalls(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	req := &agent.Request{Model: "m", Messages: []agent.Message{
		userMsg("weather?"),
		{Role: agent.Assistant, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartToolCall, ToolCallID: "call_1", ToolName: "weather", Input: json.RawMessage(`{"city":"Paris"}`)},
		}},
		{Role: agent.ToolRole, Status: agent.Complete, Parts: []agent.Part{
			{Type: agent.PartToolResult, ToolCallID: "call_1", Output: json.RawMessage(`{"temp":21}`)},
		}},
	}}
	collect(t, p, req)
	msgs := d.Requests()[0].Messages
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 3", len(msgs))
	}
	var tcs []toolCallJSON
	if err := json.Unmarshal(msgs[1].ToolCalls, &tcs); err != nil || len(tcs) != 1 {
		t.Fatalf("assistant tool_calls = %s (%v), want one", msgs[1].ToolCalls, err)
	}
	if tcs[0].ID != "call_1" || tcs[0].Function.Name != "weather" || tcs[0].Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("tool call = %+v", tcs[0])
	}
	if msgs[2].Role != "tool" || msgs[2].ToolCallID != "call_1" || msgs[2].Text() != `{"temp":21}` {
		t.Errorf("tool message = %+v, want the result of call_1", msgs[2])
	}
}

func TestStreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply llmtest.Reply
		text  string // text yielded before the error
		msg   string // in the error's message
	}{
		{"http status", llmtest.Reply{Status: 401, ErrorMessage: "Incorrect API key provided"}, "", "401 Incorrect API key provided"},
		{"error mid-stream", llmtest.Reply{Deltas: []string{"par", "tial"}, StreamError: "the model is overloaded"}, "partial", "overloaded"},
		{"cut connection", llmtest.Reply{Deltas: []string{"cut"}, Truncate: true}, "cut", "ended before the model finished"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return tc.reply })
			p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
			evs := collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}})
			var text string
			for _, ev := range evs {
				if ev.Type == agent.EventText {
					text += ev.Text
				}
			}
			if text != tc.text {
				t.Errorf("text = %q, want %q", text, tc.text)
			}
			last := evs[len(evs)-1]
			if last.Type != agent.EventError {
				t.Fatalf("last event = %+v, want an error", last)
			}
			if got := cairn.ErrorCode(last.Err); got != cairn.Unavailable {
				t.Errorf("code = %s, want %s", got, cairn.Unavailable)
			}
			if got := cairn.ErrorMessage(last.Err); !strings.Contains(got, tc.msg) {
				t.Errorf("message = %q, want it to contain %q", got, tc.msg)
			}
		})
	}
}

func TestStreamStopsEarly(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"one", "two", "three"}, Hold: hold}
	})
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	n := 0
	for ev := range p.Stream(context.Background(), &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}}) {
		if ev.Type == agent.EventText {
			n++
			break // while the double still holds the rest: Stream must return
		}
	}
	if n != 1 {
		t.Errorf("got %d text events, want 1", n)
	}
}

func TestReasoning(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Reasoning: []string{"think", "ing"}, Deltas: []string{"answer"}}
	})
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
	var reasoning, text string
	for _, ev := range collect(t, p, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}}) {
		switch ev.Type {
		case agent.EventReasoning:
			reasoning += ev.Text
		case agent.EventText:
			text += ev.Text
		}
	}
	if reasoning != "thinking" || text != "answer" {
		t.Errorf("reasoning %q, text %q; want thinking, answer", reasoning, text)
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
			d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
				return llmtest.Reply{Deltas: []string{"one", "two"}, Hold: hold}
			})
			p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
			ctx, cancel := context.WithCancel(context.Background())
			if tc.timeout > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), tc.timeout)
			}
			defer cancel()
			var evs []agent.Event
			for ev := range p.Stream(ctx, &agent.Request{Model: "m", Messages: []agent.Message{userMsg("hi")}}) {
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
		})
	}
}

// FuzzHistory checks that whatever the history, the API (as the double
// checks it) takes its rendering.
func FuzzHistory(f *testing.F) {
	f.Add([]byte{0, 1, 3, 4, 1})
	f.Add([]byte{3, 10, 3, 1, 0, 3, 6, 2})
	f.Add([]byte{0, 3, 3, 4, 11, 18, 240, 241, 3, 203, 0})
	f.Add([]byte{6, 4, 0, 2, 3, 6, 6, 3, 3, 5, 12})
	d := llmtest.NewOpenAI(f, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{Deltas: []string{"ok"}} })
	p := openai.New(openai.Config{BaseURL: d.URL, MaxRetries: -1})
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
