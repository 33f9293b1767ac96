package mcptools

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/internal/peertest"
)

// The reference MCP server from npm, installed by
// .ci/setup.d/25-mcp-node.sh.
const everythingPkg = "@modelcontextprotocol/server-everything"

// everything returns the paths of node and of the server's entry point,
// or ends the test (see peertest.Missing).
func everything(tb testing.TB) (node, script string) {
	tb.Helper()
	node = peertest.Node(tb)
	dir := peertest.NodeModules(tb, "mcp-node", everythingPkg)
	return node, filepath.Join(dir, everythingPkg, "dist", "index.js")
}

// checkEverything calls the tools every transport of server-everything
// serves.
func checkEverything(t *testing.T, s *Server) map[string]agent.Tool {
	t.Helper()
	m := toolMap(t, s)
	for _, n := range []string{"echo", "get-sum", "get-structured-content", "trigger-long-running-operation"} {
		if _, ok := m["everything_"+n]; !ok {
			t.Fatalf("tool everything_%s missing: %v", n, keys(m))
		}
	}
	if e := m["everything_echo"]; e.Description == "" || !strings.Contains(string(e.InputSchema), `"message"`) {
		t.Errorf("echo = %q %s", e.Description, e.InputSchema)
	}
	if got, err := call(t, m, "everything_echo", `{"message":"hi"}`); err != nil || got != `"Echo: hi"` {
		t.Errorf("echo = %s, %v", got, err)
	}
	if got, err := call(t, m, "everything_get-sum", `{"a":2,"b":3}`); err != nil || got != `"The sum of 2 and 3 is 5."` {
		t.Errorf("get-sum = %s, %v", got, err)
	}
	got, err := call(t, m, "everything_get-structured-content", `{"location":"Chicago"}`)
	if err != nil || !strings.HasPrefix(got, "{") || !strings.Contains(got, `"temperature":36`) {
		t.Errorf("get-structured-content = %s, %v; want the structured object", got, err)
	}
	// Bad input: the server refuses it, and the error says which server
	// and tool.
	_, err = call(t, m, "everything_get-sum", `{"a":"two"}`)
	if err == nil || !strings.HasPrefix(err.Error(), "mcp server everything: tool get-sum") {
		t.Errorf("get-sum with a string: err = %v", err)
	}
	t.Logf("get-sum with a string: %v", err)
	_, err = s.call(ctxT(t), "no-such-tool", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "mcp server everything: tool no-such-tool") {
		t.Errorf("unknown tool: err = %v", err)
	}
	return m
}

// longCall starts the long-running tool (30 s) and returns the channel
// its error arrives on.
func longCall(m map[string]agent.Tool) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := m["everything_trigger-long-running-operation"].Call(context.Background(), []byte(`{"duration":30,"steps":30}`))
		errc <- err
	}()
	return errc
}

// wantPromptError waits for the error of a call whose server was killed.
func wantPromptError(t *testing.T, errc <-chan error, killed time.Time) {
	t.Helper()
	select {
	case err := <-errc:
		if err == nil || !strings.HasPrefix(err.Error(), "mcp server everything: tool trigger-long-running-operation:") {
			t.Errorf("err = %v", err)
		}
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("the call returned %v after the kill", d)
		}
		t.Logf("%v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	case <-time.After(15 * time.Second):
		t.Fatal("the call did not return 15 s after its server was killed")
	}
}

func TestEverythingStdio(t *testing.T) {
	node, script := everything(t)
	s := newServer(t, Config{Name: "everything", Command: node, Args: []string{script, "stdio"}})
	m := checkEverything(t, s)

	// Killed mid-call: the call fails at once, the next one restarts it.
	first := pid(s)
	p := current(s).proc
	before := p.writes.Load()
	errc := longCall(m)
	waitFor(t, "the call to be sent", func() bool { return p.writes.Load() > before })
	killed := time.Now()
	p.cmd.Process.Kill()
	wantPromptError(t, errc, killed)
	if got, err := call(t, m, "everything_echo", `{"message":"again"}`); err != nil || got != `"Echo: again"` {
		t.Fatalf("echo after the kill = %s, %v", got, err)
	}
	if now := pid(s); now == 0 || now == first {
		t.Errorf("pid after the restart = %d, first was %d", now, first)
	}
}

// freePort returns a loopback port nobody listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
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

// startEverythingHTTP runs server-everything in streamable HTTP mode on
// port and waits until it listens. The cleanup kills it.
func startEverythingHTTP(tb testing.TB, node, script string, port int) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(node, script, "streamableHttp")
	cmd.Env = append(childEnv(os.Getenv, nil), "PORT="+strconv.Itoa(port))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	tb.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "listening on port") {
		select {
		case <-exited:
			tb.Fatalf("server-everything exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server-everything not listening after 20 s: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd
}

// countCalls counts the tools/call requests the server accepted (it
// answered with the response's headers).
type countCalls struct{ n atomic.Int64 }

func (c *countCalls) RoundTrip(r *http.Request) (*http.Response, error) {
	isCall := false
	if r.Method == http.MethodPost && r.Body != nil {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		isCall = bytes.Contains(b, []byte(`"tools/call"`))
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && isCall && resp.StatusCode == http.StatusOK {
		c.n.Add(1)
	}
	return resp, err
}

func TestEverythingHTTP(t *testing.T) {
	node, script := everything(t)
	port := freePort(t)
	cmd := startEverythingHTTP(t, node, script, port)
	s := newServer(t, Config{Name: "everything", URL: fmt.Sprintf("http://127.0.0.1:%d/mcp", port),
		Headers: map[string]string{"X-Test": "1"}})
	calls := &countCalls{}
	s.HTTPClient = &http.Client{Transport: calls}
	m := checkEverything(t, s)

	before := calls.n.Load()
	errc := longCall(m)
	waitFor(t, "the call to be sent", func() bool { return calls.n.Load() > before })
	killed := time.Now()
	cmd.Process.Kill()
	wantPromptError(t, errc, killed)

	// Started again on the same port, it is reached by the next call.
	startEverythingHTTP(t, node, script, port)
	if got, err := call(t, m, "everything_echo", `{"message":"again"}`); err != nil || got != `"Echo: again"` {
		t.Fatalf("echo after the restart = %s, %v", got, err)
	}
}
