package llmtest

import (
	"encoding/json"
	"strings"

	"github.com/cairn-dev/cairn/agent"
)

// History builds a conversation from fuzz input, one byte an element: a
// user message, or a part of the assistant message in progress (text,
// reasoning, a tool call, a result of one of its calls or of none), or a
// tool message with a result; a last user message ends it. The
// providers' FuzzHistory tests send it to the doubles, which refuse what
// the real APIs refuse.
func History(data []byte) []agent.Message {
	var msgs []agent.Message
	var cur *agent.Message
	calls := 0
	flush := func() {
		if cur != nil {
			msgs = append(msgs, *cur)
			cur = nil
		}
	}
	part := func(p agent.Part) {
		if cur == nil {
			cur = &agent.Message{Role: agent.Assistant, Status: agent.Complete}
		}
		cur.Parts = append(cur.Parts, p)
	}
	for _, b := range data {
		text := "t"
		if b >= 240 {
			text = ""
		}
		id := func() string { return "call_" + strings.Repeat("x", int(b/7)%(calls+2)) }
		switch b % 7 {
		case 0:
			flush()
			msgs = append(msgs, userMessage(text))
		case 1:
			part(agent.Part{Type: agent.PartText, Text: text})
		case 2:
			part(agent.Part{Type: agent.PartReasoning, Text: text})
		case 3:
			calls++
			input := json.RawMessage(`{"a":1}`)
			if b >= 200 {
				input = json.RawMessage(`"{\"a\":"`)
			}
			part(agent.Part{Type: agent.PartToolCall, ToolCallID: "call_" + strings.Repeat("x", calls), ToolName: "f", Input: input})
		case 4, 5:
			part(agent.Part{Type: agent.PartToolResult, ToolCallID: id(), Output: json.RawMessage(`"out"`), IsError: b%2 == 0})
		case 6:
			flush()
			msgs = append(msgs, agent.Message{Role: agent.ToolRole, Parts: []agent.Part{{Type: agent.PartToolResult, ToolCallID: id(), Output: json.RawMessage(`1`)}}})
		}
	}
	flush()
	return append(msgs, userMessage("end"))
}

func userMessage(text string) agent.Message {
	return agent.Message{Role: agent.User, Parts: []agent.Part{{Type: agent.PartText, Text: text}}, Status: agent.Complete}
}
