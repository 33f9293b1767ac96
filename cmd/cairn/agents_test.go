package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-dev/cairn/agent"
)

func TestServeAgentsEcho(t *testing.T) {
	url := startServer(t, testConfig(t))
	resp, err := http.Get(url + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"name":"default","provider":"echo"`) {
		t.Fatalf("GET /v1/agents: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Post(url+"/v1/agents/default/s1/messages", "application/json", strings.NewReader(`{"text":"hi there"}`))
	if err != nil {
		t.Fatal(err)
	}
	var m agent.Message
	json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 200 || m.Text() != "echo: hi there" || m.Status != agent.Complete {
		t.Errorf("POST: %d %+v", resp.StatusCode, m)
	}
}

func TestAgentConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		agents  []AgentConfig
		want    []agent.AgentInfo
		wantErr bool
	}{
		{name: "nothing set", want: []agent.AgentInfo{{Name: "default", Provider: "echo", Model: "echo"}}},
		{name: "base url", env: map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "CAIRN_MODEL": "llama3"},
			want: []agent.AgentInfo{{Name: "default", Provider: "openai", Model: "llama3"}}},
		{name: "key only", env: map[string]string{"OPENAI_API_KEY": "sk-x"},
			want: []agent.AgentInfo{{Name: "default", Provider: "openai", Model: defaultModel}}},
		{name: "config file", env: map[string]string{"OPENAI_API_KEY": "sk-x"},
			agents: []AgentConfig{{Name: "dev"}, {Name: "gpt", Provider: "openai", Model: "gpt-x", APIKeyEnv: "MY_KEY"}},
			want:   []agent.AgentInfo{{Name: "dev", Provider: "echo", Model: "echo"}, {Name: "gpt", Provider: "openai", Model: "gpt-x"}}},
		{name: "anthropic key", env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"},
			want: []agent.AgentInfo{{Name: "default", Provider: "anthropic", Model: defaultAnthropicModel}}},
		{name: "anthropic model", env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "CAIRN_MODEL": "claude-x"},
			want: []agent.AgentInfo{{Name: "default", Provider: "anthropic", Model: "claude-x"}}},
		{name: "anthropic base url only", env: map[string]string{"ANTHROPIC_BASE_URL": "http://127.0.0.1:1"},
			want: []agent.AgentInfo{{Name: "default", Provider: "echo", Model: "echo"}}},
		{name: "openai before anthropic", env: map[string]string{"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x"},
			want: []agent.AgentInfo{{Name: "default", Provider: "openai", Model: defaultModel}}},
		{name: "config file anthropic", env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-x"},
			agents: []AgentConfig{{Name: "claude", Provider: "anthropic", Model: "claude-x", MaxTokens: 1000}},
			want:   []agent.AgentInfo{{Name: "claude", Provider: "anthropic", Model: "claude-x"}}},
		{name: "built-in tools", agents: []AgentConfig{{Name: "a", Tools: []string{"now", "random"}, MaxToolRounds: 3, CancelOnDisconnect: true}},
			want: []agent.AgentInfo{{Name: "a", Provider: "echo", Model: "echo"}}},
		{name: "unknown built-in tool", agents: []AgentConfig{{Name: "a", Tools: []string{"now", "rm-rf"}}}, wantErr: true},
		{name: "unknown provider", agents: []AgentConfig{{Name: "a", Provider: "nope"}}, wantErr: true},
		{name: "openai without model", agents: []AgentConfig{{Name: "a", Provider: "openai"}}, wantErr: true},
		{name: "anthropic without model", agents: []AgentConfig{{Name: "a", Provider: "anthropic"}}, wantErr: true},
		{name: "max_tokens on openai", agents: []AgentConfig{{Name: "a", Provider: "openai", Model: "m", MaxTokens: 10}}, wantErr: true},
		{name: "negative max_tokens", agents: []AgentConfig{{Name: "a", Provider: "anthropic", Model: "m", MaxTokens: -1}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := newTestMain("", tc.env)
			cfg := DefaultConfig()
			cfg.Agents = tc.agents
			svc, err := m.agentService(cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := svc.Agents()
			if len(got) != len(tc.want) {
				t.Fatalf("agents = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("agent %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// anthropicDouble is a minimal Anthropic Messages API (the full double,
// agent/internal/llmtest, is internal to package agent): it answers
// "re: " and the last user text in the streaming wire format, and records
// each request's body and credentials.
type anthropicDouble struct {
	URL string

	mu       sync.Mutex
	requests []anthropicRequest
}

type anthropicRequest struct {
	Model     string `json:"model"`
	MaxTokens int64  `json:"max_tokens"`
	Stream    bool   `json:"stream"`
	Messages  []struct {
		Role    string `json:"role"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"messages"`
	Key string `json:"-"` // X-Api-Key or the bearer token
}

func newAnthropicDouble(tb testing.TB) *anthropicDouble {
	tb.Helper()
	d := &anthropicDouble{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		var req anthropicRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad request"}}`)
			return
		}
		req.Key = r.Header.Get("X-Api-Key")
		if req.Key == "" {
			req.Key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		d.mu.Lock()
		d.requests = append(d.requests, req)
		d.mu.Unlock()
		last := req.Messages[len(req.Messages)-1]
		var text string
		for _, c := range last.Content {
			text += c.Text
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []struct{ name, data string }{
			{"message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"` + req.Model + `","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}`},
			{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
			{"ping", `{"type":"ping"}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"re: "}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":` + strconv.Quote(text) + `}}`},
			{"content_block_stop", `{"type":"content_block_stop","index":0}`},
			{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}`},
			{"message_stop", `{"type":"message_stop"}`},
		} {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
		}
	})
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

func (d *anthropicDouble) Requests() []anthropicRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]anthropicRequest(nil), d.requests...)
}

// TestServeAgentsAnthropic runs the server with an anthropic agent from
// the config file and the default agent from ANTHROPIC_* in the
// environment, and checks that both reach the API with their settings.
func TestServeAgentsAnthropic(t *testing.T) {
	for _, tc := range []struct {
		name      string
		agents    []AgentConfig
		env       map[string]string
		agent     string
		model     string
		maxTokens int64
		key       string
	}{
		{name: "config file", agents: []AgentConfig{{Name: "claude", Provider: "anthropic", Model: "claude-test",
			APIKeyEnv: "MY_ANT_KEY", MaxTokens: 1234}},
			env: map[string]string{"MY_ANT_KEY": "sk-ant-file"}, agent: "claude", model: "claude-test", maxTokens: 1234, key: "sk-ant-file"},
		{name: "environment", env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-env"},
			agent: "default", model: defaultAnthropicModel, maxTokens: 4096, key: "sk-ant-env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newAnthropicDouble(t)
			cfg := testConfig(t)
			cfg.Agents = tc.agents
			for i := range cfg.Agents {
				cfg.Agents[i].BaseURL = d.URL
			}
			env := map[string]string{"ANTHROPIC_BASE_URL": d.URL}
			for k, v := range tc.env {
				env[k] = v
			}
			url := serveWithEnv(t, cfg, env)

			resp, err := http.Get(url + "/v1/agents")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `{"name":"` + tc.agent + `","provider":"anthropic","model":"` + tc.model + `"}`; !strings.Contains(string(b), want) {
				t.Errorf("GET /v1/agents: %s, want it to list %s", b, want)
			}

			resp, err = http.Post(url+"/v1/agents/"+tc.agent+"/s1/messages", "application/json", strings.NewReader(`{"text":"hi there"}`))
			if err != nil {
				t.Fatal(err)
			}
			var m agent.Message
			json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if resp.StatusCode != 200 || m.Text() != "re: hi there" || m.Status != agent.Complete {
				t.Fatalf("POST: %d %+v", resp.StatusCode, m)
			}
			if m.Usage == nil || m.Usage.InputTokens != 9 || m.Usage.OutputTokens != 4 {
				t.Errorf("usage = %+v, want 9 in, 4 out", m.Usage)
			}
			reqs := d.Requests()
			if len(reqs) != 1 {
				t.Fatalf("double got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Model != tc.model || r.MaxTokens != tc.maxTokens || !r.Stream || r.Key != tc.key {
				t.Errorf("request: model %q, max_tokens %d, stream %v, key %q; want %q, %d, true, %q",
					r.Model, r.MaxTokens, r.Stream, r.Key, tc.model, tc.maxTokens, tc.key)
			}
		})
	}
}
