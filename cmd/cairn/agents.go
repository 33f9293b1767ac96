package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/anthropic"
	"github.com/cairn-dev/cairn/agent/openai"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// AgentConfig is one agent in the config file's "agents" list. API keys
// stay out of the file: APIKeyEnv names the environment variable that
// holds one (for anthropic, ANTHROPIC_API_KEY unless set).
type AgentConfig struct {
	Name       string   `json:"name"`
	Provider   string   `json:"provider"` // "echo" (default), "openai" or "anthropic"
	Model      string   `json:"model"`
	BaseURL    string   `json:"base_url"`
	APIKeyEnv  string   `json:"api_key_env"`
	MaxTokens  int64    `json:"max_tokens"` // anthropic only: the output bound of a call (default 4096)
	System     string   `json:"system"`
	MaxHistory int      `json:"max_history"`
	Timeout    Duration `json:"timeout"`

	MCPServers []MCPServerConfig `json:"mcp_servers"` // the agent's MCP servers: see mcp.go
	// Tools names built-in tools offered to the model (agent.BuiltinNames).
	Tools []string `json:"tools"`
	// MaxToolRounds bounds a reply's tool loop (default 8).
	MaxToolRounds int `json:"max_tool_rounds"`
	// CancelOnDisconnect stops a generation whose POST client went away.
	CancelOnDisconnect bool `json:"cancel_on_disconnect"`
	// RequireApproval names tools (built-in, or an MCP server's as
	// "{server}_{tool}") whose calls wait for a person's approval.
	RequireApproval []string `json:"require_approval"`
	// ApprovalTimeout denies a call nobody decided on in time (default 24h).
	ApprovalTimeout Duration `json:"approval_timeout"`

	// HotMessages is how many of a session's latest messages stay in its
	// database; older ones go to the archive (default 200).
	HotMessages int `json:"hot_messages"`
	// ArchiveBatch is the most messages of one archived chunk (default 200).
	ArchiveBatch int `json:"archive_batch"`
	// SessionTTL expires a session idle this long: archived whole, its
	// storage deleted. Absent: 30 days; "0s": never.
	SessionTTL *Duration `json:"session_ttl"`
	// RestoreExpired: a request to an expired session restores it
	// (absent or true) or starts a fresh one and deletes the old archive
	// (false).
	RestoreExpired *bool `json:"restore_expired"`
}

// defaultModel is the model of the default agent when OPENAI_BASE_URL or
// OPENAI_API_KEY is set without CAIRN_MODEL.
const defaultModel = "gpt-4o-mini"

// defaultAnthropicModel is the model of the default agent when
// ANTHROPIC_API_KEY is set (and no OPENAI_*) without CAIRN_MODEL.
const defaultAnthropicModel = "claude-sonnet-4-5"

// agentService builds the agent layer. The config file's agents win; with
// none, OPENAI_BASE_URL or OPENAI_API_KEY (and CAIRN_MODEL) in the
// environment make the "default" agent call an OpenAI-compatible server;
// failing those, ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL, CAIRN_MODEL)
// make it call Anthropic; with none of them, "default" is the offline
// echo provider.
func (m *Main) agentService(cfg Config) (*agent.Service, error) {
	var agents []agent.Agent
	for _, ac := range cfg.Agents {
		a := agent.Agent{Name: ac.Name, Model: ac.Model, System: ac.System, MaxHistory: ac.MaxHistory, Timeout: time.Duration(ac.Timeout)}
		if ac.MaxTokens != 0 && ac.Provider != "anthropic" {
			return nil, fmt.Errorf("agent %q: max_tokens is for provider anthropic only", ac.Name)
		}
		switch ac.Provider {
		case "", "echo":
		case "openai":
			key := ""
			if ac.APIKeyEnv != "" {
				key = m.Getenv(ac.APIKeyEnv)
			}
			a.Provider = openai.New(openai.Config{BaseURL: ac.BaseURL, APIKey: key})
		case "anthropic":
			if ac.MaxTokens < 0 {
				return nil, fmt.Errorf("agent %q: max_tokens %d: want a positive number", ac.Name, ac.MaxTokens)
			}
			env := ac.APIKeyEnv
			if env == "" {
				env = "ANTHROPIC_API_KEY"
			}
			a.Provider = anthropic.New(anthropic.Config{BaseURL: ac.BaseURL, APIKey: m.Getenv(env), MaxTokens: ac.MaxTokens})
		default:
			return nil, fmt.Errorf("agent %q: unknown provider %q (want echo, openai or anthropic)", ac.Name, ac.Provider)
		}
		a.MaxToolRounds, a.CancelOnDisconnect = ac.MaxToolRounds, ac.CancelOnDisconnect
		a.RequireApproval, a.ApprovalTimeout = ac.RequireApproval, time.Duration(ac.ApprovalTimeout)
		a.HotMessages, a.ArchiveBatch = ac.HotMessages, ac.ArchiveBatch
		if ac.SessionTTL != nil {
			switch ttl := time.Duration(*ac.SessionTTL); {
			case ttl < 0:
				return nil, fmt.Errorf("agent %q: session_ttl %s: want a positive duration, or 0s for never", ac.Name, ttl)
			case ttl == 0:
				a.SessionTTL = agent.NeverExpire
			default:
				a.SessionTTL = ttl
			}
		}
		a.DiscardExpired = ac.RestoreExpired != nil && !*ac.RestoreExpired
		for _, name := range ac.Tools {
			t, ok := agent.Builtin(name)
			if !ok {
				return nil, fmt.Errorf("agent %q: unknown built-in tool %q (have %s)", ac.Name, name, strings.Join(agent.BuiltinNames(), ", "))
			}
			a.Tools = append(a.Tools, t)
		}
		if err := m.addMCPToolsets(&a, cfg, ac); err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	if len(agents) == 0 {
		model := m.Getenv("CAIRN_MODEL")
		base, key := m.Getenv("OPENAI_BASE_URL"), m.Getenv("OPENAI_API_KEY")
		antKey := m.Getenv("ANTHROPIC_API_KEY")
		switch {
		case base != "" || key != "":
			if model == "" {
				model = defaultModel
			}
			agents = append(agents, agent.Agent{Name: agent.DefaultAgent, Model: model,
				Provider: openai.New(openai.Config{BaseURL: base, APIKey: key})})
		case antKey != "":
			if model == "" {
				model = defaultAnthropicModel
			}
			agents = append(agents, agent.Agent{Name: agent.DefaultAgent, Model: model,
				Provider: anthropic.New(anthropic.Config{BaseURL: m.Getenv("ANTHROPIC_BASE_URL"), APIKey: antKey})})
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
