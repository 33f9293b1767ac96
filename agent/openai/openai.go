// Package openai is the agent layer's provider for OpenAI-compatible chat
// completions APIs: OpenAI itself, vLLM, llama.cpp server, Ollama, LM
// Studio, Workers AI's OpenAI endpoint. It uses the official SDK
// (github.com/openai/openai-go/v3) for the wire format, streaming and the
// reassembly of tool-call deltas.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// Provider calls an OpenAI-compatible chat completions endpoint with
// streaming. It is safe for concurrent use.
type Provider struct {
	client oai.Client
}

// Config configures a Provider.
type Config struct {
	// BaseURL is the API's base, ending in /v1 for most servers
	// ("http://127.0.0.1:11434/v1" for Ollama). Default OpenAI's.
	BaseURL string
	// APIKey is sent as a bearer token. Local servers often need none.
	APIKey string
	// MaxRetries is how many times a call that failed before streaming
	// began is retried. Default 2; negative means none.
	MaxRetries int
	// HTTPClient, if set, makes the requests.
	HTTPClient *http.Client
}

// New returns a provider for cfg.
func New(cfg Config) *Provider {
	opts := []option.RequestOption{option.WithAPIKey(cfg.APIKey)}
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
	return &Provider{client: oai.NewClient(opts...)}
}

// Name returns "openai".
func (p *Provider) Name() string { return "openai" }

// Stream calls POST {BaseURL}/chat/completions with stream=true, usage
// included and Request.Tools as function tools, and yields text,
// reasoning (the reasoning_content extension of vLLM, llama.cpp and
// DeepSeek), tool-call deltas, each tool call once the accumulator has it
// whole, usage, and Done with the finish reason. A stream that ends
// without a finish reason is an error: the connection was cut. A tool
// whose input schema is not a JSON object fails the call.
//
// The history is rendered step by step (agent.Steps): each model round
// is an assistant message of its text and tool calls, then one tool
// message per call, in the order of the calls; results stored apart, in
// tool messages right after the assistant message, belong to its last
// round. The format has no error flag: a result with IsError is sent
// with its output prefixed by "error: ". An output that is a JSON string
// is sent as its text, any other as its JSON text. Reasoning parts are
// not sent back. The API refuses a call without its result and a result
// that answers no call: a call with no result (a loop cut short) is sent
// with an error result saying so, and a result that answers no call of
// its round is left out.
func (p *Provider) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		fns, err := tools(req.Tools)
		if err != nil {
			yield(agent.Event{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "openai: %v", err)})
			return
		}
		params := oai.ChatCompletionNewParams{
			Model:         req.Model,
			Messages:      messages(req),
			Tools:         fns,
			StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
		}
		stream := p.client.Chat.Completions.NewStreaming(ctx, params)
		defer stream.Close()
		var acc oai.ChatCompletionAccumulator
		finish := ""
		emitted := map[int]bool{} // tool calls already yielded whole
		emitTool := func(index int, id, name, args string) bool {
			if emitted[index] {
				return true
			}
			emitted[index] = true
			return yield(agent.Event{Type: agent.EventToolCall, ToolCall: &agent.ToolCall{Index: index, ID: id, Name: name, Input: args}})
		}
		for stream.Next() {
			chunk := stream.Current()
			acc.AddChunk(chunk)
			if tc, ok := acc.JustFinishedToolCall(); ok {
				if !emitTool(tc.Index, tc.ID, tc.Name, tc.Arguments) {
					return
				}
			}
			if chunk.JSON.Usage.Valid() && chunk.Usage.TotalTokens+chunk.Usage.PromptTokens+chunk.Usage.CompletionTokens > 0 {
				u := &agent.Usage{InputTokens: chunk.Usage.PromptTokens, OutputTokens: chunk.Usage.CompletionTokens}
				if !yield(agent.Event{Type: agent.EventUsage, Usage: u}) {
					return
				}
			}
			for _, ch := range chunk.Choices {
				if ch.Index != 0 {
					continue // one answer per message
				}
				d := ch.Delta
				if f, ok := d.JSON.ExtraFields["reasoning_content"]; ok {
					var s string
					if json.Unmarshal([]byte(f.Raw()), &s) == nil && s != "" {
						if !yield(agent.Event{Type: agent.EventReasoning, Text: s}) {
							return
						}
					}
				}
				if d.Content != "" {
					if !yield(agent.Event{Type: agent.EventText, Text: d.Content}) {
						return
					}
				}
				for _, tc := range d.ToolCalls {
					ev := agent.Event{Type: agent.EventToolCallDelta, ToolCall: &agent.ToolCall{
						Index: int(tc.Index), ID: tc.ID, Name: tc.Function.Name, Input: tc.Function.Arguments}}
					if !yield(ev) {
						return
					}
				}
				if ch.FinishReason != "" {
					finish = ch.FinishReason
				}
			}
		}
		if err := stream.Err(); err != nil {
			yield(agent.Event{Type: agent.EventError, Err: callError(ctx, err)})
			return
		}
		if finish == "" {
			yield(agent.Event{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "openai: the stream ended before the model finished")})
			return
		}
		// Tool calls the accumulator did not report as finished (the last
		// one ends with the stream).
		if len(acc.Choices) > 0 {
			for i, tc := range acc.Choices[0].Message.ToolCalls {
				if !emitTool(i, tc.ID, tc.Function.Name, tc.Function.Arguments) {
					return
				}
			}
		}
		yield(agent.Event{Type: agent.EventDone, FinishReason: finish})
	}
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
		return cairn.Errorf(code, "openai: call stopped: %v", ctx.Err())
	}
	var apiErr *oai.Error
	if errors.As(err, &apiErr) {
		msg := strings.TrimSpace(apiErr.Message)
		if msg == "" {
			msg = http.StatusText(apiErr.StatusCode)
		}
		return cairn.Errorf(cairn.Unavailable, "openai: %d %s", apiErr.StatusCode, msg)
	}
	return cairn.Errorf(cairn.Unavailable, "openai: %v", err)
}

// tools renders the tool specs as function tools.
func tools(specs []agent.ToolSpec) ([]oai.ChatCompletionToolUnionParam, error) {
	var out []oai.ChatCompletionToolUnionParam
	for _, s := range specs {
		params := shared.FunctionParameters{"type": "object"}
		if len(bytes.TrimSpace(s.InputSchema)) > 0 {
			params = nil
			if err := json.Unmarshal(s.InputSchema, &params); err != nil || params == nil {
				return nil, fmt.Errorf("tool %q: the input schema is not a JSON object", s.Name)
			}
		}
		fn := shared.FunctionDefinitionParam{Name: s.Name, Parameters: params}
		if s.Description != "" {
			fn.Description = oai.String(s.Description)
		}
		out = append(out, oai.ChatCompletionFunctionTool(fn))
	}
	return out, nil
}

// noResult is the output sent for a tool call that has no result.
const noResult = "error: the tool call has no result (the turn ended before it ran)"

// messages renders the conversation in the chat completions format, as
// Stream describes.
func messages(req *agent.Request) []oai.ChatCompletionMessageParamUnion {
	var out []oai.ChatCompletionMessageParamUnion
	if req.System != "" {
		out = append(out, oai.SystemMessage(req.System))
	}
	for i := 0; i < len(req.Messages); i++ {
		m := req.Messages[i]
		switch m.Role {
		case agent.System:
			out = append(out, oai.SystemMessage(m.Text()))
		case agent.User:
			out = append(out, oai.UserMessage(m.Text()))
		case agent.Assistant:
			parts := m.Parts
			for i+1 < len(req.Messages) && req.Messages[i+1].Role == agent.ToolRole {
				i++
				parts = append(parts[:len(parts):len(parts)], req.Messages[i].Parts...)
			}
			for _, st := range agent.Steps(parts) {
				out = append(out, step(st)...)
			}
		}
		// A tool message that follows no assistant message answers no
		// call: dropped.
	}
	return out
}

// step renders one model round: the assistant message, then the result
// of each of its calls.
func step(st agent.Step) []oai.ChatCompletionMessageParamUnion {
	var am oai.ChatCompletionAssistantMessageParam
	var text string
	for _, p := range st.Parts {
		switch p.Type {
		case agent.PartText:
			text += p.Text
		case agent.PartToolCall:
			args := string(p.Input)
			var s string
			if json.Unmarshal(p.Input, &s) == nil {
				args = s // input the model gave as invalid JSON, kept as a string
			}
			am.ToolCalls = append(am.ToolCalls, oai.ChatCompletionMessageToolCallUnionParam{
				OfFunction: &oai.ChatCompletionMessageFunctionToolCallParam{
					ID:       p.ToolCallID,
					Function: oai.ChatCompletionMessageFunctionToolCallFunctionParam{Name: p.ToolName, Arguments: args},
				},
			})
		}
	}
	if text == "" && len(am.ToolCalls) == 0 {
		return nil // reasoning only, or nothing
	}
	if text != "" {
		am.Content.OfString = oai.String(text)
	}
	out := []oai.ChatCompletionMessageParamUnion{{OfAssistant: &am}}
	results := map[string]agent.Part{}
	for _, r := range st.Results {
		results[r.ToolCallID] = r
	}
	for _, tc := range am.ToolCalls {
		id := tc.OfFunction.ID
		content := noResult
		if r, ok := results[id]; ok {
			content = outputText(r.Output)
			if r.IsError {
				content = "error: " + content
			}
		}
		out = append(out, oai.ToolMessage(content, id))
	}
	return out
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
