package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent/mcptools"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"TOKEN": "s3cret", "A": "x"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "Bearer ${TOKEN}", want: "Bearer s3cret"},
		{in: "${A}${A}-${TOKEN}", want: "xx-s3cret"},
		{in: "$$HOME and $5 and $", want: "$HOME and $5 and $"},
		{in: "$${A}", want: "${A}"},
		{in: "${MISSING}", err: "MISSING is not set"},
		{in: "${A", err: "unterminated"},
		{in: "${}", err: "empty"},
	} {
		got, err := expand(tc.in, getenv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expand(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzExpand(f *testing.F) {
	f.Add("Bearer ${TOKEN}")
	f.Add("$$${A}$")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := expand(s, func(string) string { return "v" })
		if err == nil && !strings.Contains(s, "$") && got != s {
			t.Fatalf("expand(%q) = %q: changed a string without '$'", s, got)
		}
	})
}

// TestMCPServersConfig reads "mcp_servers" from a config file and builds
// the toolsets, whose tools are then reached with the configured header,
// its secret taken from the environment.
func TestMCPServersConfig(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "ping", Description: "Answers pong."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "pong"}}}, nil, nil
		})
	mh := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mh.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)

	path := filepath.Join(t.TempDir(), "cairn.json")
	config := `{"agents": [{"name": "helper", "mcp_servers": [
		{"name": "web", "url": "` + hs.URL + `/mcp", "headers": {"Authorization": "Bearer ${WEB_TOKEN}"}},
		{"name": "fs", "command": "mcp-fs", "args": ["--root", "/tmp"], "env": {"DEBUG": "1"}}
	]}]}`
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	m, _, _ := newTestMain("", map[string]string{"WEB_TOKEN": "tok-123"})
	cfg, _, err := m.loadConfig([]string{"--config", path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.agentService(cfg); err != nil {
		t.Fatalf("agentService: %v", err)
	}
	sets, err := m.mcpToolsets(cfg, cfg.Agents[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || sets[0].Name() != "web" || sets[1].Name() != "fs" {
		t.Fatalf("toolsets = %v", sets)
	}
	web := sets[0].(*mcptools.Server)
	t.Cleanup(func() { web.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tools, err := web.Tools(ctx)
	if err != nil || len(tools) != 1 || tools[0].Name != "web_ping" {
		t.Fatalf("Tools = %+v, %v", tools, err)
	}
	out, err := tools[0].Call(ctx, nil)
	if err != nil || string(out) != `"pong"` {
		t.Fatalf("web_ping = %s, %v", out, err)
	}

	for _, tc := range []struct {
		name string
		env  map[string]string
		mcp  []MCPServerConfig
		want string
	}{
		{"unset variable", nil, []MCPServerConfig{{Name: "web", URL: "http://h/mcp", Headers: map[string]string{"Authorization": "Bearer ${WEB_TOKEN}"}}},
			`agent "a": mcp server "web": headers: Authorization: environment variable WEB_TOKEN is not set`},
		{"twice", nil, []MCPServerConfig{{Name: "x", Command: "c"}, {Name: "x", Command: "c"}}, `mcp server "x" is listed twice`},
		{"both", nil, []MCPServerConfig{{Name: "x", Command: "c", URL: "http://h"}}, "set command or url, not both"},
		{"neither", nil, []MCPServerConfig{{Name: "x"}}, "set command (stdio) or url"},
		{"bad name", nil, []MCPServerConfig{{Name: "a b", Command: "c"}}, "only ASCII letters"},
	} {
		m, _, _ := newTestMain("", tc.env)
		cfg := DefaultConfig()
		cfg.Agents = []AgentConfig{{Name: "a", MCPServers: tc.mcp}}
		_, err := m.agentService(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestServeMCP talks to the /mcp endpoint of `cairn serve` with the
// go-sdk client: with auth off, then with a token.
func TestServeMCP(t *testing.T) {
	call := func(t *testing.T, url, secret string) (string, error) {
		hc := &http.Client{}
		if secret != "" {
			hc.Transport = bearerTransport(secret)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).
			Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url + "/mcp", HTTPClient: hc}, nil)
		if err != nil {
			return "", err
		}
		defer cs.Close()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "agent_send",
			Arguments: map[string]any{"agent": "default", "session": "m1", "text": "over mcp"}})
		if err != nil {
			return "", err
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}

	t.Run("auth off", func(t *testing.T) {
		url := startServer(t, testConfig(t))
		got, err := call(t, url, "")
		if err != nil || !strings.Contains(got, `"text":"echo: over mcp"`) {
			t.Fatalf("agent_send = %s, %v", got, err)
		}
	})
	t.Run("auth on", func(t *testing.T) {
		cfg := testConfig(t)
		secret := "mcp-admin-secret-0123"
		cfg.Tokens = []cairnhttp.Token{{Name: "admin", Secret: secret, Admin: true}}
		url := startServer(t, cfg)
		if _, err := call(t, url, ""); err == nil {
			t.Fatal("connected without a token")
		}
		got, err := call(t, url, secret)
		if err != nil || !strings.Contains(got, `"text":"echo: over mcp"`) {
			t.Fatalf("agent_send = %s, %v", got, err)
		}
	})
}

// bearerTransport adds a bearer token to each request.
type bearerTransport string

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}
