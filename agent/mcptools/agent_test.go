package mcptools

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
	"github.com/cairn-dev/cairn/agent/openai"
	"github.com/cairn-dev/cairn/sqlite"
)

// agentWith runs an agent whose model (the OpenAI double) calls tool with
// input in its first round and then says "done: " and the tool's output,
// with the MCP server s as its toolset. It returns the session's stub.
func agentWith(t *testing.T, s *Server, tool, input string) *cairn.Stub {
	t.Helper()
	model := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		last := r.Messages[len(r.Messages)-1]
		if last.Role == "tool" {
			return llmtest.Reply{Deltas: []string{"done: ", last.Text()}}
		}
		for _, tl := range r.Tools {
			if tl.Function.Name == tool {
				return llmtest.Reply{ToolCalls: []llmtest.ToolCall{{ID: "call_1", Name: tool, Arguments: input}}}
			}
		}
		return llmtest.Reply{Deltas: []string{"no tool " + tool}}
	})
	svc, err := agent.NewService(agent.Agent{Name: "a", Model: "m", Toolsets: []agent.Toolset{s},
		Provider: openai.New(openai.Config{BaseURL: model.URL, APIKey: "k", MaxRetries: -1})})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := sqlite.Open(t.TempDir(), cairn.Process)
	if err != nil {
		t.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	rt.Logger = testLogger()
	if _, err := svc.Register(rt); err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Close(ctx)
	})
	stub, err := svc.Session("a", "s1")
	if err != nil {
		t.Fatal(err)
	}
	return stub
}

// send posts a user message to the session and returns the reply.
func send(t *testing.T, stub *cairn.Stub, text string) agent.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, _ := json.Marshal(agent.SendRequest{Text: text})
	w := httptest.NewRecorder()
	if err := stub.Fetch(w, httptest.NewRequestWithContext(ctx, "POST", "/messages", bytes.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	var m agent.Message
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || w.Code != 200 {
		t.Fatalf("POST /messages: %d %s", w.Code, w.Body)
	}
	return m
}

// result returns the tool-result part of a reply.
func result(t *testing.T, m agent.Message) agent.Part {
	t.Helper()
	for _, p := range m.Parts {
		if p.Type == agent.PartToolResult {
			return p
		}
	}
	t.Fatalf("no tool result in %+v", m)
	return agent.Part{}
}

// TestAgentCallsMCPTool runs the agent's tool loop against the Go test
// server: the model calls an MCP tool and answers with its output.
func TestAgentCallsMCPTool(t *testing.T) {
	s := newServer(t, stdioConfig("go"))
	stub := agentWith(t, s, "go_greet", `{"name":"ada"}`)
	m := send(t, stub, "greet ada")
	r := result(t, m)
	if m.Status != agent.Complete || r.IsError || string(r.Output) != `"hello, ada"` || !strings.HasPrefix(m.Text(), "done: ") {
		t.Fatalf("reply = %+v", m)
	}
}

// TestAgentMCPServerKilledMidCall: the server dies during the call; the
// turn does not hang, the model gets an error result saying so, and the
// reply completes.
func TestAgentMCPServerKilledMidCall(t *testing.T) {
	s := newServer(t, stdioConfig("go"))
	stub := agentWith(t, s, "go_slow", `{}`)
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-stopped }()
	go func() { // the killer: once the call runs
		defer close(stopped)
		for {
			if c := current(s); c != nil && strings.Contains(c.proc.stderr.last(), "slow: started") {
				c.proc.cmd.Process.Kill()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	m := send(t, stub, "be slow")
	r := result(t, m)
	if m.Status != agent.Complete || !r.IsError || !strings.Contains(string(r.Output), "mcp server go: tool slow: connection lost") {
		t.Fatalf("reply = %+v", m)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the reply took %v", d)
	}
	t.Logf("tool result: %s", r.Output)
}
