package mcpserver_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/mcpserver"
	"github.com/cairn-dev/cairn/sqlite"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	adminSecret = "admin-secret-0123456789"
	lockSecret  = "lock-only-secret-0123456789"
)

// serve runs a runtime with the coordination classes and the agent
// service (echo), served over HTTP on 127.0.0.1 with auth on and the MCP
// endpoint at /mcp, as `cairn serve` mounts it. It returns the base URL.
func serve(tb testing.TB) string {
	tb.Helper()
	eng, err := sqlite.Open(tb.TempDir(), cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	for name, class := range coord.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			tb.Fatal(err)
		}
	}
	svc, err := agent.NewService()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := svc.Register(rt); err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	ms := mcpserver.New(rt, svc)
	ms.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	hs := cairnhttp.NewServer(rt)
	hs.Logger = ms.Logger
	hs.Tokens = []cairnhttp.Token{
		{Name: "admin", Secret: adminSecret, Admin: true},
		{Name: "locks", Secret: lockSecret, Namespaces: []string{"lock"}},
	}
	hs.Routes = []cairnhttp.Route{{Pattern: "/mcp", Handler: ms.Handler(), Name: "mcp"}}
	srv := httptest.NewServer(hs.Handler())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			tb.Errorf("close runtime: %v", err)
		}
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

// bearer adds a bearer token to requests.
type bearer struct{ secret string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.secret)
	return http.DefaultTransport.RoundTrip(r)
}

// connect connects the go-sdk client to the MCP endpoint with a token.
func connect(tb testing.TB, url, secret string) (*mcp.ClientSession, error) {
	tb.Helper()
	hc := &http.Client{}
	if secret != "" {
		hc.Transport = bearer{secret}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url + "/mcp", HTTPClient: hc}, nil)
	if err == nil {
		tb.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

// callTool calls a tool and decodes its structured result into res. It
// returns the error text of a result marked isError.
func callTool(tb testing.TB, cs *mcp.ClientSession, name string, args, res any) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if r.IsError {
		if len(r.Content) == 0 {
			tb.Fatalf("%s: isError with no content", name)
		}
		return r.Content[0].(*mcp.TextContent).Text
	}
	b, err := json.Marshal(r.StructuredContent)
	if err != nil {
		tb.Fatal(err)
	}
	if res != nil {
		if err := json.Unmarshal(b, res); err != nil {
			tb.Fatalf("%s: decode %s: %v", name, b, err)
		}
	}
	return ""
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMCPEndpoint(t *testing.T) {
	url := serve(t)
	cs, err := connect(t, url, adminSecret)
	if err != nil {
		t.Fatal(err)
	}

	var names []string
	for tool, err := range cs.Tools(context.Background(), nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	for _, want := range []string{"agents_list", "agent_send", "agent_history", "lock_acquire", "lock_renew", "lock_release",
		"lock_inspect", "leader_campaign", "leader_resign", "leader_current", "presence_heartbeat", "presence_list",
		"queue_enqueue", "queue_claim", "queue_ack", "queue_nack"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("tool %s missing from %v", want, names)
		}
	}

	t.Run("agents", func(t *testing.T) {
		var list struct{ Agents []agent.AgentInfo }
		callTool(t, cs, "agents_list", map[string]any{}, &list)
		if len(list.Agents) != 1 || list.Agents[0].Name != "default" || list.Agents[0].Provider != "echo" {
			t.Errorf("agents_list = %+v", list)
		}
		var sent mcpserver.SendResult
		if e := callTool(t, cs, "agent_send", map[string]any{"agent": "default", "session": "s1", "text": "hello there"}, &sent); e != "" {
			t.Fatalf("agent_send: %s", e)
		}
		if sent.Text != "echo: hello there" || sent.Status != "complete" || sent.MessageID == "" {
			t.Errorf("agent_send = %+v", sent)
		}
		var page agent.Page
		callTool(t, cs, "agent_history", map[string]any{"agent": "default", "session": "s1"}, &page)
		if len(page.Messages) != 2 || page.Messages[0].ID != sent.MessageID || page.Messages[1].Text() != "hello there" {
			t.Errorf("agent_history = %+v", page)
		}
		callTool(t, cs, "agent_history", map[string]any{"agent": "default", "session": "s1", "limit": 1}, &page)
		if len(page.Messages) != 1 || page.Next != sent.MessageID {
			t.Errorf("agent_history limit 1 = %+v", page)
		}
		if e := callTool(t, cs, "agent_send", map[string]any{"agent": "nobody", "session": "s1", "text": "hi"}, nil); !strings.HasPrefix(e, "not_found: ") {
			t.Errorf("agent_send to an unknown agent: %q, want not_found", e)
		}
		if e := callTool(t, cs, "agent_history", map[string]any{"agent": "default", "session": "s1", "limit": 1000}, nil); !strings.HasPrefix(e, "invalid: ") {
			t.Errorf("agent_history limit 1000: %q, want invalid", e)
		}
	})

	t.Run("lock", func(t *testing.T) {
		var g coord.AcquireResult
		if e := callTool(t, cs, "lock_acquire", map[string]any{"lock": "reports", "owner": "w1", "ttl_ms": 60000}, &g); e != "" {
			t.Fatalf("lock_acquire: %s", e)
		}
		if g.Owner != "w1" || g.Token <= 0 {
			t.Fatalf("lock_acquire = %+v", g)
		}
		if e := callTool(t, cs, "lock_acquire", map[string]any{"lock": "reports", "owner": "w2", "ttl_ms": 60000}, nil); !strings.HasPrefix(e, "conflict: ") {
			t.Errorf("second lock_acquire: %q, want conflict", e)
		}
		var info coord.LockInfo
		callTool(t, cs, "lock_inspect", map[string]any{"lock": "reports"}, &info)
		if info.Holder == nil || info.Holder.Owner != "w1" || info.Holder.Token != g.Token {
			t.Errorf("lock_inspect = %+v", info)
		}
		var rel coord.ReleaseResult
		if e := callTool(t, cs, "lock_release", map[string]any{"lock": "reports", "owner": "w1", "token": g.Token}, &rel); e != "" || !rel.Released {
			t.Fatalf("lock_release = %+v %s", rel, e)
		}
		info = coord.LockInfo{}
		callTool(t, cs, "lock_inspect", map[string]any{"lock": "reports"}, &info)
		if info.Holder != nil || info.LastToken != g.Token {
			t.Errorf("lock_inspect after release = %+v", info)
		}
		if e := callTool(t, cs, "lock_acquire", map[string]any{"lock": "reports", "owner": "w1"}, nil); e == "" {
			t.Error("lock_acquire without ttl_ms succeeded")
		}

		// A waiter whose client gives up leaves the line.
		callTool(t, cs, "lock_acquire", map[string]any{"lock": "busy", "owner": "w1", "ttl_ms": 60000}, &g)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "lock_acquire",
			Arguments: map[string]any{"lock": "busy", "owner": "w2", "ttl_ms": 60000, "wait_ms": 60000}})
		if err == nil {
			t.Fatal("lock_acquire with a wait returned before its client gave up")
		}
		waitFor(t, "the waiter to leave", func() bool {
			info := coord.LockInfo{}
			callTool(t, cs, "lock_inspect", map[string]any{"lock": "busy"}, &info)
			return len(info.Waiters) == 0
		})
	})

	t.Run("leader", func(t *testing.T) {
		var c coord.CampaignResult
		callTool(t, cs, "leader_campaign", map[string]any{"group": "g", "candidate": "a", "ttl_ms": 60000}, &c)
		if !c.Elected || c.Leader != "a" {
			t.Fatalf("leader_campaign = %+v", c)
		}
		callTool(t, cs, "leader_campaign", map[string]any{"group": "g", "candidate": "b", "ttl_ms": 60000}, &c)
		if c.Elected || c.Leader != "a" {
			t.Errorf("second leader_campaign = %+v", c)
		}
		var cur coord.CampaignResult
		callTool(t, cs, "leader_current", map[string]any{"group": "g"}, &cur)
		if cur.Leader != "a" {
			t.Errorf("leader_current = %+v", cur)
		}
		var r coord.ResignResult
		callTool(t, cs, "leader_resign", map[string]any{"group": "g", "candidate": "a", "term": cur.Term}, &r)
		if !r.Resigned {
			t.Errorf("leader_resign = %+v", r)
		}
	})

	t.Run("presence", func(t *testing.T) {
		var hb coord.HeartbeatResult
		callTool(t, cs, "presence_heartbeat", map[string]any{"room": "r", "member": "m1", "ttl_ms": 60000, "metadata": map[string]any{"task": 7}}, &hb)
		if !hb.Joined {
			t.Errorf("presence_heartbeat = %+v", hb)
		}
		var list coord.PresenceList
		callTool(t, cs, "presence_list", map[string]any{"room": "r"}, &list)
		if len(list.Members) != 1 || list.Members[0].Member != "m1" || string(list.Members[0].Metadata) != `{"task":7}` {
			t.Errorf("presence_list = %+v", list)
		}
	})

	t.Run("queue", func(t *testing.T) {
		var enq coord.EnqueueResult
		callTool(t, cs, "queue_enqueue", map[string]any{"queue": "q", "body": map[string]any{"job": 1}}, &enq)
		var claim coord.ClaimResult
		callTool(t, cs, "queue_claim", map[string]any{"queue": "q"}, &claim)
		if len(claim.Messages) != 1 || claim.Messages[0].ID != enq.ID || string(claim.Messages[0].Body) != `{"job":1}` {
			t.Fatalf("queue_claim = %+v", claim)
		}
		var ack coord.AckResult
		callTool(t, cs, "queue_ack", map[string]any{"queue": "q", "id": enq.ID, "receipt": claim.Messages[0].Receipt}, &ack)
		if !ack.OK {
			t.Errorf("queue_ack = %+v", ack)
		}
		claim = coord.ClaimResult{}
		callTool(t, cs, "queue_claim", map[string]any{"queue": "q"}, &claim)
		if len(claim.Messages) != 0 {
			t.Errorf("queue_claim after ack = %+v", claim)
		}
	})
}

func TestMCPEndpointAuth(t *testing.T) {
	url := serve(t)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, tc := range []struct {
		name, secret string
		want         int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "not-the-secret-0123456789", http.StatusUnauthorized},
		{"namespace token", lockSecret, http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodPost, url+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.secret != "" {
			req.Header.Set("Authorization", "Bearer "+tc.secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if _, err := connect(t, url, ""); err == nil {
		t.Error("the go-sdk client connected without a token")
	}
	if _, err := connect(t, url, adminSecret); err != nil {
		t.Errorf("the go-sdk client with the admin token: %v", err)
	}
}
