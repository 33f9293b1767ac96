package agent

import (
	"context"
	"encoding/json"
	"iter"
	"strings"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Provider is a model behind one small interface: a request in, a stream
// of events out. Implementations: Echo (offline, for development), the
// OpenAI-compatible provider of package agent/openai and the Anthropic
// Messages provider of package agent/anthropic.
type Provider interface {
	// Name names the provider kind ("echo", "openai", "anthropic") for
	// listings.
	Name() string

	// Stream calls the model and yields its output as it arrives. The
	// sequence ends with exactly one EventDone or EventError; a consumer
	// that stops early (breaks) makes the provider abandon the call and
	// release its resources before Stream's iterator returns. The error of
	// an EventError is a *cairn.Error whose message is safe to show to the
	// session's users (Unavailable for a failed or refused call, Timeout or
	// Unavailable when ctx ended). Stream is called from one goroutine at a
	// time per call, but one Provider serves many sessions at once: it must
	// be safe for concurrent use.
	Stream(ctx context.Context, req *Request) iter.Seq[Event]
}

// Request is what a provider sends the model.
type Request struct {
	Model  string
	System string // the system prompt, if any
	// Messages is the conversation, oldest first: complete messages,
	// and, from the second round of a tool loop on, last, the reply in
	// progress (an assistant message whose parts hold the earlier
	// rounds; render it with Steps).
	Messages []Message
	Tools    []ToolSpec // the tools the model may call, if any
}

// ToolSpec is a tool as the model sees it.
type ToolSpec struct {
	Name        string
	Description string
	// InputSchema is the JSON Schema of the tool's input, an object
	// schema ({"type":"object","properties":{...}}).
	InputSchema json.RawMessage
}

// Tool is a function the model may call: a Go function registered by a
// Go user (Agent.Tools), a built-in offered by configuration, or a tool
// of an MCP server (through a Toolset).
type Tool struct {
	// Name is how the model calls it: 1-64 ASCII letters, digits, '_'
	// and '-' (the common subset of what providers accept).
	Name        string
	Description string
	// InputSchema is the JSON Schema of the input object; nil means
	// {"type":"object"}.
	InputSchema json.RawMessage
	// NeedsApproval parks a call of the tool until a person approves or
	// denies it.
	NeedsApproval bool
	// Call runs the tool with the model's input (a JSON object) and
	// returns its output as JSON. An error is not fatal to the turn: its
	// message goes back to the model as the tool's output, marked as an
	// error. Call runs outside the session's turn (it must not use the
	// session's State) and must honour ctx.
	Call func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

// Spec returns the tool as the model sees it.
func (t *Tool) Spec() ToolSpec {
	schema := t.InputSchema
	if len(schema) == 0 {
		schema = json.RawMessage(`{"type":"object"}`)
	}
	return ToolSpec{Name: t.Name, Description: t.Description, InputSchema: schema}
}

// Toolset is a source of tools whose list can change, such as an MCP
// server. Tools is called at the start of each model round; an error
// leaves the set's tools out of that round (and is logged), it does not
// fail the turn.
type Toolset interface {
	// Name names the set in logs and errors.
	Name() string
	Tools(ctx context.Context) ([]Tool, error)
}

// EventType says what an Event carries.
type EventType int

// The events of a provider stream.
const (
	// EventText carries Text, a piece of the answer.
	EventText EventType = iota + 1
	// EventReasoning carries Text, a piece of the model's reasoning.
	EventReasoning
	// EventToolCallDelta carries ToolCall with Index and whatever part of
	// ID, Name and Input (a fragment of the arguments' JSON text) arrived.
	EventToolCallDelta
	// EventToolCall carries a complete ToolCall (ID, Name, whole Input).
	EventToolCall
	// EventUsage carries Usage; it may come more than once, the last wins.
	EventUsage
	// EventDone ends a successful stream; FinishReason says why the model
	// stopped ("stop", "length", "tool_calls", ...).
	EventDone
	// EventError ends a failed stream with Err.
	EventError
)

// Event is one item of a provider stream.
type Event struct {
	Type         EventType
	Text         string
	ToolCall     *ToolCall
	Usage        *Usage
	FinishReason string
	Err          error
}

// ToolCall is a call of a tool by the model, or a piece of one.
type ToolCall struct {
	Index int    // position among the message's tool calls
	ID    string // the provider's tool call id
	Name  string
	Input string // arguments as JSON text (a fragment in a delta)
}

// Echo is the offline provider: it answers every message by repeating the
// last user message, prefixed with "echo: ", so that nobody mistakes it for
// a model. Usage counts words. It is the default when no model is
// configured.
type Echo struct{}

// Name returns "echo".
func (Echo) Name() string { return "echo" }

// echoPiece bounds one text event of the echo provider.
const echoPiece = 64 << 10

// Stream yields the echo of the last user message, a word at a time for
// short messages and in 64 KiB pieces for long ones.
func (Echo) Stream(ctx context.Context, req *Request) iter.Seq[Event] {
	return func(yield func(Event) bool) {
		var last string
		var inWords int64
		for _, m := range req.Messages {
			t := m.Text()
			inWords += int64(len(strings.Fields(t)))
			if m.Role == User {
				last = t
			}
		}
		inWords += int64(len(strings.Fields(req.System)))
		var pieces []string
		if len(last) <= 4096 {
			pieces = strings.SplitAfter(last, " ")
		} else {
			for s := last; len(s) > 0; {
				n := min(len(s), echoPiece)
				for n < len(s) && !utf8.RuneStart(s[n]) {
					n--
				}
				pieces = append(pieces, s[:n])
				s = s[n:]
			}
		}
		if !yield(Event{Type: EventText, Text: "echo: "}) {
			return
		}
		for _, p := range pieces {
			if err := ctx.Err(); err != nil {
				yield(Event{Type: EventError, Err: cairn.Errorf(cairn.ErrorCode(err), "echo: %v", err)})
				return
			}
			if p != "" && !yield(Event{Type: EventText, Text: p}) {
				return
			}
		}
		out := 1 + int64(len(strings.Fields(last)))
		if !yield(Event{Type: EventUsage, Usage: &Usage{InputTokens: inWords, OutputTokens: out}}) {
			return
		}
		yield(Event{Type: EventDone, FinishReason: "stop"})
	}
}
