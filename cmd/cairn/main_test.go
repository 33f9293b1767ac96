package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/coder/websocket"
)

// syncBuffer is a bytes.Buffer safe for a server goroutine writing while
// the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestMain returns a Main on buffers, with an environment of its own
// (nothing from the process's).
func newTestMain(stdin string, env map[string]string) (*Main, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	m := NewMain(strings.NewReader(stdin), stdout, stderr)
	m.Getenv = func(k string) string { return env[k] }
	return m, stdout, stderr
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs a command line in-process.
func run(tb testing.TB, env map[string]string, stdin string, args ...string) result {
	tb.Helper()
	m, stdout, stderr := newTestMain(stdin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := m.Run(ctx, args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// want fails unless r exited with code.
func (r result) want(tb testing.TB, code int, args ...string) result {
	tb.Helper()
	if r.code != code {
		tb.Fatalf("cairn %s: exit code %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// testConfig is the configuration of an in-process server on a fresh data
// directory and a free loopback port.
func testConfig(tb testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = tb.TempDir()
	cfg.Durability = "process"
	cfg.LogLevel = "error"
	return cfg
}

// serveInProcess runs Main.serve, with env as its environment, until ctx
// ends and returns the server's URL and the channel serve's result
// arrives on.
func serveInProcess(tb testing.TB, ctx context.Context, cfg Config, env map[string]string) (string, <-chan error) {
	tb.Helper()
	m, _, stderr := newTestMain("", env)
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- m.serve(ctx, cfg, ready) }()
	select {
	case addr := <-ready:
		return "http://" + addr, errc
	case err := <-errc:
		tb.Fatalf("serve: %v\n%s", err, stderr.String())
	case <-time.After(10 * time.Second):
		tb.Fatalf("serve: not ready after 10 s\n%s", stderr.String())
	}
	return "", nil
}

// startServer runs a server for the rest of the test; the cleanup stops it
// and checks that it stopped cleanly.
func startServer(tb testing.TB, cfg Config) string {
	tb.Helper()
	return serveWithEnv(tb, cfg, nil)
}

// serveWithEnv is startServer with env as the server's environment.
func serveWithEnv(tb testing.TB, cfg Config, env map[string]string) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	url, errc := serveInProcess(tb, ctx, cfg, env)
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("serve did not return 30 s after its context ended")
		}
	})
	return url
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

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		r := run(t, nil, "", arg).want(t, ExitOK, arg)
		if got, want := r.stdout, "cairn "+Version+"\n"; got != want {
			t.Errorf("cairn %s: got %q, want %q", arg, got, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stderr
	}{
		{[]string{}, ExitUsage, "Usage:"},
		{[]string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{[]string{"kv"}, ExitUsage, "Usage:"},
		{[]string{"kv", "get", "kv", "box"}, ExitUsage, "Usage:"},
		{[]string{"kv", "frob", "kv", "box", "k"}, ExitUsage, "Usage:"},
		{[]string{"kv", "--bogus", "get", "kv", "box", "k"}, ExitUsage, "bogus"},
		{[]string{"objects", "inspect", "kv"}, ExitUsage, "Usage:"},
		{[]string{"alarm", "set", "kv", "box", "someday"}, ExitUsage, "neither an RFC 3339 time nor a duration"},
		{[]string{"serve", "--bogus"}, ExitUsage, "bogus"},
		{[]string{"serve", "extra"}, ExitUsage, "unexpected arguments"},
		{[]string{"serve", "--token", "nocolons"}, ExitUsage, "NAME:SECRET:SCOPE"},
		{[]string{"serve", "--token", "a:short:admin"}, ExitUsage, "at least 16 characters"},
		{[]string{"serve", "--sync", "sometimes"}, ExitUsage, "unknown sync mode"},
	} {
		name := strings.Join(tc.args, " ")
		if name == "" {
			name = "no arguments"
		}
		t.Run(name, func(t *testing.T) {
			r := run(t, nil, "", tc.args...).want(t, tc.code, tc.args...)
			if !strings.Contains(r.stderr, tc.out) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.out)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		r := run(t, nil, "", "help").want(t, ExitOK, "help")
		if !strings.Contains(r.stdout, "cairn serve") {
			t.Errorf("help: stdout %q does not list serve", r.stdout)
		}
	})
	t.Run("serve --help", func(t *testing.T) {
		r := run(t, nil, "", "serve", "--help").want(t, ExitOK, "serve", "--help")
		if !strings.Contains(r.stderr, "Usage: cairn serve") || !strings.Contains(r.stderr, "-addr") {
			t.Errorf("serve --help: stderr %q lacks the usage and flags", r.stderr)
		}
	})
	t.Run("kv --help", func(t *testing.T) {
		r := run(t, nil, "", "kv", "--help").want(t, ExitOK, "kv", "--help")
		if !strings.Contains(r.stderr, "Exit codes") {
			t.Errorf("kv --help: stderr %q lacks the exit codes", r.stderr)
		}
	})
}

func TestServeRefusesOpenAddressWithoutToken(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"serve", "--addr", "0.0.0.0:0", "--data", data}
	r := run(t, nil, "", args...)
	if r.code == ExitOK {
		t.Fatalf("cairn %s: exit code 0, want failure", strings.Join(args, " "))
	}
	for _, want := range []string{"0.0.0.0:0", "token"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not mention %q", r.stderr, want)
		}
	}
	if strings.Contains(r.stdout, "listening") {
		t.Errorf("stdout %q: the refused server says it listens", r.stdout)
	}
	// A refused configuration leaves no trace: with the default --data,
	// the refused command would leave a cairn-data directory in the
	// working directory.
	if _, err := os.Stat(data); err == nil {
		t.Errorf("the refused serve created its data directory %s", data)
	}

	t.Run("with a token it listens", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Addr = "0.0.0.0:0"
		cfg.Tokens = []cairnhttp.Token{{Name: "admin", Secret: "admin-secret-0123456789", Admin: true}}
		url := startServer(t, cfg)
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
		resp, err := http.Get("http://127.0.0.1:" + port + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("healthz: got %d, want 200", resp.StatusCode)
		}
	})
}

// A server stopped as soon as it is ready stops, cleanly. Serve and Shutdown
// run on different goroutines and must not race.
func TestServeStopsRightAfterStart(t *testing.T) {
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		_, errc := serveInProcess(t, ctx, testConfig(t), nil)
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: serve did not return 5 s after its context ended", i)
		}
	}
}

func TestClientCommands(t *testing.T) {
	const token = "admin-secret-0123456789"
	cfg := testConfig(t)
	cfg.Tokens = []cairnhttp.Token{{Name: "admin", Secret: token, Admin: true}}
	url := startServer(t, cfg)
	env := map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": token}
	cairn := func(code int, args ...string) result {
		t.Helper()
		return run(t, env, "", args...).want(t, code, args...)
	}
	lines := func(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

	t.Run("kv", func(t *testing.T) {
		cairn(ExitOK, "kv", "put", "kv", "box", "greeting", "hello")
		if got := cairn(ExitOK, "kv", "get", "kv", "box", "greeting").stdout; got != "hello" {
			t.Errorf("kv get: got %q, want %q", got, "hello")
		}
		run(t, env, "from stdin", "kv", "put", "kv", "box", "piped").want(t, ExitOK)
		if got := cairn(ExitOK, "kv", "get", "kv", "box", "piped").stdout; got != "from stdin" {
			t.Errorf("kv get piped: got %q, want %q", got, "from stdin")
		}
		cairn(ExitOK, "kv", "put", "kv", "box", "dir/a", "1")
		cairn(ExitOK, "kv", "put", "kv", "box", "dir/b", "2")
		got := lines(cairn(ExitOK, "kv", "list", "kv", "box", "--prefix", "dir/").stdout)
		if len(got) != 2 || strings.Fields(got[0])[0] != "dir/a" || strings.Fields(got[1])[0] != "dir/b" ||
			strings.Fields(got[0])[1] != "1" || strings.Fields(got[1])[1] != "2" {
			t.Errorf("kv list --prefix dir/: got %q, want dir/a 1 and dir/b 2", got)
		}
		if got := lines(cairn(ExitOK, "kv", "list", "--limit", "1", "kv", "box").stdout); len(got) != 1 || strings.Fields(got[0])[0] != "dir/a" {
			t.Errorf("kv list --limit 1: got %q, want dir/a alone", got)
		}
		var list struct{ Entries []struct{ Key, Value string } }
		if err := json.Unmarshal([]byte(cairn(ExitOK, "kv", "list", "kv", "box", "--json").stdout), &list); err != nil || len(list.Entries) != 4 {
			t.Errorf("kv list --json: got %+v (%v), want 4 entries", list, err)
		}
		cairn(ExitOK, "kv", "delete", "kv", "box", "greeting")
		cairn(ExitNotFound, "kv", "get", "kv", "box", "greeting")
		cairn(ExitNotFound, "kv", "delete", "kv", "box", "greeting")
		cairn(ExitRejected, "kv", "put", "kv", "box", strings.Repeat("k", 2049), "v")
	})

	t.Run("call", func(t *testing.T) {
		if got := strings.TrimSpace(cairn(ExitOK, "call", "kv", "box", "Put", `{"key":"c","value":"3"}`).stdout); got != "null" {
			t.Errorf("call Put: got %q, want null", got)
		}
		if got := strings.TrimSpace(cairn(ExitOK, "call", "kv", "box", "Get", `{"key":"c"}`).stdout); got != `{"value":"3"}` {
			t.Errorf("call Get: got %q, want {\"value\":\"3\"}", got)
		}
		cairn(ExitNotFound, "call", "kv", "box", "Nope")
		cairn(ExitRejected, "call", "kv", "box", "Put", `{`)
		cairn(ExitNotFound, "call", "nosuch", "box", "Get", `{}`)
	})

	t.Run("sql", func(t *testing.T) {
		cairn(ExitOK, "sql", "kv", "box", "CREATE TABLE t (a INTEGER, b TEXT)")
		cairn(ExitOK, "sql", "kv", "box", "INSERT INTO t VALUES (?, ?)", "1", "one")
		cairn(ExitOK, "sql", "kv", "box", "INSERT INTO t VALUES (?, ?)", "2", `"two words"`)
		got := lines(cairn(ExitOK, "sql", "kv", "box", "SELECT a, b FROM t WHERE a >= ? ORDER BY a", "1").stdout)
		want := [][]string{{"a", "b"}, {"1", "one"}, {"2", "two", "words"}}
		if len(got) != len(want) {
			t.Fatalf("sql select: got %q, want %q", got, want)
		}
		for i := range want {
			if f := strings.Fields(got[i]); strings.Join(f, " ") != strings.Join(want[i], " ") {
				t.Errorf("sql select line %d: got %q, want %q", i, got[i], want[i])
			}
		}
		var res cairnhttp.SQLResponse
		if err := json.Unmarshal([]byte(cairn(ExitOK, "sql", "--json", "kv", "box", "SELECT count(*) AS n FROM t").stdout), &res); err != nil ||
			fmt.Sprint(res.Rows) != "[[2]]" {
			t.Errorf("sql --json: got %+v (%v), want rows [[2]]", res, err)
		}
		cairn(ExitRejected, "sql", "kv", "box", "SELEC 1")
		cairn(ExitRejected, "sql", "kv", "box", "SELECT * FROM _cairn_kv")
	})

	t.Run("objects", func(t *testing.T) {
		if out := cairn(ExitOK, "objects", "list", "kv").stdout; !strings.Contains(out, "box") || !strings.HasPrefix(out, "NAME") {
			t.Errorf("objects list: got %q, want a table listing box", out)
		}
		var page struct {
			Objects []cairnhttp.ObjectJSON
		}
		if err := json.Unmarshal([]byte(cairn(ExitOK, "objects", "list", "kv", "--json").stdout), &page); err != nil || len(page.Objects) != 1 || page.Objects[0].Name != "box" {
			t.Errorf("objects list --json: got %+v (%v), want box alone", page, err)
		}
		var o cairnhttp.ObjectJSON
		if err := json.Unmarshal([]byte(cairn(ExitOK, "objects", "inspect", "kv", "box").stdout), &o); err != nil || o.Name != "box" || o.Namespace != "kv" || len(o.ID) != 64 {
			t.Errorf("objects inspect: got %+v (%v), want kv/box", o, err)
		}
		cairn(ExitNotFound, "objects", "inspect", "kv", "never-written")
	})

	t.Run("alarm", func(t *testing.T) {
		var a cairnhttp.AlarmJSON
		before := time.Now()
		if err := json.Unmarshal([]byte(cairn(ExitOK, "alarm", "set", "kv", "box", "1h").stdout), &a); err != nil || a.At == nil {
			t.Fatalf("alarm set: got %+v (%v)", a, err)
		}
		if d := a.At.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
			t.Errorf("alarm set 1h: got %v, %v from now", a.At, d)
		}
		set := *a.At
		a = cairnhttp.AlarmJSON{}
		if err := json.Unmarshal([]byte(cairn(ExitOK, "alarm", "get", "kv", "box").stdout), &a); err != nil || a.At == nil || a.At.Sub(set).Abs() > time.Millisecond {
			t.Errorf("alarm get: got %+v (%v), want %v", a, err, set)
		}
		at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
		cairn(ExitOK, "alarm", "set", "kv", "box", at.Format(time.RFC3339))
		a = cairnhttp.AlarmJSON{}
		if err := json.Unmarshal([]byte(cairn(ExitOK, "alarm", "get", "kv", "box").stdout), &a); err != nil || a.At == nil || !a.At.Equal(at) {
			t.Errorf("alarm get after RFC 3339 set: got %+v (%v), want %v", a, err, at)
		}
		cairn(ExitOK, "alarm", "delete", "kv", "box")
		a = cairnhttp.AlarmJSON{}
		if err := json.Unmarshal([]byte(cairn(ExitOK, "alarm", "get", "kv", "box").stdout), &a); err != nil || a.At != nil {
			t.Errorf("alarm get after delete: got %+v (%v), want null", a, err)
		}
	})

	t.Run("usage", func(t *testing.T) {
		out := lines(cairn(ExitOK, "usage").stdout)
		found := false
		for _, l := range out[1:] {
			if f := strings.Fields(l); len(f) == 6 && f[0] == "kv" && f[1] == "1" && f[3] != "0" {
				found = true
			}
		}
		if !strings.HasPrefix(out[0], "NAMESPACE") || !found {
			t.Errorf("usage: got %q, want a row for kv with 1 object and requests", out)
		}
	})

	t.Run("objects delete", func(t *testing.T) {
		cairn(ExitOK, "objects", "delete", "kv", "box")
		cairn(ExitNotFound, "kv", "get", "kv", "box", "dir/a")
		if out := cairn(ExitOK, "kv", "list", "kv", "box").stdout; out != "" {
			t.Errorf("kv list after delete: got %q, want nothing", out)
		}
	})

	t.Run("flags override the environment", func(t *testing.T) {
		r := run(t, map[string]string{"CAIRN_URL": "http://127.0.0.1:1", "CAIRN_TOKEN": "wrong-token-0123456789"}, "",
			"kv", "list", "--url", url, "--token", token, "kv", "box")
		r.want(t, ExitOK)
	})
}

// `cairn sql` prints numbers as SQLite returned them.
func TestClientSQLPrintsNumbersAsStored(t *testing.T) {
	url := startServer(t, testConfig(t))
	env := map[string]string{"CAIRN_URL": url}
	r := run(t, env, "", "sql", "kv", "box", "SELECT 1234567 AS n, 9007199254740993 AS big, 2.5 AS f").want(t, ExitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("sql: got %q, want a header and one row", r.stdout)
	}
	if got, want := strings.Fields(lines[1]), []string{"1234567", "9007199254740993", "2.5"}; !slices.Equal(got, want) {
		t.Errorf("sql row: got %q, want %q", got, want)
	}
	r = run(t, env, "", "sql", "--json", "kv", "box", "SELECT ? AS v", "9007199254740993").want(t, ExitOK)
	if !strings.Contains(r.stdout, "[[9007199254740993]]") {
		t.Errorf("sql --json with an integer argument: got %s, want rows [[9007199254740993]]", r.stdout)
	}
}

// Keys reach the server as given: a key is data, not a path, whatever its
// slashes and dots.
func TestClientKeysAreNotPaths(t *testing.T) {
	url := startServer(t, testConfig(t))
	env := map[string]string{"CAIRN_URL": url}
	keys := []string{"plain", "dir/", "a//b", "./x", "y/.", "../../../kv/other/kv/k", "%2F", "?q=1#f"}
	for i, k := range keys {
		r := run(t, env, "", "kv", "put", "kv", "box", k, fmt.Sprint(i))
		if r.code != ExitOK {
			t.Errorf("kv put %q: exit %d, want 0; stderr: %s", k, r.code, r.stderr)
		}
	}
	var list struct{ Entries []struct{ Key string } }
	if err := json.Unmarshal([]byte(run(t, env, "", "kv", "list", "--json", "kv", "box").stdout), &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list.Entries {
		got = append(got, e.Key)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("keys stored in kv/box: got %q, want %q", got, want)
	}
	if out := run(t, env, "", "objects", "list", "kv").stdout; strings.Contains(out, "other") {
		t.Errorf("a key's dots reached another object:\n%s", out)
	}
}

func TestClientExitCodes(t *testing.T) {
	const token = "admin-secret-0123456789"
	cfg := testConfig(t)
	cfg.Tokens = []cairnhttp.Token{
		{Name: "admin", Secret: token, Admin: true},
		{Name: "rooms", Secret: "rooms-secret-0123456789", Namespaces: []string{"room"}},
	}
	url := startServer(t, cfg)

	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		code  int
		inErr string
	}{
		{"ok", map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": token}, []string{"usage"}, ExitOK, ""},
		{"missing key", map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": token}, []string{"kv", "get", "kv", "box", "absent"}, ExitNotFound, "not_found"},
		{"wrong token", map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": "wrong-secret-0123456789"}, []string{"kv", "get", "kv", "box", "k"}, ExitAuth, "unauthorized"},
		{"no token", map[string]string{"CAIRN_URL": url}, []string{"usage"}, ExitAuth, "unauthorized"},
		{"token without admin scope", map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": "rooms-secret-0123456789"}, []string{"objects", "list", "kv"}, ExitAuth, "forbidden"},
		{"token without the namespace", map[string]string{"CAIRN_URL": url, "CAIRN_TOKEN": "rooms-secret-0123456789"}, []string{"call", "kv", "box", "Get", `{"key":"k"}`}, ExitAuth, "forbidden"},
		{"unreachable", map[string]string{"CAIRN_URL": dead, "CAIRN_TOKEN": token}, []string{"kv", "get", "kv", "box", "k"}, ExitFailure, "refused"},
		{"unreachable usage", map[string]string{"CAIRN_URL": dead}, []string{"usage"}, ExitFailure, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.env, "", tc.args...).want(t, tc.code, tc.args...)
			if !strings.Contains(r.stderr, tc.inErr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.inErr)
			}
		})
	}
}

// 8. Graceful shutdown.

// Shutdown closes WebSockets whose clients do not read (a suspended tab, a
// dead peer) without waiting out each one's close handshake in turn.
func TestShutdownIsNotHeldUpByIdleSockets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, errc := serveInProcess(t, ctx, testConfig(t), nil)
	const sockets = 3
	for i := 0; i < sockets; i++ {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(base, "http")+fmt.Sprintf("/v1/objects/room/idle-%d/", i), nil)
		dcancel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow() // never read: the close handshake gets no answer
	}
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
		// One handshake timeout (5 s) at most, not one per socket.
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("shutdown with %d idle sockets took %v", sockets, d.Round(time.Second))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return 30 s after its context ended")
	}
}

func TestShutdownLosesNoAcknowledgedWrite(t *testing.T) {
	cfg := testConfig(t)
	cfg.Durability = "disk"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, errc := serveInProcess(t, ctx, cfg, nil)

	// An open WebSocket sees the shutdown as a close frame, 1001.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	ws, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/objects/room/lobby/?user=a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if _, b, err := ws.Read(dctx); err != nil || !strings.Contains(string(b), "joined") {
		t.Fatalf("websocket: got %q, %v, want the joined message", b, err)
	}
	wsClosed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				wsClosed <- err
				return
			}
		}
	}()

	// Writers PUT distinct keys until the server stops answering.
	type ack struct{ object, key string }
	const writers = 8
	var (
		mu    sync.Mutex
		acks  []ack
		nAck  atomic.Int64
		wg    sync.WaitGroup
		first = make(chan struct{})
	)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	defer client.CloseIdleConnections()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			object := fmt.Sprintf("shutdown-%d", w%3)
			for j := 0; ; j++ {
				key := fmt.Sprintf("w%d-%d", w, j)
				req, _ := http.NewRequest("PUT", base+"/v1/objects/kv/"+object+"/"+key, strings.NewReader(key))
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return
				}
				mu.Lock()
				acks = append(acks, ack{object, key})
				mu.Unlock()
				if nAck.Add(1) == 1 {
					close(first)
				}
			}
		}()
	}
	<-first
	waitFor(t, "200 acknowledged writes", func() bool { return nAck.Load() >= 200 })
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return 30 s after its context ended")
	}
	wg.Wait()

	select {
	case err := <-wsClosed:
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Errorf("websocket at shutdown: got %v (close status %d), want close status 1001", err, got)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("websocket still open 10 s after shutdown")
	}

	// Every acknowledged write is there after a restart.
	base2 := startServer(t, cfg)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d writes acknowledged", len(acks))
	missing := 0
	for _, a := range acks {
		resp, err := client.Get(base2 + "/v1/objects/kv/" + a.object + "/" + a.key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != a.key {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged %s/%s: got %d %q after restart, want 200 %q", a.object, a.key, resp.StatusCode, b, a.key)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged writes lost", missing, len(acks))
	}
}

// TestServeSyncModes serves with each sync mode and writes through it.
func TestServeSyncModes(t *testing.T) {
	for _, mode := range []string{"auto", "syncfs", "files"} {
		t.Run(mode, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.Data = t.TempDir()
			cfg.Sync = mode
			url := startServer(t, cfg)
			req, _ := http.NewRequest("PUT", url+"/v1/objects/kv/box/k", strings.NewReader("v"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				t.Fatalf("PUT at sync %s: %s", mode, resp.Status)
			}
		})
	}
}
