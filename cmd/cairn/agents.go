package main

import (
	"fmt"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/openai"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// AgentConfig is one agent in the config file's "agents" list. API keys
// stay out of the file: APIKeyEnv names the environment variable that
// holds one.
type AgentConfig struct {
	Name       string   `json:"name"`
	Provider   string   `json:"provider"` // "echo" (default) or "openai"
	Model      string   `json:"model"`
	BaseURL    string   `json:"base_url"`
	APIKeyEnv  string   `json:"api_key_env"`
	System     string   `json:"system"`
	MaxHistory int      `json:"max_history"`
	Timeout    Duration `json:"timeout"`

	MCPServers []MCPServerConfig `json:"mcp_servers"` // the agent's MCP servers: see mcp.go
}

// defaultModel is the model of the default agent when OPENAI_BASE_URL or
// OPENAI_API_KEY is set without CAIRN_MODEL.
const defaultModel = "gpt-4o-mini"

// agentService builds the agent layer. The config file's agents win; with
// none, OPENAI_BASE_URL or OPENAI_API_KEY (and CAIRN_MODEL) in the
// environment make the "default" agent call an OpenAI-compatible server;
// with neither, "default" is the offline echo provider.
func (m *Main) agentService(cfg Config) (*agent.Service, error) {
	var agents []agent.Agent
	for _, ac := range cfg.Agents {
		a := agent.Agent{Name: ac.Name, Model: ac.Model, System: ac.System, MaxHistory: ac.MaxHistory, Timeout: time.Duration(ac.Timeout)}
		switch ac.Provider {
		case "", "echo":
		case "openai":
			key := ""
			if ac.APIKeyEnv != "" {
				key = m.Getenv(ac.APIKeyEnv)
			}
			a.Provider = openai.New(openai.Config{BaseURL: ac.BaseURL, APIKey: key})
		default:
			return nil, fmt.Errorf("agent %q: unknown provider %q (want echo or openai)", ac.Name, ac.Provider)
		}
		if err := m.addMCPToolsets(&a, cfg, ac); err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	if len(agents) == 0 {
		base, key := m.Getenv("OPENAI_BASE_URL"), m.Getenv("OPENAI_API_KEY")
		if base != "" || key != "" {
			model := m.Getenv("CAIRN_MODEL")
			if model == "" {
				model = defaultModel
			}
			agents = append(agents, agent.Agent{Name: agent.DefaultAgent, Model: model,
				Provider: openai.New(openai.Config{BaseURL: base, APIKey: key})})
		}
	}
	svc, err := agent.NewService(agents...)
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	svc.MaxBodyBytes = cfg.MaxBody
	return svc, nil
}

// agentRoutes mounts the agent API. The routes are not public, so they
// take the admin API's auth: a token scoped to namespace "agent" does not
// reach them yet.
func agentRoutes(svc *agent.Service) []cairnhttp.Route {
	h := svc.Handler()
	ns := agent.Namespace
	return []cairnhttp.Route{
		{Pattern: "/v1/agents", Handler: h, Namespace: ns, Name: "agents"},
		{Pattern: "/v1/agents/", Handler: h, Namespace: ns, Name: "agents"},
	}
}
