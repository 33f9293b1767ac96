package main

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/mcptools"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/mcpserver"
)

// MCPServerConfig is one entry of an agent's "mcp_servers": an MCP server
// whose tools the agent's model may call, reached by running Command
// (stdio) or at URL (streamable HTTP). Values of Env and Headers may name
// variables of cairn's environment as ${NAME}, to keep secrets out of the
// file.
type MCPServerConfig struct {
	Name    string            `json:"name"`
	Command string            `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// addMCPToolsets adds to a the toolsets of the MCP servers of its
// configuration ac. They connect on first use.
func (m *Main) addMCPToolsets(a *agent.Agent, cfg Config, ac AgentConfig) error {
	sets, err := m.mcpToolsets(cfg, ac)
	a.Toolsets = append(a.Toolsets, sets...)
	return err
}

// mcpToolsets builds the toolsets of an agent's MCP servers.
func (m *Main) mcpToolsets(cfg Config, ac AgentConfig) ([]agent.Toolset, error) {
	if len(ac.MCPServers) == 0 {
		return nil, nil
	}
	level, err := parseLevel(cfg.LogLevel)
	if err != nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	seen := make(map[string]bool)
	var sets []agent.Toolset
	for _, sc := range ac.MCPServers {
		if seen[sc.Name] {
			return nil, fmt.Errorf("agent %q: mcp server %q is listed twice", ac.Name, sc.Name)
		}
		seen[sc.Name] = true
		mc := mcptools.Config{Name: sc.Name, Command: sc.Command, Args: sc.Args, URL: sc.URL}
		if mc.Env, err = m.expandAll(sc.Env); err != nil {
			return nil, fmt.Errorf("agent %q: mcp server %q: env: %w", ac.Name, sc.Name, err)
		}
		if mc.Headers, err = m.expandAll(sc.Headers); err != nil {
			return nil, fmt.Errorf("agent %q: mcp server %q: headers: %w", ac.Name, sc.Name, err)
		}
		s, err := mcptools.New(mc)
		if err != nil {
			return nil, fmt.Errorf("agent %q: %w", ac.Name, err)
		}
		s.Logger = logger
		sets = append(sets, s)
	}
	return sets, nil
}

// expandAll returns vals with ${NAME} references replaced by the
// environment's values (expand).
func (m *Main) expandAll(vals map[string]string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(vals))
	for _, k := range keys {
		v, err := expand(vals[k], m.Getenv)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// expand replaces each ${NAME} in s by getenv(NAME); an unset or empty
// variable is an error (a header or key silently empty would fail later,
// and less clearly). "$$" is a literal "$"; any other '$' stays as is.
func expand(s string, getenv func(string) string) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			s = s[i+2:]
		case '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name := s[i+2 : i+j]
			if name == "" {
				return "", fmt.Errorf("empty ${} in %q", s)
			}
			v := getenv(name)
			if v == "" {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(v)
			s = s[i+j+1:]
		default:
			b.WriteByte('$')
			s = s[i+1:]
		}
	}
}

// mcpRoutes mounts cairn's own MCP endpoint at /mcp. Its tools reach the
// agent sessions and every coordination namespace, so the route takes the
// admin API's auth (a token scoped to some namespaces does not reach it).
func mcpRoutes(rt *cairn.Runtime, agents *agent.Service, cfg Config, logger *slog.Logger) []cairnhttp.Route {
	s := mcpserver.New(rt, agents)
	s.MaxBodyBytes = cfg.MaxBody
	s.Version = Version
	s.Logger = logger
	return []cairnhttp.Route{{Pattern: "/mcp", Handler: s.Handler(), Name: "mcp"}}
}
