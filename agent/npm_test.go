package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
	"github.com/cairn-dev/cairn/internal/peertest"
)

// npmUsage is the usage object of the openai npm client.
type npmUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// npmFailure is how testdata/openai_client.mjs reports a call that was
// meant to fail.
type npmFailure struct {
	Threw       bool
	Requests    int
	Name        string
	Status      int
	Code        string
	Message     string
	ShouldRetry string
}

// npmSummary is what testdata/openai_client.mjs prints.
type npmSummary struct {
	Version string
	First   struct {
		Requests     int
		ID           string
		Object       string
		Model        string
		Text         string
		FinishReason string
		Usage        *npmUsage
	}
	Second struct {
		Requests     int
		Chunks       int
		Objects      []string
		IDs          []string
		Deltas       []string
		Roles        []string
		Text         string
		FinishReason string
		Usage        *npmUsage
	}
	Empty, Failed npmFailure
}

// TestNpmOpenAIClient drives a session's chat completions endpoint with
// the real openai npm client (installed by .ci/setup.d/20-openai-node.sh):
// a call, a streamed second message, and two calls that fail, which the
// client must not retry.
func TestNpmOpenAIClient(t *testing.T) {
	node := peertest.Node(t)
	modules := peertest.NodeModules(t, "openai-node", "openai")
	script, err := filepath.Abs(filepath.Join("testdata", "openai_client.mjs"))
	if err != nil {
		t.Fatal(err)
	}

	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Status: 400, ErrorMessage: "no thanks"}
	})
	e := newEnv(t, "", agent.Agent{Name: "default"}, openaiAgent(d))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script,
		e.url+"/v1/agents/default/npm/", e.url+"/v1/agents/gpt/npm-fail/")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v (context: %v)\nstdout: %s\nstderr: %s", script, err, ctx.Err(), stdout.Bytes(), stderr.Bytes())
	}
	var got npmSummary
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("decode summary: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("openai npm %s: %s", got.Version, bytes.TrimSpace(stdout.Bytes()))

	h := e.history(t, "default/npm")
	if r, want := roles(h), "user:hello world|assistant:echo: hello world|user:how are you today|assistant:echo: how are you today"; r != want {
		t.Fatalf("history = %s, want %s", r, want)
	}
	for _, m := range h {
		if m.Status != agent.Complete {
			t.Errorf("message %s %q has status %s, want complete", m.Role, m.Text(), m.Status)
		}
	}

	// The echo counts words as tokens: what the model was sent, and
	// what it said. The first call's prompt is the one user message (the
	// client's system message is not sent); the second's is the whole
	// history, which the client did not send: the server kept it.
	words := func(ss ...string) int64 {
		var n int64
		for _, s := range ss {
			n += int64(len(strings.Fields(s)))
		}
		return n
	}
	wantUsage := func(prompt, completion int64) npmUsage {
		return npmUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	}

	t.Run("create", func(t *testing.T) {
		f := got.First
		if f.Object != "chat.completion" || f.Model != "echo" || f.FinishReason != "stop" || f.Requests != 1 {
			t.Errorf("completion = %+v, want a chat.completion of model echo, finish stop, in 1 request", f)
		}
		if f.Text != h[1].Text() {
			t.Errorf("text = %q, want the stored reply %q", f.Text, h[1].Text())
		}
		if want := "chatcmpl-" + h[1].ID; f.ID != want {
			t.Errorf("id = %q, want %q", f.ID, want)
		}
		if want := wantUsage(words(h[0].Text()), words(h[1].Text())); f.Usage == nil || *f.Usage != want {
			t.Errorf("usage = %+v, want %+v", f.Usage, want)
		}
	})

	t.Run("stream", func(t *testing.T) {
		s := got.Second
		if s.Text != h[3].Text() {
			t.Errorf("streamed deltas %q make %q, want the stored reply %q", s.Deltas, s.Text, h[3].Text())
		}
		// The echo answers word by word: more than one delta shows the
		// text was streamed, not sent whole.
		if len(s.Deltas) < 2 {
			t.Errorf("deltas = %q, want several", s.Deltas)
		}
		// A chunk with the role, one per delta, one with the finish
		// reason, one with the usage.
		if want := len(s.Deltas) + 3; s.Chunks != want {
			t.Errorf("%d chunks, want %d", s.Chunks, want)
		}
		if strings.Join(s.Objects, ",") != "chat.completion.chunk" || strings.Join(s.IDs, ",") != "chatcmpl-"+h[3].ID {
			t.Errorf("chunk objects %q, ids %q; want chat.completion.chunk, chatcmpl-%s", s.Objects, s.IDs, h[3].ID)
		}
		if strings.Join(s.Roles, ",") != "assistant" || s.FinishReason != "stop" || s.Requests != 1 {
			t.Errorf("roles %q, finish %q, %d requests; want assistant once, stop, 1", s.Roles, s.FinishReason, s.Requests)
		}
		want := wantUsage(words(h[0].Text(), h[1].Text(), h[2].Text()), words(h[3].Text()))
		if s.Usage == nil || *s.Usage != want {
			t.Errorf("usage = %+v, want %+v (the prompt holds the history)", s.Usage, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// An empty message is refused before anything is stored; a
		// failed model call is a 503, which the client would retry but
		// for X-Should-Retry: false.
		for _, tc := range []struct {
			name   string
			got    npmFailure
			status int
			code   string
		}{
			{"empty", got.Empty, 400, "invalid"},
			{"failed", got.Failed, 503, "unavailable"},
		} {
			f := tc.got
			if !f.Threw || f.Status != tc.status || f.Code != tc.code {
				t.Errorf("%s: %+v, want an APIError %d %s", tc.name, f, tc.status, tc.code)
			}
			if f.Requests != 1 || f.ShouldRetry != "false" {
				t.Errorf("%s: %d requests, X-Should-Retry %q; want 1, false", tc.name, f.Requests, f.ShouldRetry)
			}
		}
		if !strings.Contains(got.Failed.Message, "no thanks") {
			t.Errorf("failed: message %q, want the provider's words", got.Failed.Message)
		}
		if n := len(e.history(t, "default/npm")); n != 4 {
			t.Errorf("history after the empty message has %d messages, want 4", n)
		}
		fh := e.history(t, "gpt/npm-fail")
		if len(fh) != 2 || fh[1].Status != agent.Failed {
			t.Errorf("failed session = %s; want the message and its failed reply, once", roles(fh))
		}
		if n := len(d.Requests()); n != 1 {
			t.Errorf("model requests = %d, want 1", n)
		}
	})
}
