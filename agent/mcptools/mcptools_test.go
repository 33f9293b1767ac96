package mcptools

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMain doubles as a stdio MCP server (the test server's tools) when
// run with MCPTOOLS_TEST_SERVER=1: the stdio tests start the test binary
// itself as their subprocess.
func TestMain(m *testing.M) {
	if os.Getenv("MCPTOOLS_TEST_SERVER") == "1" {
		srv := testServer(func() { fmt.Fprintln(os.Stderr, "slow: started") })
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			fmt.Fprintln(os.Stderr, "test server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type greetArgs struct {
	Name string `json:"name" jsonschema:"who to greet"`
}

type sumArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

type sumResult struct {
	Sum int `json:"sum"`
}

// testServer is an MCP server with the tools the tests call. slow is
// called when the tool "slow" starts.
func testServer(slow func()) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "greet", Description: "Greets someone."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in greetArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello, " + in.Name}}}, nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "fail", Description: "Always fails."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			return nil, nil, errors.New("boom")
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "sum", Description: "Adds."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in sumArgs) (*mcp.CallToolResult, sumResult, error) {
			return nil, sumResult{Sum: in.A + in.B}, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "Waits for a minute."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			slow()
			select {
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			case <-time.After(time.Minute):
				return nil, "done", nil
			}
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "info", Description: "Says who runs it."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, map[string]any, error) {
			return nil, map[string]any{"pid": os.Getpid(), "secret": os.Getenv("CAIRN_TEST_SECRET"), "given": os.Getenv("GIVEN")}, nil
		})
	return srv
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newServer returns a Server for cfg, closed when the test ends.
func newServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s.Logger = testLogger()
	tb.Cleanup(func() { s.Close() })
	return s
}

// stdioConfig runs the test binary as a stdio MCP server.
func stdioConfig(name string) Config {
	return Config{Name: name, Command: os.Args[0], Env: map[string]string{"MCPTOOLS_TEST_SERVER": "1", "GIVEN": "yes"}}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// toolMap returns the tools of s by name.
func toolMap(tb testing.TB, s *Server) map[string]agent.Tool {
	tb.Helper()
	tools, err := s.Tools(ctxT(tb))
	if err != nil {
		tb.Fatalf("Tools: %v", err)
	}
	m := make(map[string]agent.Tool)
	for _, t := range tools {
		m[t.Name] = t
	}
	return m
}

// call calls tool name of m with input.
func call(tb testing.TB, m map[string]agent.Tool, name, input string) (string, error) {
	tb.Helper()
	t, ok := m[name]
	if !ok {
		tb.Fatalf("no tool %q among %v", name, keys(m))
	}
	out, err := t.Call(ctxT(tb), json.RawMessage(input))
	return string(out), err
}

func keys(m map[string]agent.Tool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// checkTools runs the checks every transport of the test server passes.
func checkTools(t *testing.T, s *Server, prefix string) {
	t.Helper()
	m := toolMap(t, s)
	for _, n := range []string{"greet", "fail", "sum", "slow", "info"} {
		if _, ok := m[prefix+n]; !ok {
			t.Fatalf("tool %s missing: %v", prefix+n, keys(m))
		}
	}
	g := m[prefix+"greet"]
	if g.Description != "Greets someone." || !strings.Contains(string(g.InputSchema), `"name"`) {
		t.Errorf("greet = %q %s", g.Description, g.InputSchema)
	}
	if got, err := call(t, m, prefix+"greet", `{"name":"ada"}`); err != nil || got != `"hello, ada"` {
		t.Errorf("greet = %s, %v; want \"hello, ada\"", got, err)
	}
	if got, err := call(t, m, prefix+"sum", `{"a":2,"b":3}`); err != nil || got != `{"sum":5}` {
		t.Errorf("sum = %s, %v; want {\"sum\":5}", got, err)
	}
	_, err := call(t, m, prefix+"fail", `{}`)
	if want := "mcp server " + s.Name() + ": tool fail failed: boom"; err == nil || err.Error() != want {
		t.Errorf("fail: err = %v, want %q", err, want)
	}
	_, err = call(t, m, prefix+"sum", `{"a":"two"}`)
	if err == nil || !strings.HasPrefix(err.Error(), "mcp server "+s.Name()+": tool sum") {
		t.Errorf("sum with bad input: err = %v", err)
	}
	_, err = s.call(ctxT(t), "nope", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "mcp server "+s.Name()+": tool nope") {
		t.Errorf("unknown tool: err = %v", err)
	}
}

func TestStdio(t *testing.T) {
	t.Setenv("CAIRN_TEST_SECRET", "do-not-leak")
	s := newServer(t, stdioConfig("go"))
	checkTools(t, s, "go_")
	got, err := call(t, toolMap(t, s), "go_info", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Secret, Given string
	}
	json.Unmarshal([]byte(got), &info)
	if info.Secret != "" || info.Given != "yes" {
		t.Errorf("subprocess environment: %s; want GIVEN and not CAIRN_TEST_SECRET", got)
	}
}

// current returns the connection of s.
func current(s *Server) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// pid returns the process id of s's subprocess, or 0.
func pid(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.proc == nil || s.cur.ended() {
		return 0
	}
	return s.cur.proc.cmd.Process.Pid
}

func TestStdioKilledMidCall(t *testing.T) {
	s := newServer(t, stdioConfig("go"))
	m := toolMap(t, s)
	first := pid(s)
	errc := make(chan error, 1)
	go func() {
		_, err := m["go_slow"].Call(context.Background(), nil)
		errc <- err
	}()
	waitFor(t, "the slow call to start", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cur != nil && strings.Contains(s.cur.proc.stderr.last(), "slow: started")
	})
	killed := time.Now()
	if err := current(s).proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "mcp server go: tool slow: connection lost") || !strings.Contains(err.Error(), "killed") {
			t.Errorf("err = %v, want connection lost ... killed", err)
		}
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("the call returned %v after the kill", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return 10 s after its server was killed")
	}
	// The next call starts the server again.
	got, err := call(t, m, "go_greet", `{"name":"again"}`)
	if err != nil || got != `"hello, again"` {
		t.Fatalf("greet after the kill = %s, %v", got, err)
	}
	if p := pid(s); p == 0 || p == first {
		t.Errorf("pid after restart = %d, first was %d", p, first)
	}
}

func TestBackoff(t *testing.T) {
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	s := newServer(t, Config{Name: "crash", Command: "/bin/sh",
		Args: []string{"-c", `echo x >> "$STARTS"; echo "oops: cannot start" >&2; exit 3`},
		Env:  map[string]string{"STARTS": starts}})
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	s.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	count := func() int {
		b, _ := os.ReadFile(starts)
		return strings.Count(string(b), "x")
	}
	ctx := ctxT(t)
	_, err := s.Tools(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "mcp server crash: connect:") ||
		!strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "oops: cannot start") {
		t.Fatalf("first Tools: err = %v", err)
	}
	// The first failure is retried at once, the second waits MinBackoff.
	if _, err := s.Tools(ctx); err == nil || count() != 2 {
		t.Fatalf("second Tools: err = %v, starts = %d, want 2", err, count())
	}
	_, err = s.Tools(ctx)
	if err == nil || !strings.Contains(err.Error(), "next try in 1s") || !strings.Contains(err.Error(), "oops") || count() != 2 {
		t.Fatalf("third Tools: err = %v, starts = %d, want a backoff error and 2 starts", err, count())
	}
	advance(time.Second)
	if _, err := s.Tools(ctx); err == nil || count() != 3 {
		t.Fatalf("Tools after 1 s: err = %v, starts = %d, want 3", err, count())
	}
	advance(time.Second)
	if _, err := s.Tools(ctx); err == nil || !strings.Contains(err.Error(), "next try in 1s") || count() != 3 {
		t.Fatalf("Tools 1 s later: err = %v, starts = %d, want the doubled backoff", err, count())
	}
	for i, want := range []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute} {
		if got := s.backoff(i); got != want {
			t.Errorf("backoff(%d) = %v, want %v", i, got, want)
		}
	}
}

func TestCloseKillsAndFailsCalls(t *testing.T) {
	s := newServer(t, stdioConfig("go"))
	m := toolMap(t, s)
	p := current(s).proc
	errc := make(chan error, 1)
	go func() {
		_, err := m["go_slow"].Call(context.Background(), nil)
		errc <- err
	}()
	waitFor(t, "the slow call to start", func() bool { return strings.Contains(p.stderr.last(), "slow: started") })
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	default:
		t.Error("the subprocess is still running after Close")
	}
	select {
	case err := <-errc:
		if err == nil || err.Error() != "mcp server go: tool slow: closed" {
			t.Errorf("call in flight: err = %v, want closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not return after Close")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if _, err := s.Tools(ctxT(t)); err == nil || err.Error() != "mcp server go: closed" {
		t.Errorf("Tools after Close: err = %v", err)
	}
}

func TestCloseDuringConnect(t *testing.T) {
	// A server that never answers the initialization.
	s := newServer(t, Config{Name: "mute", Command: "/bin/sh", Args: []string{"-c", "exec sleep 60"}})
	s.StopTimeout = 100 * time.Millisecond
	errc := make(chan error, 1)
	go func() {
		_, err := s.Tools(context.Background())
		errc <- err
	}()
	waitFor(t, "the connect to start", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.dialing != nil })
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v during a connect", d)
	}
	select {
	case err := <-errc:
		if err == nil || err.Error() != "mcp server mute: closed" {
			t.Errorf("Tools: err = %v, want closed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tools did not return after Close")
	}
}

func TestCallHonoursContext(t *testing.T) {
	s := newServer(t, stdioConfig("go"))
	m := toolMap(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := m["go_slow"].Call(ctx, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "mcp server go: tool slow:") {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	// The connection is still good.
	if got, err := call(t, m, "go_greet", `{"name":"b"}`); err != nil || got != `"hello, b"` {
		t.Fatalf("greet = %s, %v", got, err)
	}
}

// httpServer is the test server over streamable HTTP on a loopback
// address that survives a restart.
type httpServer struct {
	addr    string
	mcp     *mcp.Server
	srv     *http.Server
	started chan struct{} // a send per slow call that starts
}

const testToken = "Bearer s3cret"

// startHTTP serves a fresh test server on addr ("127.0.0.1:0" for any).
func startHTTP(tb testing.TB, addr string) *httpServer {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	h := &httpServer{addr: ln.Addr().String(), started: make(chan struct{}, 10)}
	h.mcp = testServer(func() { h.started <- struct{}{} })
	mh := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return h.mcp }, nil)
	h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != testToken {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		mh.ServeHTTP(w, r)
	})}
	go h.srv.Serve(ln)
	tb.Cleanup(h.kill)
	return h
}

// kill stops the server at once, dropping its connections.
func (h *httpServer) kill() { h.srv.Close() }

func (h *httpServer) url() string { return "http://" + h.addr + "/mcp" }

func TestHTTP(t *testing.T) {
	h := startHTTP(t, "127.0.0.1:0")
	s := newServer(t, Config{Name: "web", URL: h.url(), Headers: map[string]string{"Authorization": testToken}})
	checkTools(t, s, "web_")

	// A tool added on the server shows at the next Tools, through the
	// list_changed notification (the refresh interval is long).
	mcp.AddTool(h.mcp, &mcp.Tool{Name: "late", Description: "Added later."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			return nil, "late", nil
		})
	waitFor(t, "the new tool", func() bool { _, ok := toolMap(t, s)["web_late"]; return ok })

	t.Run("no token", func(t *testing.T) {
		s := newServer(t, Config{Name: "web", URL: h.url()})
		_, err := s.Tools(ctxT(t))
		if err == nil || !strings.HasPrefix(err.Error(), "mcp server web: connect:") {
			t.Fatalf("err = %v, want a connect error", err)
		}
	})
}

func TestHTTPKilledMidCall(t *testing.T) {
	h := startHTTP(t, "127.0.0.1:0")
	s := newServer(t, Config{Name: "web", URL: h.url(), Headers: map[string]string{"Authorization": testToken}})
	m := toolMap(t, s)
	errc := make(chan error, 1)
	go func() {
		_, err := m["web_slow"].Call(context.Background(), nil)
		errc <- err
	}()
	select {
	case <-h.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow call did not start")
	}
	killed := time.Now()
	h.kill()
	select {
	case err := <-errc:
		if err == nil || !strings.HasPrefix(err.Error(), "mcp server web: tool slow:") {
			t.Errorf("err = %v, want a tool slow error", err)
		}
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("the call returned %v after the kill", d)
		}
		t.Logf("after %v: %v", time.Since(killed), err)
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return 10 s after its server was killed")
	}
	// A new server on the same address: once the end of the connection
	// is noticed (its event stream fails to reconnect), the next call
	// reconnects.
	c := current(s)
	startHTTP(t, h.addr)
	waitFor(t, "the connection to end", c.ended)
	if got, err := call(t, m, "web_greet", `{"name":"again"}`); err != nil || got != `"hello, again"` {
		t.Fatalf("greet after the restart = %s, %v", got, err)
	}
}

func TestHTTPRestartedBetweenCalls(t *testing.T) {
	h := startHTTP(t, "127.0.0.1:0")
	s := newServer(t, Config{Name: "web", URL: h.url(), Headers: map[string]string{"Authorization": testToken}})
	m := toolMap(t, s)
	if _, err := call(t, m, "web_greet", `{"name":"a"}`); err != nil {
		t.Fatal(err)
	}
	c := current(s)
	h.kill()
	startHTTP(t, h.addr)
	// The broken event stream is reconnected once, a second later, to the
	// new server, which does not know the session: the connection ends.
	// (A call made before that may fail: it goes out on a pooled TCP
	// connection the old server closed.)
	waitFor(t, "the connection to end", c.ended)
	if got, err := call(t, m, "web_greet", `{"name":"b"}`); err != nil || got != `"hello, b"` {
		t.Fatalf("greet after the restart = %s, %v", got, err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{Name: "a", Command: "x"}, ""},
		{Config{Name: "a-b_9", URL: "https://h/mcp", Headers: map[string]string{"A": "b"}}, ""},
		{Config{Command: "x"}, "must be 1 to 32 bytes"},
		{Config{Name: strings.Repeat("a", 33), Command: "x"}, "must be 1 to 32 bytes"},
		{Config{Name: "a.b", Command: "x"}, "only ASCII letters"},
		{Config{Name: "a"}, "set command (stdio) or url"},
		{Config{Name: "a", Command: "x", URL: "http://h"}, "not both"},
		{Config{Name: "a", URL: "ftp://h"}, "must be an http or https URL"},
		{Config{Name: "a", URL: "http://h", Args: []string{"x"}}, "args and env are for a command"},
		{Config{Name: "a", Command: "x", Headers: map[string]string{"A": "b"}}, "headers are for a url"},
	} {
		_, err := New(tc.cfg)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestToolName(t *testing.T) {
	long := strings.Repeat("x", 70)
	for _, tc := range []struct {
		server, tool string
		used         []string
		want         string
	}{
		{"fs", "read_file", nil, "fs_read_file"},
		{"fs", "get-sum", nil, "fs_get-sum"},
		{"fs", "a.b/c d", nil, "fs_a_b_c_d"},
		{"fs", "é", nil, "fs__"},
		{"fs", "a.b", []string{"fs_a_b"}, "fs_a_b_" + hash8("fs", "a.b")},
		{"fs", long, nil, ("fs_" + long)[:55] + "_" + hash8("fs", long)},
	} {
		used := map[string]bool{}
		for _, u := range tc.used {
			used[u] = true
		}
		if got := toolName(tc.server, tc.tool, used); got != tc.want {
			t.Errorf("toolName(%q, %q) = %q, want %q", tc.server, tc.tool, got, tc.want)
		}
	}
}

func hash8(server, tool string) string {
	sum := sha256.Sum256([]byte(server + "\x00" + tool))
	return hex.EncodeToString(sum[:4])
}

func FuzzToolName(f *testing.F) {
	f.Add("fs", "read_file")
	f.Add("x", strings.Repeat("é", 40))
	f.Fuzz(func(t *testing.T, server, tool string) {
		a := toolName(server, tool, nil)
		b := toolName(server, tool, map[string]bool{a: true})
		for _, n := range []string{a, b} {
			if n == "" || len(n) > maxToolName {
				t.Fatalf("toolName(%q, %q) = %q: length %d", server, tool, n, len(n))
			}
			for i := 0; i < len(n); i++ {
				if !nameByte(n[i]) {
					t.Fatalf("toolName(%q, %q) = %q: byte %q", server, tool, n, n[i])
				}
			}
		}
		if a == b {
			t.Fatalf("a used name was returned again: %q", a)
		}
	})
}

func TestOutput(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      *mcp.CallToolResult
		want     string
		wantText string
	}{
		{"text", &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "a"}, &mcp.TextContent{Text: "b"}}}, `"a\nb"`, "a\nb"},
		{"empty", &mcp.CallToolResult{}, `""`, ""},
		{"structured", &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: `{"t":1}`}}, StructuredContent: map[string]any{"t": 1}}, `{"t":1}`, `{"t":1}`},
		{"mixed", &mcp.CallToolResult{Content: []mcp.Content{
			&mcp.TextContent{Text: "see"},
			&mcp.ImageContent{MIMEType: "image/png", Data: []byte("12345")},
			&mcp.ResourceLink{URI: "file:///a", Name: "a"},
			&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "file:///b", MIMEType: "text/plain", Text: "bee"}},
			&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "file:///c", Blob: []byte("xy")}},
		}}, `[{"text":"see","type":"text"},{"bytes":5,"mimeType":"image/png","type":"image"},{"name":"a","type":"resource_link","uri":"file:///a"},` +
			`{"mimeType":"text/plain","text":"bee","type":"resource","uri":"file:///b"},{"bytes":2,"type":"resource","uri":"file:///c"}]`, "see"},
	} {
		got, text := output(tc.res)
		if string(got) != tc.want || text != tc.wantText {
			t.Errorf("%s: output = %s, %q; want %s, %q", tc.name, got, text, tc.want, tc.wantText)
		}
	}
}

func TestTail(t *testing.T) {
	tl := &tail{log: testLogger(), server: "s"}
	fmt.Fprint(tl, "one\ntwo\n\nthr")
	fmt.Fprint(tl, "ee\nfour\nfi")
	if got, want := tl.last(), "two | three | four | fi"; got != want {
		t.Errorf("last = %q, want %q", got, want)
	}
	tl.Write([]byte(strings.Repeat("z", 2000) + "\n"))
	lines := strings.Split(tl.last(), " | ")
	if got := lines[len(lines)-1]; len(got) != tailLine || !strings.HasPrefix(got, "fizz") {
		t.Errorf("a long line is not cut to %d bytes: %q", tailLine, got)
	}
}
