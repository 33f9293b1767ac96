package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn"
)

// The OpenAI-compatible endpoint of a session: POST /chat/completions
// takes a chat completions request, sends only its last user message (the
// history is the session's), and answers in the chat.completion shape, or
// streams chat.completion.chunk events when the request says "stream".

// chatRequest is the part of a chat completions request the endpoint
// reads; other fields (model, temperature, tools, ...) are ignored: the
// agent's configuration decides.
type chatRequest struct {
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// completions serves POST /chat/completions.
func (s *session) completions(w http.ResponseWriter, r *http.Request) {
	// The user message is stored before the model is called, so a retry
	// would send it twice: tell the OpenAI SDKs not to retry, whatever
	// the status.
	w.Header().Set("X-Should-Retry", "false")
	a := s.agent
	if a == nil {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name))
		return
	}
	in, text, err := decodeChat(r, a.MaxTextBytes)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	if in.Stream {
		if _, ok := w.(http.Flusher); !ok {
			cairn.WriteError(w, cairn.Errorf(cairn.Internal, "streaming is not supported"))
			return
		}
	}
	out := &chatSink{stream: in.Stream, usage: in.StreamOptions != nil && in.StreamOptions.IncludeUsage}
	s.generate(w, r, a, text, s.socketSink(out, "", nil, nil))
}

// decodeChat reads a chat completions request and returns the text of
// its last user message.
func decodeChat(r *http.Request, maxText int) (chatRequest, string, error) {
	var in chatRequest
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&in); err != nil {
		return in, "", cairn.Errorf(cairn.Invalid, "body must be a chat completions request: %v", err)
	}
	if dec.More() {
		return in, "", cairn.Errorf(cairn.Invalid, "body must hold one JSON object")
	}
	last := -1
	for i, m := range in.Messages {
		if m.Role == "user" {
			last = i
		}
	}
	if last < 0 {
		return in, "", cairn.Errorf(cairn.Invalid, "messages must hold a user message")
	}
	text, err := contentText(in.Messages[last].Content)
	if err != nil {
		return in, "", err
	}
	if strings.TrimSpace(text) == "" {
		return in, "", cairn.Errorf(cairn.Invalid, "the last user message must hold text")
	}
	if len(text) > maxText {
		return in, "", cairn.Errorf(cairn.TooLarge, "text is %d bytes; the limit is %d", len(text), maxText)
	}
	return in, text, nil
}

// contentText returns a message content (a string, or an array of text
// parts) as text.
func contentText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", cairn.Errorf(cairn.Invalid, "content must be a string or an array of text parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", cairn.Errorf(cairn.Invalid, "content part type %q is not supported; only text", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// chatSink answers in the chat completions shapes. A reply that failed or
// was cancelled is an error: an API error body, or, mid-stream, an event
// {"error": {...}} as OpenAI sends, with no [DONE].
type chatSink struct {
	stream bool
	usage  bool // stream a usage chunk (stream_options.include_usage)
}

func (c *chatSink) chunk(g *generation, choices []any, usage any) {
	b, err := json.Marshal(map[string]any{
		"id": "chatcmpl-" + g.msg.ID, "object": "chat.completion.chunk", "created": g.msg.CreatedAt.Unix(),
		"model": g.a.Model, "choices": choices, "usage": usage,
	})
	if err != nil {
		return
	}
	fmt.Fprintf(g.w, "data: %s\n\n", b)
}

func (c *chatSink) delta(g *generation, delta map[string]any, finish any) {
	c.chunk(g, []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}, nil)
}

func (c *chatSink) sse() bool { return false }

func (c *chatSink) begin(g *generation, _ *streamEvent) {
	if !c.stream {
		return
	}
	sseHeader(g.w)
	c.delta(g, map[string]any{"role": "assistant", "content": ""}, nil)
	g.w.(http.Flusher).Flush()
}

func (c *chatSink) event(g *generation, ev *streamEvent) {
	if !c.stream {
		return
	}
	// Tool calls are not sent: the agent's tools are its own.
	switch ev.name {
	case "text-delta":
		c.delta(g, map[string]any{"content": ev.data["delta"]}, nil)
	case "reasoning-delta":
		c.delta(g, map[string]any{"reasoning_content": ev.data["delta"]}, nil)
	default:
		return
	}
	g.w.(http.Flusher).Flush()
}

func (c *chatSink) end(g *generation, _ *streamEvent) {
	m := g.msg
	switch m.Status {
	case Complete:
	case Cancelled:
		c.fail(g, cairn.Errorf(cairn.Conflict, "%s", m.Error))
		return
	case AwaitingApproval:
		c.fail(g, cairn.Errorf(cairn.Conflict, "reply %s awaits a person's approval of a tool call: see GET and POST /approvals", m.ID))
		return
	default:
		c.fail(g, cairn.Errorf(cairn.Unavailable, "%s", m.Error))
		return
	}
	finish := g.finish
	if finish == "" {
		finish = "stop"
	}
	var usage any
	if u := m.Usage; u != nil {
		usage = map[string]any{"prompt_tokens": u.InputTokens, "completion_tokens": u.OutputTokens, "total_tokens": u.InputTokens + u.OutputTokens}
	}
	if c.stream {
		c.delta(g, map[string]any{}, finish)
		if c.usage && usage != nil {
			c.chunk(g, []any{}, usage)
		}
		fmt.Fprint(g.w, "data: [DONE]\n\n")
		return
	}
	body := map[string]any{
		"id": "chatcmpl-" + m.ID, "object": "chat.completion", "created": m.CreatedAt.Unix(), "model": g.a.Model,
		"choices": []any{map[string]any{"index": 0, "logprobs": nil, "finish_reason": finish,
			"message": map[string]any{"role": "assistant", "content": m.Text(), "refusal": nil}}},
	}
	if usage != nil {
		body["usage"] = usage
	}
	cairn.WriteJSON(g.w, http.StatusOK, body)
}

func (c *chatSink) fail(g *generation, err error) {
	if !c.stream {
		cairn.WriteError(g.w, err)
		return
	}
	code := string(cairn.ErrorCode(err))
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": errorText(err), "type": code, "code": code, "param": nil}})
	fmt.Fprintf(g.w, "data: %s\n\n", b)
}
