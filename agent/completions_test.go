package agent_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// chatClient is the official OpenAI client pointed at a session.
func chatClient(e *env, session string) oai.Client {
	return oai.NewClient(option.WithBaseURL(e.url+"/v1/agents/"+session+"/"), option.WithAPIKey("unused"),
		option.WithHTTPClient(client))
}

// TestChatCompletions drives a session with the OpenAI client: a call, a
// streamed call whose request repeats the conversation (only its last user
// message is new), and a failed call; the model sees the session's
// history, not the client's.
func TestChatCompletions(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		last := r.Messages[len(r.Messages)-1].Text()
		if last == "fail" {
			return llmtest.Reply{Status: 400, ErrorMessage: "no thanks"}
		}
		return llmtest.Reply{Deltas: []string{"re: ", last}, Usage: &llmtest.Usage{PromptTokens: 7, CompletionTokens: 2}}
	})
	e := newEnv(t, "", openaiAgent(d))
	c := chatClient(e, "gpt/oc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{
		Model:    "ignored",
		Messages: []oai.ChatCompletionMessageParamUnion{oai.SystemMessage("ignored too"), oai.UserMessage("one")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Object != "chat.completion" || resp.Model != "test-model" || len(resp.Choices) != 1 ||
		resp.Choices[0].Message.Content != "re: one" || resp.Choices[0].FinishReason != "stop" ||
		resp.Usage.PromptTokens != 7 || resp.Usage.CompletionTokens != 2 {
		t.Errorf("completion = %s", resp.RawJSON())
	}

	stream := c.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
		Model: "ignored",
		Messages: []oai.ChatCompletionMessageParamUnion{
			oai.UserMessage("one"), oai.AssistantMessage("re: one"), oai.UserMessage("two"),
		},
		StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
	})
	var acc oai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		if ch.Object != "chat.completion.chunk" {
			t.Errorf("chunk object = %q", ch.Object)
		}
		acc.AddChunk(ch)
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	// Role, two deltas, finish, usage.
	if chunks != 5 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != "re: two" ||
		acc.Choices[0].FinishReason != "stop" || acc.Usage.TotalTokens != 9 {
		t.Errorf("%d chunks, accumulated %+v", chunks, acc.ChatCompletion)
	}

	// History accumulated in the session, and the model got it from
	// there: the client's system message and repeated turns are not
	// sent or stored.
	if r, want := roles(e.history(t, "gpt/oc")), "user:one|assistant:re: one|user:two|assistant:re: two"; r != want {
		t.Errorf("history = %s, want %s", r, want)
	}
	var sent []string
	for _, m := range d.Requests()[1].Messages {
		sent = append(sent, m.Role+":"+m.Text())
	}
	if got, want := strings.Join(sent, "|"), "system:be kind|user:one|assistant:re: one|user:two"; got != want {
		t.Errorf("second model request = %s, want %s", got, want)
	}

	// A failed generation is an API error, not retried: the message was
	// stored once.
	_, err = c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{
		Model: "ignored", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("fail")},
	})
	var apiErr *oai.Error
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, "no thanks") {
		t.Errorf("failed call: err = %v (%+v), want an API error with the provider's words", err, apiErr)
	}
	h := e.history(t, "gpt/oc")
	if len(h) != 6 || h[5].Status != agent.Failed {
		t.Errorf("history after failure = %s, last status %s; want 6 messages, error", roles(h), h[len(h)-1].Status)
	}
	if n := len(d.Requests()); n != 3 {
		t.Errorf("model requests = %d, want 3 (no retry)", n)
	}
}

func TestChatCompletionsBadInput(t *testing.T) {
	e := newEnv(t, "")
	for _, body := range []string{
		`{"messages":[]}`,
		`{"messages":[{"role":"assistant","content":"x"}]}`,
		`{"messages":[{"role":"user","content":"  "}]}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		`{"messages":`,
	} {
		code, b := e.do(t, "POST", "/v1/agents/default/bad/chat/completions", []byte(body))
		if code != 400 || errorCode(b) != "invalid" {
			t.Errorf("%s: %d %s, want 400 invalid", body, code, b)
		}
	}
	// Text parts are accepted, and the echo answers the last user message.
	code, b := e.do(t, "POST", "/v1/agents/default/bad/chat/completions",
		[]byte(`{"messages":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"}]}]}`))
	if code != 200 || !strings.Contains(string(b), `"content":"echo: b"`) {
		t.Errorf("text parts: %d %s", code, b)
	}
}

// TestChatCompletionsStreamError checks that a provider failure mid-stream
// reaches the OpenAI client as a stream error, after the text so far.
func TestChatCompletionsStreamError(t *testing.T) {
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"par", "tial"}, StreamError: "overloaded"}
	})
	e := newEnv(t, "", openaiAgent(d))
	c := chatClient(e, "gpt/se")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := c.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
		Model: "ignored", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")},
	})
	var text string
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			text += ch.Delta.Content
		}
	}
	if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "overloaded") {
		t.Errorf("stream error = %v, want the provider's words", err)
	}
	if text != "partial" {
		t.Errorf("streamed text = %q, want partial", text)
	}
	h := e.history(t, "gpt/se")
	if len(h) != 2 || h[1].Status != agent.Failed || h[1].Text() != "partial" {
		t.Errorf("history = %s, reply status %s; want the reply stored as error", roles(h), h[len(h)-1].Status)
	}
}
