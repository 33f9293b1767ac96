// Package openai is the agent layer's provider for OpenAI-compatible chat
// completions APIs: OpenAI itself, vLLM, llama.cpp server, Ollama, LM
// Studio, Workers AI's OpenAI endpoint. It uses the official SDK
// (github.com/openai/openai-go/v3) for the wire format, streaming and the
// reassembly of tool-call deltas.
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
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

// Stream calls POST {BaseURL}/chat/completions with stream=true and usage
// included, and yields text, reasoning (the reasoning_content extension of
// vLLM, llama.cpp and DeepSeek), tool-call deltas, each tool call once the
// accumulator has it whole, usage, and Done with the finish reason. A
// stream that ends without a finish reason is an error: the connection was
// cut.
func (p *Provider) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		params := oai.ChatCompletionNewParams{
			Model:         req.Model,
			Messages:      messages(req),
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

// messages renders the conversation in the chat completions format.
func messages(req *agent.Request) []oai.ChatCompletionMessageParamUnion {
	var out []oai.ChatCompletionMessageParamUnion
	if req.System != "" {
		out = append(out, oai.SystemMessage(req.System))
	}
	for _, m := range req.Messages {
		switch m.Role {
		case agent.System:
			out = append(out, oai.SystemMessage(m.Text()))
		case agent.User:
			out = append(out, oai.UserMessage(m.Text()))
		case agent.Assistant:
			var am oai.ChatCompletionAssistantMessageParam
			if t := m.Text(); t != "" {
				am.Content.OfString = oai.String(t)
			}
			for _, p := range m.Parts {
				if p.Type != agent.PartToolCall {
					continue
				}
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
			out = append(out, oai.ChatCompletionMessageParamUnion{OfAssistant: &am})
			for _, p := range m.Parts {
				if p.Type == agent.PartToolResult {
					out = append(out, oai.ToolMessage(string(p.Output), p.ToolCallID))
				}
			}
		case agent.ToolRole:
			for _, p := range m.Parts {
				if p.Type == agent.PartToolResult {
					out = append(out, oai.ToolMessage(string(p.Output), p.ToolCallID))
				}
			}
		}
	}
	return out
}
