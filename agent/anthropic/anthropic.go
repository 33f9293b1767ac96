// Package anthropic is the agent layer's provider for the Anthropic
// Messages API (Claude). It uses the official SDK
// (github.com/anthropics/anthropic-sdk-go/v2) for the wire format and
// streaming.
package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"strings"

	ant "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/packages/param"
	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
)

// DefaultMaxTokens is the max_tokens of a call when Config.MaxTokens is
// not set: the API requires one.
const DefaultMaxTokens = 4096

// Provider calls the Anthropic Messages API with streaming. It is safe
// for concurrent use.
type Provider struct {
	client    ant.Client
	maxTokens int64
}

// Config configures a Provider. Only what is set here is used: unlike the
// SDK's default client, a Provider reads no environment variable and no
// profile file (ANTHROPIC_API_KEY and the like are for cmd/cairn to read).
type Config struct {
	// BaseURL is the API's base, without /v1. Default
	// https://api.anthropic.com.
	BaseURL string
	// APIKey authenticates the calls. Empty sends none (a proxy that adds
	// its own).
	APIKey string
	// MaxRetries is how many times a call that failed before streaming
	// began is retried (the SDK retries 408, 409, 429, 5xx and 529 with
	// backoff). Default 2; negative means none.
	MaxRetries int
	// HTTPClient, if set, makes the requests.
	HTTPClient *http.Client
	// MaxTokens bounds the output of one call. Default DefaultMaxTokens.
	MaxTokens int64
}

// New returns a provider for cfg.
func New(cfg Config) *Provider {
	opts := []option.RequestOption{option.WithoutEnvironmentDefaults()}
	if cfg.APIKey != "" {
		opts = append(opts, option.WithAPIKey(cfg.APIKey))
	}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(cfg.BaseURL))
	}
	switch {
	case cfg.MaxRetries < 0:
		opts = append(opts, option.WithMaxRetries(0))
	case cfg.MaxRetries > 0:
		opts = append(opts, option.WithMaxRetries(cfg.MaxRetries))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, option.WithHTTPClient(cfg.HTTPClient))
	}
	maxTokens := cfg.MaxTokens
	if maxTokens <= 0 {
		maxTokens = DefaultMaxTokens
	}
	return &Provider{client: ant.NewClient(opts...), maxTokens: maxTokens}
}

// Name returns "anthropic".
func (p *Provider) Name() string { return "anthropic" }

// Stream calls POST {BaseURL}/v1/messages with stream=true, the system
// prompt and Request.Tools (name, description, input_schema as it is),
// and yields text, reasoning (thinking deltas), tool-call deltas and each
// tool call once its content block stops, usage (after message_start and
// after message_delta; input tokens count cached ones too, as OpenAI's
// do), and Done with the stop reason in OpenAI's words: end_turn is
// "stop", tool_use "tool_calls", max_tokens "length"; others pass as
// they are. A stream that ends without message_stop is an error: the
// connection was cut.
//
// The history is rendered as the API wants it. A user message is a user
// message of its text. An assistant message is rendered step by step
// (agent.Steps): each model round is an assistant message of its text
// and tool_use blocks, in order, then a user message of one tool_result
// block per call (is_error from Part.IsError; an output that is a JSON
// string is sent as its text, any other as its JSON text); results stored
// apart, in tool messages right after the assistant message, belong to
// its last round. Reasoning parts are not sent back: the API accepts
// thinking blocks only with the signature it gave them, which a session
// does not keep. The API refuses a call without its result and a result
// that answers no call: a call with no result (a loop cut short) is sent
// with an error result saying so, and a result that answers no call of
// its round is left out. Tool input that is not a JSON object (the
// model's invalid JSON, kept as a string) is sent as {}. Empty text is
// left out, consecutive messages of one role are merged into one (tool
// results and the user's next words), and system messages join the
// system prompt (the API has no system role for most models).
func (p *Provider) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		params := ant.MessageNewParams{
			Model:     req.Model,
			MaxTokens: p.maxTokens,
			Messages:  messages(req.Messages),
			System:    system(req),
			Tools:     tools(req.Tools),
		}
		stream := p.client.Messages.NewStreaming(ctx, params)
		defer stream.Close()

		type toolUse struct {
			index   int // among the message's tool calls
			id      string
			name    string
			input   strings.Builder
			emitted bool
		}
		var (
			uses    = map[int64]*toolUse{} // by content block index
			order   []*toolUse
			usage   agent.Usage
			stop    string
			stopped bool // message_stop arrived
		)
		emitTool := func(u *toolUse) bool {
			if u.emitted {
				return true
			}
			u.emitted = true
			input := u.input.String()
			if strings.TrimSpace(input) == "" {
				input = "{}" // a tool without parameters
			}
			return yield(agent.Event{Type: agent.EventToolCall, ToolCall: &agent.ToolCall{Index: u.index, ID: u.id, Name: u.name, Input: input}})
		}
		for stream.Next() {
			ev := stream.Current()
			switch ev.Type {
			case "message_start":
				u := ev.Message.Usage
				usage.InputTokens = u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
				usage.OutputTokens = u.OutputTokens
				if !yield(agent.Event{Type: agent.EventUsage, Usage: &agent.Usage{InputTokens: usage.InputTokens, OutputTokens: usage.OutputTokens}}) {
					return
				}
			case "content_block_start":
				cb := ev.ContentBlock
				if cb.Type != "tool_use" {
					continue
				}
				u := &toolUse{index: len(order), id: cb.ID, name: cb.Name}
				uses[ev.Index] = u
				order = append(order, u)
				if !yield(agent.Event{Type: agent.EventToolCallDelta, ToolCall: &agent.ToolCall{Index: u.index, ID: u.id, Name: u.name}}) {
					return
				}
			case "content_block_delta":
				d := ev.Delta
				var out agent.Event
				switch {
				case d.Type == "text_delta" && d.Text != "":
					out = agent.Event{Type: agent.EventText, Text: d.Text}
				case d.Type == "thinking_delta" && d.Thinking != "":
					out = agent.Event{Type: agent.EventReasoning, Text: d.Thinking}
				case d.Type == "input_json_delta" && d.PartialJSON != "" && uses[ev.Index] != nil:
					u := uses[ev.Index]
					u.input.WriteString(d.PartialJSON)
					out = agent.Event{Type: agent.EventToolCallDelta, ToolCall: &agent.ToolCall{Index: u.index, Input: d.PartialJSON}}
				default:
					continue // a signature, a citation, an empty fragment, a server tool's input
				}
				if !yield(out) {
					return
				}
			case "content_block_stop":
				if u := uses[ev.Index]; u != nil && !emitTool(u) {
					return
				}
			case "message_delta":
				if ev.Delta.StopReason != "" {
					stop = string(ev.Delta.StopReason)
				}
				u := ev.Usage
				if in := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens; in > 0 {
					usage.InputTokens = in
				}
				usage.OutputTokens = u.OutputTokens
				if !yield(agent.Event{Type: agent.EventUsage, Usage: &agent.Usage{InputTokens: usage.InputTokens, OutputTokens: usage.OutputTokens}}) {
					return
				}
			case "message_stop":
				stopped = true
			}
		}
		if err := stream.Err(); err != nil {
			yield(agent.Event{Type: agent.EventError, Err: callError(ctx, err)})
			return
		}
		if !stopped {
			if ctx.Err() != nil {
				yield(agent.Event{Type: agent.EventError, Err: callError(ctx, ctx.Err())})
				return
			}
			yield(agent.Event{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "anthropic: the stream ended before the model finished")})
			return
		}
		for _, u := range order { // blocks the stream did not stop
			if !emitTool(u) {
				return
			}
		}
		yield(agent.Event{Type: agent.EventDone, FinishReason: finishReason(stop)})
	}
}

// finishReason renders a stop_reason in OpenAI's words, which the agent
// layer and its clients use.
func finishReason(stop string) string {
	switch stop {
	case "", "end_turn":
		return "stop"
	case "tool_use":
		return "tool_calls"
	case "max_tokens":
		return "length"
	}
	return stop
}

// callError turns an SDK error into a coded one, keeping the provider's
// words (they are about the call, and hold no secret: the key is never
// echoed).
func callError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		code := cairn.Unavailable
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = cairn.Timeout
		}
		return cairn.Errorf(code, "anthropic: call stopped: %v", ctx.Err())
	}
	var apiErr *ant.Error
	if errors.As(err, &apiErr) {
		msg := strings.TrimSpace(apiErr.Message)
		if typ := string(apiErr.Type()); typ != "" {
			msg = strings.TrimSpace(typ + ": " + msg)
		}
		if apiErr.StatusCode >= 400 {
			if msg == "" {
				msg = http.StatusText(apiErr.StatusCode)
			}
			return cairn.Errorf(cairn.Unavailable, "anthropic: %d %s", apiErr.StatusCode, msg)
		}
		// An error event in a stream that began well.
		if msg == "" {
			msg = "the stream reported an error"
		}
		return cairn.Errorf(cairn.Unavailable, "anthropic: %s", msg)
	}
	return cairn.Errorf(cairn.Unavailable, "anthropic: %v", err)
}

// system renders the system prompt: the request's, then the text of any
// system message of the history (the API has no system role in messages).
func system(req *agent.Request) []ant.TextBlockParam {
	var out []ant.TextBlockParam
	if req.System != "" {
		out = append(out, ant.TextBlockParam{Text: req.System})
	}
	for _, m := range req.Messages {
		if t := m.Text(); m.Role == agent.System && t != "" {
			out = append(out, ant.TextBlockParam{Text: t})
		}
	}
	return out
}

// tools renders the tool specs. The input schema is sent as it is.
func tools(specs []agent.ToolSpec) []ant.ToolUnionParam {
	var out []ant.ToolUnionParam
	for _, s := range specs {
		schema := s.InputSchema
		if len(bytes.TrimSpace(schema)) == 0 {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		t := &ant.ToolParam{Name: s.Name, InputSchema: param.Override[ant.ToolInputSchemaParam](schema)}
		if s.Description != "" {
			t.Description = ant.String(s.Description)
		}
		out = append(out, ant.ToolUnionParam{OfTool: t})
	}
	return out
}

// messages renders the conversation as the Messages API wants it, as
// Stream describes.
func messages(history []agent.Message) []ant.MessageParam {
	type turn struct {
		user   bool
		blocks []ant.ContentBlockParamUnion
	}
	var turns []turn
	add := func(user bool, blocks []ant.ContentBlockParamUnion) {
		if len(blocks) == 0 {
			return
		}
		if n := len(turns); n > 0 && turns[n-1].user == user {
			turns[n-1].blocks = append(turns[n-1].blocks, blocks...)
			return
		}
		turns = append(turns, turn{user: user, blocks: blocks})
	}
	for i := 0; i < len(history); i++ {
		m := history[i]
		switch m.Role {
		case agent.User:
			if t := m.Text(); t != "" {
				add(true, []ant.ContentBlockParamUnion{ant.NewTextBlock(t)})
			}
		case agent.Assistant:
			parts := m.Parts
			// Results stored apart, in tool messages after the assistant
			// message, belong to its last step.
			for i+1 < len(history) && history[i+1].Role == agent.ToolRole {
				i++
				parts = append(parts[:len(parts):len(parts)], history[i].Parts...)
			}
			for _, st := range agent.Steps(parts) {
				var blocks []ant.ContentBlockParamUnion
				var calls []string
				for _, p := range st.Parts {
					switch p.Type {
					case agent.PartText:
						if p.Text != "" {
							blocks = append(blocks, ant.NewTextBlock(p.Text))
						}
					case agent.PartToolCall:
						blocks = append(blocks, ant.NewToolUseBlock(p.ToolCallID, toolInput(p.Input), p.ToolName))
						calls = append(calls, p.ToolCallID)
					}
				}
				add(false, blocks)
				add(true, toolResults(calls, st.Results))
			}
		}
		// A tool message that follows no assistant message answers no
		// call: dropped.
	}
	out := make([]ant.MessageParam, len(turns))
	for i, t := range turns {
		if t.user {
			out[i] = ant.NewUserMessage(t.blocks...)
		} else {
			out[i] = ant.NewAssistantMessage(t.blocks...)
		}
	}
	return out
}

// noResult is the output sent for a tool call that has no result.
const noResult = "the tool call has no result (the turn ended before it ran)"

// toolResults renders one tool_result block per call, in the order of
// the calls.
func toolResults(calls []string, results []agent.Part) []ant.ContentBlockParamUnion {
	byID := map[string]agent.Part{}
	for _, r := range results {
		if r.Type == agent.PartToolResult {
			byID[r.ToolCallID] = r
		}
	}
	var out []ant.ContentBlockParamUnion
	for _, id := range calls {
		r, ok := byID[id]
		text, isError := noResult, true
		if ok {
			text, isError = outputText(r.Output), r.IsError
		}
		b := ant.ToolResultBlockParam{ToolUseID: id}
		if text != "" { // the API refuses an empty text block
			b.Content = []ant.ToolResultBlockParamContentUnion{{OfText: &ant.TextBlockParam{Text: text}}}
		}
		if isError {
			b.IsError = ant.Bool(true)
		}
		out = append(out, ant.ContentBlockParamUnion{OfToolResult: &b})
	}
	return out
}

// toolInput returns a tool call's input as the API takes it: a JSON
// object.
func toolInput(in json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(in)
	if len(t) > 0 && t[0] == '{' && json.Valid(t) {
		return t
	}
	return json.RawMessage(`{}`)
}

// outputText renders a tool's output for the model: a JSON string as its
// text, any other value as its JSON text.
func outputText(out json.RawMessage) string {
	var s string
	if json.Unmarshal(out, &s) == nil {
		return s
	}
	return string(out)
}
