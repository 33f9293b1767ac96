package llmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Anthropic is an Anthropic Messages API server: POST /v1/messages
// answers with the exact streaming wire format (named Server-Sent Events:
// message_start, content_block_start, content_block_delta with
// thinking_delta, signature_delta, text_delta and input_json_delta split
// over several events, content_block_stop, message_delta with the
// stop_reason and usage, message_stop, and ping events in between), or an
// error body ({"type":"error","error":{"type","message"}}) with its
// status. It answers streaming requests only.
//
// Like the real API it refuses, with 400 invalid_request_error, a request
// without max_tokens or model, an unknown role, an empty text block, a
// tool_use input that is not an object, a tool_use not answered by a
// tool_result in the next message, and a tool_result that answers no
// tool_use of the message before it; so a provider that renders history
// wrongly fails its tests.
//
// The Reply script reads as for OpenAI, with the Anthropic words:
// Reasoning is a thinking block, Deltas one text block, each ToolCall a
// tool_use block, Usage input_tokens (in message_start) and output_tokens
// (in message_delta), FinishReason the stop_reason (default "end_turn",
// or "tool_use" with tool calls), StreamError an "event: error" of type
// overloaded_error, ErrorType the error body's type.
type Anthropic struct {
	// URL is the base URL to configure a client with (no /v1: the SDK
	// adds it).
	URL string

	srv   *httptest.Server
	reply func(*MessagesRequest) Reply

	mu       sync.Mutex
	requests []*MessagesRequest
}

// MessagesRequest is a request the Anthropic double received.
type MessagesRequest struct {
	Model     string             `json:"model"`
	MaxTokens int64              `json:"max_tokens"`
	Stream    bool               `json:"stream"`
	System    json.RawMessage    `json:"system,omitempty"` // a string or text blocks
	Messages  []AnthropicMessage `json:"messages"`
	Tools     []AnthropicTool    `json:"tools,omitempty"`
	Raw       json.RawMessage    `json:"-"`
	// The credentials: the SDK sends an API key either way.
	APIKey        string `json:"-"` // the X-Api-Key header
	Authorization string `json:"-"`
	Version       string `json:"-"` // the anthropic-version header
}

// SystemText returns the system prompt as text, its blocks joined by
// "\n".
func (r *MessagesRequest) SystemText() string {
	var s string
	if json.Unmarshal(r.System, &s) == nil {
		return s
	}
	var blocks []ContentBlock
	json.Unmarshal(r.System, &blocks)
	var texts []string
	for _, b := range blocks {
		texts = append(texts, b.Text)
	}
	return strings.Join(texts, "\n")
}

// AnthropicMessage is a message of a request. Content is a string or an
// array of content blocks, kept raw; Blocks returns it as blocks.
type AnthropicMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// Blocks returns the message's content as blocks (a string content is
// one text block).
func (m AnthropicMessage) Blocks() []ContentBlock {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return []ContentBlock{{Type: "text", Text: s}}
	}
	var blocks []ContentBlock
	json.Unmarshal(m.Content, &blocks)
	return blocks
}

// Text returns the message's text blocks, concatenated.
func (m AnthropicMessage) Text() string {
	var s string
	for _, b := range m.Blocks() {
		if b.Type == "text" {
			s += b.Text
		}
	}
	return s
}

// ContentBlock is a content block of a request message: text, thinking,
// tool_use or tool_result.
type ContentBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Thinking  string          `json:"thinking,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"` // of a tool_result: a string or blocks
	IsError   bool            `json:"is_error,omitempty"`
}

// ContentText returns a tool_result's content as text.
func (b ContentBlock) ContentText() string {
	return AnthropicMessage{Content: b.Content}.Text()
}

// AnthropicTool is a tool of a request.
type AnthropicTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// NewAnthropic starts the Anthropic double; reply scripts each answer. It
// is closed when the test ends.
func NewAnthropic(tb testing.TB, reply func(*MessagesRequest) Reply) *Anthropic {
	tb.Helper()
	d := &Anthropic{reply: reply}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", d.serve)
	d.srv = httptest.NewServer(mux)
	d.URL = d.srv.URL
	tb.Cleanup(d.srv.Close)
	return d
}

// Requests returns the requests received so far.
func (d *Anthropic) Requests() []*MessagesRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*MessagesRequest(nil), d.requests...)
}

func (d *Anthropic) serve(w http.ResponseWriter, r *http.Request) {
	var req MessagesRequest
	var raw json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil || json.Unmarshal(raw, &req) != nil {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON body")
		return
	}
	req.Raw = raw
	req.APIKey = r.Header.Get("X-Api-Key")
	req.Authorization = r.Header.Get("Authorization")
	req.Version = r.Header.Get("Anthropic-Version")
	d.mu.Lock()
	d.requests = append(d.requests, &req)
	d.mu.Unlock()
	if msg := validate(&req); msg != "" {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}

	rep := d.reply(&req)
	if rep.Status != 0 {
		writeAnthropicError(w, rep.Status, rep.ErrorType, rep.ErrorMessage)
		return
	}
	stop := rep.FinishReason
	if stop == "" {
		stop = "end_turn"
		if len(rep.ToolCalls) > 0 {
			stop = "tool_use"
		}
	}
	var in, out int64
	if rep.Usage != nil {
		in, out = rep.Usage.PromptTokens, rep.Usage.CompletionTokens
	}
	if !req.Stream {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "llmtest: the double answers streaming requests only")
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Request-Id", "req_llmtest")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	send := func(event string, v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		fl.Flush()
	}
	held := rep.Hold == nil
	sendDelta := func(index int, delta map[string]any) {
		send("content_block_delta", map[string]any{"type": "content_block_delta", "index": index, "delta": delta})
		if !held {
			held = true
			select {
			case <-rep.Hold:
			case <-r.Context().Done():
			}
		}
	}

	send("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_llmtest", "type": "message", "role": "assistant", "model": req.Model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": anthropicUsage(in, min(out, 1)),
	}})
	send("ping", map[string]any{"type": "ping"})
	index, open := 0, -1 // the next block's index, the open block's
	stopBlock := func() {
		if open >= 0 {
			send("content_block_stop", map[string]any{"type": "content_block_stop", "index": open})
			open = -1
		}
	}
	startBlock := func(block map[string]any) {
		stopBlock()
		send("content_block_start", map[string]any{"type": "content_block_start", "index": index, "content_block": block})
		open = index
		index++
	}
	if len(rep.Reasoning) > 0 {
		startBlock(map[string]any{"type": "thinking", "thinking": "", "signature": ""})
		for _, s := range rep.Reasoning {
			sendDelta(open, map[string]any{"type": "thinking_delta", "thinking": s})
		}
		sendDelta(open, map[string]any{"type": "signature_delta", "signature": "c2lnbmF0dXJl"})
	}
	if len(rep.Deltas) > 0 {
		startBlock(map[string]any{"type": "text", "text": ""})
		for i, s := range rep.Deltas {
			sendDelta(open, map[string]any{"type": "text_delta", "text": s})
			if i == 0 {
				send("ping", map[string]any{"type": "ping"})
			}
		}
	}
	for _, tc := range rep.ToolCalls {
		n := tc.ArgChunks
		if n <= 0 {
			n = 3
		}
		startBlock(map[string]any{"type": "tool_use", "id": tc.ID, "name": tc.Name, "input": map[string]any{}})
		// The API opens every tool input with an empty fragment.
		sendDelta(open, map[string]any{"type": "input_json_delta", "partial_json": ""})
		for _, piece := range split(tc.Arguments, n) {
			sendDelta(open, map[string]any{"type": "input_json_delta", "partial_json": piece})
		}
	}
	if rep.StreamError != "" {
		typ := rep.ErrorType
		if typ == "" {
			typ = "overloaded_error"
		}
		send("error", map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": rep.StreamError}, "request_id": "req_llmtest"})
		return
	}
	if rep.Truncate {
		return // with the last block open
	}
	stopBlock()
	send("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": out}})
	send("message_stop", map[string]any{"type": "message_stop"})
}

// validate returns why the API would refuse req, or "".
func validate(req *MessagesRequest) string {
	if req.Model == "" {
		return "model: Field required"
	}
	if req.MaxTokens <= 0 {
		return "max_tokens: Field required"
	}
	if len(req.Messages) == 0 {
		return "messages: at least one message is required"
	}
	for i, m := range req.Messages {
		if m.Role != "user" && m.Role != "assistant" && m.Role != "system" {
			return fmt.Sprintf("messages.%d.role: Input should be 'user', 'assistant' or 'system'", i)
		}
		var uses []string
		for _, b := range m.Blocks() {
			if b.Type == "text" && b.Text == "" {
				return fmt.Sprintf("messages.%d: text content blocks must be non-empty", i)
			}
			if b.Type == "tool_use" {
				if m.Role != "assistant" {
					return fmt.Sprintf("messages.%d: tool_use blocks are only allowed in assistant messages", i)
				}
				var obj map[string]any
				if json.Unmarshal(b.Input, &obj) != nil || obj == nil {
					return fmt.Sprintf("messages.%d: tool_use.input: Input should be a valid dictionary", i)
				}
				uses = append(uses, b.ID)
			}
			if b.Type == "tool_result" {
				if m.Role != "user" {
					return fmt.Sprintf("messages.%d: tool_result blocks are only allowed in user messages", i)
				}
				if i == 0 || !hasToolUse(req.Messages[i-1], b.ToolUseID) {
					return fmt.Sprintf("messages.%d: unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", i, b.ToolUseID)
				}
			}
		}
		for _, id := range uses {
			if i+1 >= len(req.Messages) || !hasToolResult(req.Messages[i+1], id) {
				return fmt.Sprintf("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i, id)
			}
		}
	}
	return ""
}

func hasToolUse(m AnthropicMessage, id string) bool {
	for _, b := range m.Blocks() {
		if b.Type == "tool_use" && b.ID == id {
			return true
		}
	}
	return false
}

func hasToolResult(m AnthropicMessage, id string) bool {
	for _, b := range m.Blocks() {
		if b.Type == "tool_result" && b.ToolUseID == id {
			return true
		}
	}
	return false
}

func anthropicUsage(in, out int64) map[string]any {
	return map[string]any{
		"input_tokens": in, "output_tokens": out,
		"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard",
	}
}

// writeAnthropicError writes an Anthropic error body; typ defaults from
// the status, as the API's.
func writeAnthropicError(w http.ResponseWriter, status int, typ, msg string) {
	if typ == "" {
		switch status {
		case http.StatusBadRequest:
			typ = "invalid_request_error"
		case http.StatusUnauthorized:
			typ = "authentication_error"
		case http.StatusForbidden:
			typ = "permission_error"
		case http.StatusNotFound:
			typ = "not_found_error"
		case http.StatusRequestEntityTooLarge:
			typ = "request_too_large"
		case http.StatusTooManyRequests:
			typ = "rate_limit_error"
		case 529:
			typ = "overloaded_error"
		default:
			typ = "api_error"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_llmtest")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}, "request_id": "req_llmtest"})
}
