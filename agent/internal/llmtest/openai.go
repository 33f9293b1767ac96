// Package llmtest holds test doubles of LLM servers that speak the real
// wire formats, so that tests exercise the real provider code (the
// official SDKs) end to end.
package llmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// OpenAI is an OpenAI-compatible chat completions server: POST
// /v1/chat/completions answers with the exact streaming wire format
// ("data: {json}\n\n" chunks of object chat.completion.chunk, tool-call
// deltas split across chunks, a finish chunk, a usage chunk with empty
// choices when stream_options.include_usage is set, "data: [DONE]"), or
// a non-streaming chat.completion, or an error body with its status. Like
// the real API it refuses (400) a history whose tool calls and tool
// messages do not match up.
type OpenAI struct {
	// URL is the base URL to configure a client with (ends in /v1).
	URL string

	srv   *httptest.Server
	reply func(*ChatRequest) Reply

	mu       sync.Mutex
	requests []*ChatRequest
}

// ChatRequest is a request the double received.
type ChatRequest struct {
	Model         string          `json:"model"`
	Stream        bool            `json:"stream"`
	StreamOptions *StreamOptions  `json:"stream_options"`
	Messages      []ChatMessage   `json:"messages"`
	Tools         []ChatTool      `json:"tools,omitempty"`
	Raw           json.RawMessage `json:"-"`
	Authorization string          `json:"-"`
}

// StreamOptions is the request's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// ChatTool is a tool of a request: Type "function" and the function.
type ChatTool struct {
	Type     string       `json:"type"`
	Function ChatFunction `json:"function"`
}

// ChatFunction is the function of a ChatTool.
type ChatFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// ChatMessage is a message of a request. Content is a string or an array
// of content parts, kept raw; Text returns it as text.
type ChatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// Text returns the message's content as text.
func (m ChatMessage) Text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	json.Unmarshal(m.Content, &parts)
	for _, p := range parts {
		s += p.Text
	}
	return s
}

// Reply scripts the answer to one request, for the OpenAI double and the
// Anthropic one (see Anthropic for how its fields read there).
type Reply struct {
	// Deltas are the content pieces, one chunk each.
	Deltas []string
	// Reasoning pieces are sent first, as reasoning_content deltas.
	Reasoning []string
	// ToolCalls are sent after the content, their arguments split into
	// ArgChunks pieces over as many chunks.
	ToolCalls []ToolCall
	// Usage, if set, is sent in a final chunk when the client asked for it.
	Usage *Usage
	// FinishReason defaults to "stop", or "tool_calls" with tool calls.
	FinishReason string
	// Hold, if set, is waited on after the first chunk that carries a
	// delta: the client has that much while the double holds the rest.
	Hold <-chan struct{}
	// Status, if set, answers with this HTTP status and an error body
	// carrying ErrorMessage and ErrorType, instead of a completion.
	Status       int
	ErrorMessage string
	// ErrorType is the type of the error body or of the StreamError;
	// default "invalid_request_error" (OpenAI), or the type the
	// Anthropic API gives the status ("overloaded_error" mid-stream).
	ErrorType string
	// StreamError, if set, is sent as an error event after the deltas
	// (the way OpenAI reports a failure mid-stream) and ends the stream.
	StreamError string
	// Truncate ends the stream after the deltas with no finish chunk and
	// no [DONE], as a dropped connection does.
	Truncate bool
}

// ToolCall is a scripted tool call.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string
	ArgChunks int // pieces the arguments are split into; default 3
}

// Usage is scripted token usage.
type Usage struct {
	PromptTokens, CompletionTokens int64
}

// NewOpenAI starts the double; reply scripts each answer. It is closed
// when the test ends.
func NewOpenAI(tb testing.TB, reply func(*ChatRequest) Reply) *OpenAI {
	tb.Helper()
	d := &OpenAI{reply: reply}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", d.serve)
	d.srv = httptest.NewServer(mux)
	d.URL = d.srv.URL + "/v1"
	tb.Cleanup(d.srv.Close)
	return d
}

// Requests returns the requests received so far.
func (d *OpenAI) Requests() []*ChatRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*ChatRequest(nil), d.requests...)
}

func (d *OpenAI) serve(w http.ResponseWriter, r *http.Request) {
	var req ChatRequest
	dec := json.NewDecoder(r.Body)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil || json.Unmarshal(raw, &req) != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON body")
		return
	}
	req.Raw = raw
	req.Authorization = r.Header.Get("Authorization")
	d.mu.Lock()
	d.requests = append(d.requests, &req)
	d.mu.Unlock()

	if msg := validateChat(&req); msg != "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}

	rep := d.reply(&req)
	if rep.Status != 0 {
		writeError(w, rep.Status, rep.ErrorType, rep.ErrorMessage)
		return
	}
	finish := rep.FinishReason
	if finish == "" {
		finish = "stop"
		if len(rep.ToolCalls) > 0 {
			finish = "tool_calls"
		}
	}
	if !req.Stream {
		d.complete(w, &req, rep, finish)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	held := rep.Hold == nil
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		fl.Flush()
	}
	sendDelta := func(delta map[string]any, finishReason any) {
		send(chunk(req.Model, []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finishReason}}))
		if !held {
			held = true
			select {
			case <-rep.Hold:
			case <-r.Context().Done():
			}
		}
	}
	// The first chunk carries the role, as OpenAI's do.
	send(chunk(req.Model, []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": "", "refusal": nil}, "logprobs": nil, "finish_reason": nil}}))
	for _, s := range rep.Reasoning {
		sendDelta(map[string]any{"reasoning_content": s}, nil)
	}
	for _, s := range rep.Deltas {
		sendDelta(map[string]any{"content": s}, nil)
	}
	for i, tc := range rep.ToolCalls {
		n := tc.ArgChunks
		if n <= 0 {
			n = 3
		}
		// The first delta names the call; the arguments follow in pieces.
		sendDelta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": tc.ID, "type": "function",
			"function": map[string]any{"name": tc.Name, "arguments": ""}}}}, nil)
		for _, piece := range split(tc.Arguments, n) {
			sendDelta(map[string]any{"tool_calls": []any{map[string]any{"index": i,
				"function": map[string]any{"arguments": piece}}}}, nil)
		}
	}
	if rep.StreamError != "" {
		typ := rep.ErrorType
		if typ == "" {
			typ = "server_error"
		}
		send(map[string]any{"error": map[string]any{"message": rep.StreamError, "type": typ, "param": nil, "code": nil}})
		return
	}
	if rep.Truncate {
		return
	}
	send(chunk(req.Model, []any{map[string]any{"index": 0, "delta": map[string]any{}, "logprobs": nil, "finish_reason": finish}}))
	if rep.Usage != nil && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		c := chunk(req.Model, []any{})
		c["usage"] = usage(rep.Usage)
		send(c)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

// complete answers a request without stream=true.
func (d *OpenAI) complete(w http.ResponseWriter, req *ChatRequest, rep Reply, finish string) {
	var text string
	for _, s := range rep.Deltas {
		text += s
	}
	msg := map[string]any{"role": "assistant", "content": text, "refusal": nil}
	if len(rep.ToolCalls) > 0 {
		var tcs []any
		for _, tc := range rep.ToolCalls {
			tcs = append(tcs, map[string]any{"id": tc.ID, "type": "function", "function": map[string]any{"name": tc.Name, "arguments": tc.Arguments}})
		}
		msg["tool_calls"] = tcs
	}
	body := map[string]any{
		"id": "chatcmpl-llmtest", "object": "chat.completion", "created": 1700000000, "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "logprobs": nil, "finish_reason": finish}},
	}
	if rep.Usage != nil {
		body["usage"] = usage(rep.Usage)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(body)
}

func chunk(model string, choices []any) map[string]any {
	return map[string]any{
		"id": "chatcmpl-llmtest", "object": "chat.completion.chunk", "created": 1700000000,
		"model": model, "system_fingerprint": "fp_llmtest", "choices": choices, "usage": nil,
	}
}

func usage(u *Usage) map[string]any {
	return map[string]any{
		"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens,
		"total_tokens":              u.PromptTokens + u.CompletionTokens,
		"prompt_tokens_details":     map[string]any{"cached_tokens": 0, "audio_tokens": 0},
		"completion_tokens_details": map[string]any{"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
	}
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	if typ == "" {
		typ = "invalid_request_error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": nil,
	}})
}

// validateChat returns why OpenAI would refuse req, or "": as the real
// API, the double wants each tool call of an assistant message answered
// by a tool message right after it, and each tool message to answer a
// call.
func validateChat(req *ChatRequest) string {
	pending := map[string]bool{} // calls of the last assistant message not yet answered
	for i, m := range req.Messages {
		if m.Role == "tool" {
			if !pending[m.ToolCallID] {
				return fmt.Sprintf("Invalid parameter: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (messages[%d])", i)
			}
			delete(pending, m.ToolCallID)
			continue
		}
		if len(pending) > 0 {
			return "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'."
		}
		if m.Role == "assistant" && len(m.ToolCalls) > 0 {
			var tcs []struct {
				ID string `json:"id"`
			}
			json.Unmarshal(m.ToolCalls, &tcs)
			for _, tc := range tcs {
				pending[tc.ID] = true
			}
		}
	}
	if len(pending) > 0 {
		return "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'."
	}
	return ""
}

// split cuts s into n pieces of nearly equal length (bytes; fine for the
// ASCII JSON of tests).
func split(s string, n int) []string {
	if n > len(s) {
		n = max(len(s), 1)
	}
	var out []string
	size := (len(s) + n - 1) / n
	for len(s) > size {
		out = append(out, s[:size])
		s = s[size:]
	}
	return append(out, s)
}
