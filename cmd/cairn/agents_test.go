package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
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
		{name: "unknown provider", agents: []AgentConfig{{Name: "a", Provider: "nope"}}, wantErr: true},
		{name: "openai without model", agents: []AgentConfig{{Name: "a", Provider: "openai"}}, wantErr: true},
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
