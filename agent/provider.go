package agent

import (
	"context"
	"iter"
	"strings"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Provider is a model behind one small interface: a request in, a stream
// of events out. Implementations: Echo (offline, for development) and the
// OpenAI-compatible provider of package agent/openai.
type Provider interface {
	// Name names the provider kind ("echo", "openai") for listings.
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
	Model    string
	System   string    // the system prompt, if any
	Messages []Message // the conversation, oldest first; complete messages only
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
