package console_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the schedules the browser adds name a zone

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/builtin"
	"github.com/cairn-dev/cairn/console"
	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/internal/peertest"
	"github.com/cairn-dev/cairn/sqlite"
	"github.com/coder/websocket"
)

// The console in a real browser: headless Chromium (Debian's package)
// driven by playwright-core from npm, both installed by
// .ci/setup.d/40-chromium.sh, against a real server on loopback. The
// browser side is testdata/e2e.mjs; it asks this test (ASK lines on its
// stdout, answered on its stdin) to act on the server or to check over the
// API what the browser did.

// slowProvider streams a reasoning piece and then its reply a word at a
// time, slowly enough that a test sees the reply grow.
type slowProvider struct{}

func (slowProvider) Name() string { return "slow" }

func (slowProvider) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		last := ""
		for _, m := range req.Messages {
			if m.Role == agent.User {
				last = m.Text()
			}
		}
		sleep := func() bool {
			select {
			case <-ctx.Done():
				yield(agent.Event{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "slow: %v", ctx.Err())})
				return false
			case <-time.After(120 * time.Millisecond):
				return true
			}
		}
		// Asked to, it calls the tool "lookup" in its first round (the
		// reply so far is the last message in later rounds), with an ID
		// of its own in the session.
		firstRound := len(req.Messages) == 0 || req.Messages[len(req.Messages)-1].Role != agent.Assistant
		if firstRound && strings.Contains(last, "[tool]") {
			id := fmt.Sprintf("call_%d", len(req.Messages))
			for _, piece := range []string{`{"q":`, `"weather"}`} {
				if !sleep() || !yield(agent.Event{Type: agent.EventToolCallDelta, ToolCall: &agent.ToolCall{Index: 0, ID: id, Name: "lookup", Input: piece}}) {
					return
				}
			}
			if !yield(agent.Event{Type: agent.EventToolCall, ToolCall: &agent.ToolCall{ID: id, Name: "lookup", Input: `{"q":"weather"}`}}) {
				return
			}
			yield(agent.Event{Type: agent.EventDone, FinishReason: "tool_calls"})
			return
		}
		if !yield(agent.Event{Type: agent.EventReasoning, Text: "Considering the question."}) {
			return
		}
		words := strings.SplitAfter("this is a slow reply, streamed one word at a time, to: ", " ")
		words = append(words, last)
		for _, w := range words {
			if !sleep() || !yield(agent.Event{Type: agent.EventText, Text: w}) {
				return
			}
		}
		if !yield(agent.Event{Type: agent.EventUsage, Usage: &agent.Usage{InputTokens: 3, OutputTokens: int64(len(words))}}) {
			return
		}
		yield(agent.Event{Type: agent.EventDone, FinishReason: "stop"})
	}
}

// testServer is a cairn server wired as cmd/cairn wires `cairn serve`:
// built-in and coordination classes, agents, metrics and the console.
type testServer struct {
	url    string
	secret string // the admin token's; "" with auth off
	cutter *streamCutter
}

// streamCutter drops the connection of the first approval of session
// careful/e2e-approve that continues a reply, right after the reply's
// first text-delta event, as a network failure would; the page is to
// resume the reply's stream from the last event it saw. It records the
// Last-Event-ID of the resumed streams.
type streamCutter struct {
	next http.Handler

	mu      sync.Mutex
	cut     bool
	resumed []string
}

func (c *streamCutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/agents/careful/e2e-approve/messages/") && strings.HasSuffix(p, "/stream") {
		c.mu.Lock()
		c.resumed = append(c.resumed, r.Header.Get("Last-Event-ID"))
		c.mu.Unlock()
	}
	if r.Method == http.MethodPost && strings.HasPrefix(p, "/v1/agents/careful/e2e-approve/approvals/") {
		c.mu.Lock()
		first := !c.cut
		c.cut = true
		c.mu.Unlock()
		if first {
			w = &cutWriter{ResponseWriter: w}
		}
	}
	c.next.ServeHTTP(w, r)
}

// resumes returns the Last-Event-ID headers of the resumed streams.
func (c *streamCutter) resumes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resumed)
}

// cutWriter closes the connection under a response once a text-delta
// event went out; later writes fail.
type cutWriter struct {
	http.ResponseWriter

	mu   sync.Mutex
	gone bool
}

func (w *cutWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return 0, net.ErrClosed
	}
	n, err := w.ResponseWriter.Write(b)
	if err == nil && bytes.Contains(b, []byte("event: text-delta")) {
		rc := http.NewResponseController(w.ResponseWriter)
		rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
		w.gone = true
	}
	return n, err
}

func (w *cutWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.gone {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func startServer(tb testing.TB, secret string) *testServer {
	tb.Helper()
	eng, err := sqlite.Open(tb.TempDir(), cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	rt.Logger = slog.New(slog.DiscardHandler)
	for _, classes := range []map[string]cairn.Class{builtin.Classes(), coord.Classes()} {
		for name, class := range classes {
			if _, err := rt.Register(name, class); err != nil {
				tb.Fatal(err)
			}
		}
	}
	lookup := agent.Tool{Name: "lookup", Description: "Looks something up.",
		Call: func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{"found":"<b>sunny</b>"}`), nil
		}}
	gated := lookup
	gated.NeedsApproval = true
	svc, err := agent.NewService(agent.Agent{Name: agent.DefaultAgent},
		agent.Agent{Name: "slow", Provider: slowProvider{}, Model: "slow-1", Tools: []agent.Tool{lookup}},
		agent.Agent{Name: "careful", Provider: slowProvider{}, Model: "slow-careful", Tools: []agent.Tool{gated}})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := svc.Register(rt); err != nil {
		tb.Fatal(err)
	}
	metrics := cairnhttp.NewMetrics(rt)
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	srv := cairnhttp.NewServer(rt)
	srv.Metrics = metrics
	srv.Logger = rt.Logger
	if secret != "" {
		srv.Tokens = []cairnhttp.Token{{Name: "admin", Secret: secret, Admin: true}}
	}
	h := console.Handler()
	cutter := &streamCutter{next: svc.Handler()}
	srv.Routes = []cairnhttp.Route{
		{Pattern: "/v1/agents", Handler: svc.Handler(), Namespace: agent.Namespace, Name: "agents"},
		{Pattern: "/v1/agents/", Handler: cutter, Namespace: agent.Namespace, Name: "agents"},
		{Pattern: "GET /{$}", Handler: h, Public: true, Name: "console"},
		{Pattern: "GET " + console.Prefix, Handler: h, Public: true, Name: "console"},
	}
	locks, err := coord.NewLocks(rt)
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range coord.LocksRoutes {
		srv.Routes = append(srv.Routes, cairnhttp.Route{Pattern: p, Handler: locks, Namespace: "locks", Name: "locks"})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := rt.Close(ctx); err != nil {
			tb.Errorf("close runtime: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return &testServer{url: "http://" + ln.Addr().String(), secret: secret, cutter: cutter}
}

// do calls the API with the admin token; it fails the test on a status
// other than want (0: any).
func (s *testServer) do(tb testing.TB, method, path string, body any, want int) (int, []byte) {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if s.secret != "" {
		req.Header.Set("Authorization", "Bearer "+s.secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if want != 0 && resp.StatusCode != want {
		tb.Fatalf("%s %s: got %d %s, want %d", method, path, resp.StatusCode, out, want)
	}
	return resp.StatusCode, out
}

// Untrusted strings the browser must show as text and never run.
const (
	xssKey   = `<script>alert('key')</script>`
	xssValue = `<img src=x onerror="alert('value')">`
	xssName  = `xss-<script>alert('name')</script>`
	xssUser  = `<script>alert('user')</script>`
)

// seed stores what the pages show: KV keys over more than one page, a few
// hundred objects, a 100,000-message transcript, and coordination objects.
func (s *testServer) seed(tb testing.TB) {
	tb.Helper()
	kv := "/v1/objects/kv/e2e-kv/"
	s.do(tb, "PUT", kv+"color", []byte("blue"), 200)
	s.do(tb, "PUT", kv+url.PathEscape(xssKey), []byte(xssValue), 200)
	batch := map[string]string{}
	for i := range 120 {
		batch[fmt.Sprintf("item-%03d", i)] = fmt.Sprintf("value %d", i)
	}
	for k, v := range batch {
		s.do(tb, "POST", "/v1/objects/kv/e2e-kv/rpc/Put", map[string]string{"key": k, "value": v}, 200)
	}
	s.do(tb, "PUT", "/v1/objects/kv/"+url.PathEscape(xssName)+"/k", []byte("v"), 200)

	// Objects to page through: 300, written in parallel.
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	names := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range names {
				req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/v1/objects/kv/bulk-%05d/k", s.url, i), strings.NewReader("v"))
				if s.secret != "" {
					req.Header.Set("Authorization", "Bearer "+s.secret)
				}
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("bulk-%05d: status %d", i, resp.StatusCode)
					}
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range 300 {
		names <- i
	}
	close(names)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}

	// A 100,000-message transcript. The session's schema comes from its
	// first message; the rest is written in one SQL statement into the
	// agent's table (agent/store.go), older than that first message.
	s.do(tb, "POST", "/v1/agents/default/big/messages", map[string]string{"text": "the newest question"}, 200)
	const bigN = 100000
	s.do(tb, "POST", "/v1/admin/objects/agent/"+url.PathEscape("default/big")+"/sql", map[string]any{"sql": `
WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?)
INSERT INTO messages (seq, id, role, status, created_at, model, parts)
SELECT n - 1000000, printf('msg_%020x', n), CASE n % 2 WHEN 1 THEN 'user' ELSE 'assistant' END, 'complete',
  1700000000000 + n * 1000, CASE n % 2 WHEN 1 THEN '' ELSE 'seed' END,
  CAST(CASE
    WHEN n % 2 = 1 THEN json_array(json_object('type', 'text', 'text', 'question ' || n))
    WHEN n % 10 = 0 THEN json_array(
      json_object('type', 'reasoning', 'text', 'thinking about ' || n),
      json_object('type', 'tool-call', 'toolCallId', 'call_' || n, 'toolName', 'lookup', 'input', json_object('n', n)),
      json_object('type', 'tool-result', 'toolCallId', 'call_' || n, 'toolName', 'lookup', 'output', json_object('found', n)),
      json_object('type', 'text', 'text', 'answer ' || n))
    ELSE json_array(json_object('type', 'text', 'text', 'answer ' || n))
  END AS BLOB)
FROM c`, "args": []any{bigN}}, 200)
	_, page := s.do(tb, "GET", "/v1/agents/default/big/messages?limit=3", nil, 200)
	var hist struct {
		Messages []struct{ ID string }
		Next     string
	}
	json.Unmarshal(page, &hist)
	if len(hist.Messages) != 3 || hist.Next == "" {
		tb.Fatalf("the seeded transcript does not page: %s", page)
	}

	// Coordination.
	s.do(tb, "POST", "/v1/objects/lock/reports/acquire", map[string]any{"owner": "agent-1", "ttl_ms": 600000}, 200)
	// Two locks of the lock table: one held, one acquired and released.
	s.do(tb, "POST", "/v1/locks/reports-table/acquire", map[string]any{"owner": "agent-2", "ttl_ms": 600000}, 200)
	s.do(tb, "POST", "/v1/locks/reports-done/acquire", map[string]any{"owner": "agent-3", "ttl_ms": 600000}, 200)
	s.do(tb, "POST", "/v1/locks/reports-done/release", map[string]any{"owner": "agent-3", "token": 1}, 200)
	s.do(tb, "POST", "/v1/objects/leader/main/campaign", map[string]any{"candidate": "node-a", "ttl_ms": 600000}, 200)
	s.do(tb, "POST", "/v1/objects/presence/lobby/heartbeat", map[string]any{"member": "ann", "ttl_ms": 600000, "metadata": map[string]string{"status": "reviewing"}}, 200)
	q := "/v1/objects/queue/jobs/"
	s.do(tb, "POST", q+"config", map[string]any{"max_attempts": 1, "backoff_ms": 1000, "max_backoff_ms": 60000}, 200)
	for i := range 4 {
		s.do(tb, "POST", q+"enqueue", map[string]any{"body": map[string]any{"report": i}}, 200)
	}
	_, claimed := s.do(tb, "POST", q+"claim", map[string]any{"max": 2, "visibility_ms": 600000}, 200)
	var c struct {
		Messages []struct {
			ID      int64
			Receipt string
		}
	}
	json.Unmarshal(claimed, &c)
	if len(c.Messages) != 2 {
		tb.Fatalf("claim: %s", claimed)
	}
	s.do(tb, "POST", q+"nack", map[string]any{"id": c.Messages[0].ID, "receipt": c.Messages[0].Receipt, "reason": "<b>broken</b> input"}, 200)
}

// approveSession is the session whose tool calls wait for approval.
const approveSession = "/v1/agents/careful/e2e-approve"

// lastReply returns the newest assistant message of approveSession.
func (s *testServer) lastReply(tb testing.TB) (agent.Message, error) {
	tb.Helper()
	_, b := s.do(tb, "GET", approveSession+"/messages?limit=10", nil, 200)
	var p struct{ Messages []agent.Message }
	json.Unmarshal(b, &p)
	for _, m := range p.Messages {
		if m.Role == agent.Assistant {
			return m, nil
		}
	}
	return agent.Message{}, fmt.Errorf("no reply over the API: %s", b)
}

// toolParts returns the last tool call of m and its result.
func toolParts(m agent.Message) (call, result *agent.Part) {
	for i := range m.Parts {
		switch p := &m.Parts[i]; p.Type {
		case agent.PartToolCall:
			call, result = p, nil
		case agent.PartToolResult:
			if call != nil && p.ToolCallID == call.ToolCallID {
				result = p
			}
		}
	}
	return call, result
}

func findChromium(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("CAIRN_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	peertest.Missing(tb, "chromium is not on PATH (run .ci/setup.d/40-chromium.sh)")
	return ""
}

// screenshots returns where the screenshots go: $CAIRN_SCREENSHOTS, or a
// temporary directory.
func screenshots(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("CAIRN_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
		return d
	}
	return tb.TempDir()
}

func TestConsoleInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := findChromium(t)
	node := peertest.Node(t)
	modules := peertest.NodeModules(t, "playwright", "playwright-core")
	shots := screenshots(t)

	t.Run("auth on", func(t *testing.T) {
		s := startServer(t, "console-e2e-secret-0123456789")
		s.seed(t)
		var room *websocket.Conn
		t.Cleanup(func() {
			if room != nil {
				room.CloseNow()
			}
		})
		runScript(t, node, modules, chromium, shots, s, "full", func(ask string) error {
			switch ask {
			case "kv-edited":
				if _, b := s.do(t, "GET", "/v1/objects/kv/e2e-kv/color", nil, 200); string(b) != "teal-from-browser" {
					return fmt.Errorf("color is %q over the API, want teal-from-browser", b)
				}
			case "kv-added":
				if _, b := s.do(t, "GET", "/v1/objects/kv/e2e-kv/"+url.PathEscape("new/key.txt"), nil, 200); string(b) != "line one\nline two" {
					return fmt.Errorf("new/key.txt is %q over the API", b)
				}
			case "kv-deleted":
				if code, _ := s.do(t, "GET", "/v1/objects/kv/e2e-kv/item-000", nil, 0); code != 404 {
					return fmt.Errorf("item-000: status %d over the API, want 404", code)
				}
			case "sql-done":
				_, b := s.do(t, "POST", "/v1/admin/objects/kv/e2e-kv/sql", map[string]string{"sql": "SELECT body FROM notes ORDER BY id"}, 200)
				if !strings.Contains(string(b), `alert('sql')`) {
					return fmt.Errorf("notes over the API: %s", b)
				}
			case "alarm-set":
				_, b := s.do(t, "GET", "/v1/admin/objects/kv/e2e-kv/alarm", nil, 200)
				if !strings.Contains(string(b), `"at":"2031-`) {
					return fmt.Errorf("alarm over the API: %s", b)
				}
			case "room-connect":
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				u := "ws" + strings.TrimPrefix(s.url, "http") + "/v1/objects/room/ws-room/?user=" + url.QueryEscape(xssUser)
				c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + s.secret}}})
				if err != nil {
					return err
				}
				room = c
				if _, _, err := c.Read(ctx); err != nil { // the join announcement: accepted
					return err
				}
			case "chat-done":
				_, b := s.do(t, "GET", "/v1/agents/slow/e2e-chat/messages?limit=10", nil, 200)
				var p struct {
					Messages []agent.Message
				}
				json.Unmarshal(b, &p)
				if len(p.Messages) != 2 || p.Messages[1].Role != agent.User || p.Messages[0].Status != agent.Complete {
					return fmt.Errorf("history over the API: %s", b)
				}
				if got := p.Messages[1].Text(); !strings.Contains(got, "<script>alert('chat')</script>") {
					return fmt.Errorf("the user message is %q over the API", got)
				}
			case "approval-pending":
				_, b := s.do(t, "GET", approveSession+"/approvals", nil, 200)
				var p struct{ Approvals []agent.PendingApproval }
				json.Unmarshal(b, &p)
				if len(p.Approvals) != 1 || p.Approvals[0].ToolName != "lookup" {
					return fmt.Errorf("approvals over the API: %s", b)
				}
			case "approval-done":
				m, err := s.lastReply(t)
				if err != nil {
					return err
				}
				call, result := toolParts(m)
				if m.Status != agent.Complete || call == nil || result == nil || call.Approval == nil || call.Approval.Approved == nil || !*call.Approval.Approved ||
					!strings.Contains(string(result.Output), "sunny") || !strings.HasPrefix(m.Text(), "this is a slow reply") {
					return fmt.Errorf("the approved reply over the API: %+v", m)
				}
				// The page lost the approval's stream after the first text
				// and resumed it from the last event it had.
				resumed := false
				for _, id := range s.cutter.resumes() {
					n, ok := strings.CutPrefix(id, m.ID+":")
					resumed = resumed || ok && n != "0"
				}
				if !resumed {
					return fmt.Errorf("no stream of %s was resumed with a Last-Event-ID (resumed: %q)", m.ID, s.cutter.resumes())
				}
			case "denial-done":
				m, err := s.lastReply(t)
				if err != nil {
					return err
				}
				call, result := toolParts(m)
				if m.Status != agent.Complete || call == nil || result == nil || call.Approval == nil || call.Approval.Approved == nil ||
					*call.Approval.Approved || call.Approval.Reason != "not now" || !result.IsError {
					return fmt.Errorf("the denied reply over the API: %+v", m)
				}
			case "state-put":
				s.do(t, "PUT", approveSession+"/state", map[string]any{"mood": "<script>alert('state')</script>", "n": 1}, 200)
			case "state-bump":
				s.do(t, "PUT", approveSession+"/state", map[string]any{"n": 1, "by": "api"}, 200)
			case "state-saved":
				_, b := s.do(t, "GET", approveSession+"/state", nil, 200)
				var st agent.StateResponse
				json.Unmarshal(b, &st)
				if st.Version != 3 || string(st.State) != `{"from":"console","n":2}` && string(st.State) != `{"n":2,"from":"console"}` {
					return fmt.Errorf("the state over the API: %s", b)
				}
			case "schedules-added", "schedule-cancelled":
				_, b := s.do(t, "GET", approveSession+"/schedules", nil, 200)
				var p struct{ Schedules []agent.Schedule }
				json.Unmarshal(b, &p)
				got := map[string]agent.Schedule{}
				for _, sc := range p.Schedules {
					got[sc.ID] = sc
				}
				week, ok := got["e2e-weekday"]
				if !ok || week.Type != "cron" || week.Cron != "0 9 * * 1-5" || week.TZ != "Europe/Berlin" {
					return fmt.Errorf("the cron schedule over the API: %s", b)
				}
				later, ok := got["e2e-later"]
				if ask == "schedule-cancelled" {
					if ok || len(got) != 1 {
						return fmt.Errorf("e2e-later is still scheduled over the API: %s", b)
					}
					break
				}
				if !ok || later.Type != "delayed" || later.DelaySeconds != 3600 || later.Message != "remind me <b>later</b>" {
					return fmt.Errorf("the delayed schedule over the API: %s", b)
				}
			case "presence-join":
				s.do(t, "POST", "/v1/objects/presence/standup/heartbeat", map[string]any{"member": "ada", "ttl_ms": 3000,
					"metadata": map[string]string{"note": "<script>alert('meta')</script>"}}, 200)
			case "presence-gone":
				_, b := s.do(t, "GET", "/v1/objects/presence/standup/list", nil, 200)
				if strings.Contains(string(b), `"ada"`) {
					return fmt.Errorf("ada is still present over the API: %s", b)
				}
			default:
				return fmt.Errorf("unknown question %q", ask)
			}
			return nil
		})
	})

	t.Run("auth off", func(t *testing.T) {
		s := startServer(t, "")
		s.do(t, "PUT", "/v1/objects/kv/open/k", []byte("v"), 200)
		runScript(t, node, modules, chromium, shots, s, "open", func(ask string) error {
			if ask != "open-kv-edited" {
				return fmt.Errorf("unknown question %q", ask)
			}
			if _, b := s.do(t, "GET", "/v1/objects/kv/open/k", nil, 200); string(b) != "edited with auth off" {
				return fmt.Errorf("k is %q over the API", b)
			}
			return nil
		})
	})
}

// runScript runs testdata/e2e.mjs against s and answers its questions
// with answer; the test fails if the script does.
func runScript(t *testing.T, node, modules, chromium, shots string, s *testServer, mode string, answer func(string) error) {
	t.Helper()
	script, err := filepath.Abs("testdata/e2e.mjs")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(),
		"CAIRN_URL="+s.url+"/",
		"CAIRN_SECRET="+s.secret,
		"CAIRN_MODE="+mode,
		"CHROMIUM="+chromium,
		"PLAYWRIGHT_CORE="+filepath.Join(modules, "playwright-core"),
		"SCREENSHOTS="+shots,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	var done string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "ASK "):
			ask := strings.TrimPrefix(line, "ASK ")
			reply := "OK\n"
			if err := answer(ask); err != nil {
				t.Errorf("%s: %v", ask, err)
				reply = "ERR " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
			}
			io.WriteString(stdin, reply)
		case strings.HasPrefix(line, "DONE "):
			done = strings.TrimPrefix(line, "DONE ")
		default:
			t.Logf("script: %s", line)
		}
	}
	stdin.Close()
	err = cmd.Wait()
	t.Logf("browser session (%s) took %v; screenshots in %s", mode, time.Since(start).Round(time.Millisecond), shots)
	if err != nil || done == "" {
		t.Fatalf("e2e.mjs (%s): %v\n%s", mode, err, stderr.String())
	}
	t.Logf("e2e.mjs (%s):\n%s", mode, stderr.String())
	t.Logf("results: %s", done)
}
