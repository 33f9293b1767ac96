package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/cairn-dev/cairn"
)

// Role is who wrote a message.
type Role string

// The roles of messages.
const (
	User      Role = "user"
	Assistant Role = "assistant"
	System    Role = "system"
	ToolRole  Role = "tool"
)

// Status is where a message is in its life.
type Status string

// The statuses of a message. A user message is complete, or pending while
// it waits for an earlier generation of its session (it is not sent to the
// model until then), or cancelled if the server stopped before it was sent.
// An assistant message is streaming while its generation runs, then
// complete, error (the provider failed) or cancelled (the server stopped
// it, or a client did with POST /cancel). Only complete messages are sent
// to the model.
const (
	Complete  Status = "complete"
	Pending   Status = "pending"
	Streaming Status = "streaming"
	Failed    Status = "error"
	Cancelled Status = "cancelled"
	// AwaitingApproval is an assistant message whose tool loop is parked
	// until a person approves or denies one of its tool calls (see
	// Tool.NeedsApproval); it goes on streaming once they all are.
	AwaitingApproval Status = "awaiting-approval"
)

// The types of message parts.
const (
	PartText       = "text"
	PartReasoning  = "reasoning"
	PartToolCall   = "tool-call"
	PartToolResult = "tool-result"
)

// Part is one piece of a message, in the shape of the AI SDK's UIMessage
// parts: {type:"text",text}, {type:"reasoning",text},
// {type:"tool-call",toolCallId,toolName,input} and
// {type:"tool-result",toolCallId,toolName,output,isError}. Input and
// Output are JSON values; tool-call input a model produced that is not
// valid JSON is kept as a JSON string.
//
// An assistant message that used tools holds every round of its tool loop
// in order: the round's text, reasoning and tool calls, then one result
// per call, then the next round's parts (see Steps).
type Part struct {
	Type       string          `json:"type"`
	Text       string          `json:"text,omitempty"`
	ToolCallID string          `json:"toolCallId,omitempty"`
	ToolName   string          `json:"toolName,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
	IsError    bool            `json:"isError,omitempty"` // a tool result that is an error
	// Approval is set on the tool-call part of a call that needs a
	// person's approval: requested, then approved or denied.
	Approval *Approval `json:"approval,omitempty"`
}

// Approval is the approval of one tool call by a person. It is requested
// when the model calls a tool that needs it (Tool.NeedsApproval), and
// decided by POST /approvals/{toolCallId}, the WebSocket message
// cf_agent_tool_approval, or the agent's ApprovalTimeout (denied).
type Approval struct {
	ID       string    `json:"id"`                 // the tool call's ID
	Approved *bool     `json:"approved,omitempty"` // nil while it awaits a decision
	Reason   string    `json:"reason,omitempty"`   // why, if the decider said, or the deadline passed
	Deadline time.Time `json:"deadline"`           // when it is denied if nobody decides
}

// Pending reports whether the approval awaits a decision.
func (a *Approval) Pending() bool { return a != nil && a.Approved == nil }

// Step is one model round of an assistant message: what the model said
// (text, reasoning, tool calls) and the results of its tool calls.
type Step struct {
	Parts   []Part // text, reasoning and tool-call parts, in order
	Results []Part // tool-result parts, in order
}

// Steps splits an assistant message's parts into its model rounds: a
// round ends after the tool results that follow its tool calls. Providers
// render each step as one assistant message followed by its tool results.
func Steps(parts []Part) []Step {
	var steps []Step
	var cur Step
	for _, p := range parts {
		if p.Type == PartToolResult {
			cur.Results = append(cur.Results, p)
			continue
		}
		if len(cur.Results) > 0 {
			steps = append(steps, cur)
			cur = Step{}
		}
		cur.Parts = append(cur.Parts, p)
	}
	if len(cur.Parts) > 0 || len(cur.Results) > 0 {
		steps = append(steps, cur)
	}
	return steps
}

// Usage counts the tokens of one model call, as the provider reported them
// (the echo provider counts words).
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// Message is one message of a session, stored as one row (chunked over
// several when large).
type Message struct {
	ID        string    `json:"id"`
	Role      Role      `json:"role"`
	Parts     []Part    `json:"parts"`
	CreatedAt time.Time `json:"created_at"`
	Status    Status    `json:"status"`
	Usage     *Usage    `json:"usage,omitempty"`
	Model     string    `json:"model,omitempty"`
	Error     string    `json:"error,omitempty"` // why the message failed or was cancelled
	// Rounds is how many model rounds an assistant message took: one,
	// plus one per round of tool calls (see Steps). Zero for other
	// messages and for replies stored before rounds were counted.
	Rounds int `json:"rounds,omitempty"`
}

// Text returns the concatenated text parts of m.
func (m *Message) Text() string {
	var s string
	for _, p := range m.Parts {
		if p.Type == PartText {
			s += p.Text
		}
	}
	return s
}

// newID returns a new message ID: "msg_" and 20 random hex digits.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}

// validMessageID reports whether s has the form newID produces, so that a
// cursor from a client reaches SQL only if it could be a message ID.
func validMessageID(s string) bool {
	if len(s) != 24 || s[:4] != "msg_" {
		return false
	}
	_, err := hex.DecodeString(s[4:])
	return err == nil
}

// maxErrorBytes bounds the error text stored with a message.
const maxErrorBytes = 4 << 10

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// errorText renders a generation error for storage and clients: the
// message of a *cairn.Error (providers return those, with the provider's own
// words), a generic text for anything else.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return truncate(cairn.ErrorMessage(err), maxErrorBytes)
}
