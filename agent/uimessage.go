package agent

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
)

// The AI SDK's shapes, as the Agents SDK's chat protocol carries them: a
// stored Message as a UIMessage, a client's UIMessage as the text to send,
// and a reply's stream events as UI message stream chunks.

// UIMessage is a message in the AI SDK's UIMessage shape (ai v5/v6):
// parts are {type:"text",text,state}, {type:"reasoning",text,state},
// {type:"step-start"} before each model round of a reply, and
// {type:"tool-{name}",toolCallId,state,input,output|errorText,approval}
// for each tool call, its state one of input-available,
// approval-requested, approval-responded, output-available, output-error
// and output-denied. Metadata carries cairn's own fields: status,
// createdAt, model, usage, error.
type UIMessage struct {
	ID       string           `json:"id"`
	Role     string           `json:"role"`
	Parts    []map[string]any `json:"parts"`
	Metadata map[string]any   `json:"metadata,omitempty"`
}

// ToUIMessage returns m in the AI SDK's UIMessage shape.
func ToUIMessage(m *Message) UIMessage {
	out := UIMessage{ID: m.ID, Role: string(m.Role), Parts: []map[string]any{}, Metadata: map[string]any{
		"status": m.Status, "createdAt": m.CreatedAt.UTC().Format(time.RFC3339Nano),
	}}
	if m.Model != "" {
		out.Metadata["model"] = m.Model
	}
	if m.Usage != nil {
		out.Metadata["usage"] = m.Usage
	}
	if m.Error != "" {
		out.Metadata["error"] = m.Error
	}
	if m.Role != Assistant {
		for _, p := range m.Parts {
			if p.Type == PartText || p.Type == PartReasoning {
				out.Parts = append(out.Parts, map[string]any{"type": p.Type, "text": p.Text})
			}
		}
		return out
	}
	results := make(map[string]Part)
	for _, p := range m.Parts {
		if p.Type == PartToolResult {
			results[p.ToolCallID] = p
		}
	}
	state := "done"
	if m.Status == Streaming {
		state = "streaming"
	}
	for _, step := range Steps(m.Parts) {
		out.Parts = append(out.Parts, map[string]any{"type": "step-start"})
		for _, p := range step.Parts {
			switch p.Type {
			case PartText, PartReasoning:
				out.Parts = append(out.Parts, map[string]any{"type": p.Type, "text": p.Text, "state": state})
			case PartToolCall:
				r, ok := results[p.ToolCallID]
				out.Parts = append(out.Parts, toolUIPart(p, r, ok))
			}
		}
	}
	return out
}

// toolUIPart is the UI part of a tool call and its result, if it has one.
func toolUIPart(call, result Part, done bool) map[string]any {
	input := call.Input
	if len(input) == 0 {
		input = json.RawMessage("{}")
	}
	part := map[string]any{"type": "tool-" + call.ToolName, "toolCallId": call.ToolCallID, "input": input}
	ap := call.Approval
	if ap != nil {
		a := map[string]any{"id": ap.ID}
		if ap.Approved != nil {
			a["approved"] = *ap.Approved
		}
		if ap.Reason != "" {
			a["reason"] = ap.Reason
		}
		part["approval"] = a
	}
	switch {
	case done && ap != nil && ap.Approved != nil && !*ap.Approved:
		part["state"] = "output-denied"
	case done && result.IsError:
		part["state"] = "output-error"
		part["errorText"] = outputText(result.Output)
	case done:
		part["state"] = "output-available"
		part["output"] = result.Output
	case ap.Pending():
		part["state"] = "approval-requested"
	case ap != nil:
		part["state"] = "approval-responded"
	default:
		part["state"] = "input-available"
	}
	return part
}

// outputText returns a tool output as text: a JSON string's value, any
// other JSON as it is.
func outputText(out json.RawMessage) string {
	var s string
	if json.Unmarshal(out, &s) == nil {
		return s
	}
	return string(out)
}

// uiRequest is the body of a cf_agent_use_chat_request, as the AI SDK's
// transport sends it.
type uiRequest struct {
	Messages []struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		Parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"parts"`
	} `json:"messages"`
	Trigger string `json:"trigger"`
}

// lastUserText returns the text of the last user message of a chat
// request's body, and the client's IDs of the trailing user messages (the
// request's origin, which terminal frames echo). Only that message is
// read: the history is the session's.
func lastUserText(body string, maxText int) (string, []string, error) {
	var in uiRequest
	if err := json.Unmarshal([]byte(body), &in); err != nil {
		return "", nil, cairn.Errorf(cairn.Invalid, "chat request body is not JSON: %v", err)
	}
	if in.Trigger != "" && in.Trigger != "submit-message" {
		return "", nil, cairn.Errorf(cairn.Invalid, "trigger %q is not supported: send the message again instead", truncate(in.Trigger, 50))
	}
	var ids []string
	for i := len(in.Messages) - 1; i >= 0 && in.Messages[i].Role == "user"; i-- {
		if in.Messages[i].ID != "" {
			ids = append([]string{in.Messages[i].ID}, ids...)
		}
	}
	for i := len(in.Messages) - 1; i >= 0; i-- {
		m := in.Messages[i]
		if m.Role != "user" {
			continue
		}
		var b strings.Builder
		for _, p := range m.Parts {
			switch p.Type {
			case "text":
				b.WriteString(p.Text)
			case "step-start":
			default:
				return "", nil, cairn.Errorf(cairn.Invalid, "message part type %q is not supported; only text", truncate(p.Type, 50))
			}
		}
		text := b.String()
		if strings.TrimSpace(text) == "" {
			return "", nil, cairn.Errorf(cairn.Invalid, "the last user message has no text")
		}
		if len(text) > maxText {
			return "", nil, cairn.Errorf(cairn.TooLarge, "text is %d bytes; the limit is %d", len(text), maxText)
		}
		return text, ids, nil
	}
	return "", nil, cairn.Errorf(cairn.Invalid, "the request holds no user message")
}

// uiConverter turns the events of a reply's stream (message-start,
// step-start, text-delta, ...) into AI SDK UI message stream chunks. One
// converter follows one stream, from its first event on.
type uiConverter struct {
	msgID        string
	continuation bool // the stream continues a reply the client has: no messageId on start
	open         string
	openID       string
	parts        int
	started      map[string]bool   // tool calls whose tool-input-start went out
	byIndex      map[int]string    // tool call ids of the round's deltas, by index
	names        map[string]string // tool names by call id
}

func newUIConverter(msgID string, continuation bool) *uiConverter {
	return &uiConverter{msgID: msgID, continuation: continuation,
		started: map[string]bool{}, byIndex: map[int]string{}, names: map[string]string{}}
}

// close ends the open text or reasoning part.
func (c *uiConverter) close(out []map[string]any) []map[string]any {
	if c.open == "" {
		return out
	}
	out = append(out, map[string]any{"type": c.open + "-end", "id": c.openID})
	c.open, c.openID = "", ""
	return out
}

// text appends a delta to a part of kind typ ("text" or "reasoning").
func (c *uiConverter) text(out []map[string]any, typ string, delta any) []map[string]any {
	if c.open != typ {
		out = c.close(out)
		c.parts++
		c.open, c.openID = typ, c.msgID+"-"+strconv.Itoa(c.parts)
		out = append(out, map[string]any{"type": typ + "-start", "id": c.openID})
	}
	return append(out, map[string]any{"type": typ + "-delta", "id": c.openID, "delta": delta})
}

// chunks returns the chunks of one event; msg, for message-end, is the
// stored reply.
func (c *uiConverter) chunks(ev *streamEvent) []map[string]any {
	var out []map[string]any
	d := ev.data
	str := func(k string) string { s, _ := d[k].(string); return s }
	switch ev.name {
	case "message-start":
		start := map[string]any{"type": "start"}
		if !c.continuation {
			start["messageId"] = c.msgID
			start["messageMetadata"] = map[string]any{"model": d["model"], "status": Streaming}
		}
		out = append(out, start)
	case "step-start":
		out = c.close(out)
		clear(c.byIndex)
		out = append(out, map[string]any{"type": "start-step"})
	case "text-delta":
		out = c.text(out, "text", d["delta"])
	case "reasoning-delta":
		out = c.text(out, "reasoning", d["delta"])
	case "tool-call-delta":
		idx, _ := d["index"].(int)
		id := str("toolCallId")
		if id == "" {
			id = c.byIndex[idx]
		}
		if id == "" {
			return nil
		}
		c.byIndex[idx] = id
		if name := str("toolName"); name != "" {
			c.names[id] = name
		}
		out = c.close(out)
		if !c.started[id] {
			if c.names[id] == "" {
				return out
			}
			c.started[id] = true
			out = append(out, map[string]any{"type": "tool-input-start", "toolCallId": id, "toolName": c.names[id]})
		}
		if delta := str("inputDelta"); delta != "" {
			out = append(out, map[string]any{"type": "tool-input-delta", "toolCallId": id, "inputTextDelta": delta})
		}
	case "tool-call":
		id, name := str("toolCallId"), str("toolName")
		c.names[id] = name
		out = c.close(out)
		if !c.started[id] {
			c.started[id] = true
			out = append(out, map[string]any{"type": "tool-input-start", "toolCallId": id, "toolName": name})
		}
		out = append(out, map[string]any{"type": "tool-input-available", "toolCallId": id, "toolName": name, "input": d["input"]})
	case "tool-approval-request":
		out = c.close(out)
		out = append(out, map[string]any{"type": "tool-approval-request", "toolCallId": str("toolCallId"), "approvalId": str("approvalId")})
	case "tool-result":
		out = c.close(out)
		id := str("toolCallId")
		isErr, _ := d["isError"].(bool)
		denied, _ := d["denied"].(bool)
		raw, _ := d["output"].(json.RawMessage)
		switch {
		case denied:
			out = append(out, map[string]any{"type": "tool-output-denied", "toolCallId": id})
		case isErr:
			out = append(out, map[string]any{"type": "tool-output-error", "toolCallId": id, "errorText": outputText(raw)})
		default:
			if raw == nil {
				raw = json.RawMessage("null")
			}
			out = append(out, map[string]any{"type": "tool-output-available", "toolCallId": id, "output": raw})
		}
	case "step-end":
		out = c.close(out)
		out = append(out, map[string]any{"type": "finish-step"})
	case "message-end":
		out = c.close(out)
		m, _ := d["message"].(*Message)
		if m == nil || (m.Status != Complete && m.Status != AwaitingApproval) {
			return out // the terminal frames say how it ended
		}
		meta := map[string]any{"status": m.Status, "model": m.Model}
		if m.Usage != nil {
			meta["usage"] = m.Usage
		}
		reason := "stop"
		if m.Status == AwaitingApproval {
			reason = "tool-calls"
		}
		out = append(out, map[string]any{"type": "finish", "finishReason": reason, "messageMetadata": meta})
	}
	return out
}
