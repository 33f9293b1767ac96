package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// coldEnv is a runtime with the agent class and an archive store, behind
// the real HTTP server.
type coldEnv struct {
	dir string
	rt  *cairn.Runtime
	svc *Service
	arc archive.Store
	srv *httptest.Server
	url string
}

// newColdEnv opens a runtime on dir (its archive in dir/archive unless arc
// is set) with agents. setup, if set, runs on the runtime and the service
// before they open.
func newColdEnv(tb testing.TB, dir string, arc archive.Store, setup func(*cairn.Runtime, *Service), agents ...Agent) *coldEnv {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	if arc == nil {
		l, err := archive.NewLocal(filepath.Join(dir, "archive"))
		if err != nil {
			tb.Fatal(err)
		}
		arc = l
	}
	eng, err := sqlite.Open(filepath.Join(dir, "data"), cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	svc, err := NewService(agents...)
	if err != nil {
		tb.Fatal(err)
	}
	svc.Archive = arc
	if setup != nil {
		setup(rt, svc)
	}
	if _, err := svc.Register(rt); err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	hs := cairnhttp.NewServer(rt)
	h := svc.Handler()
	hs.Routes = []cairnhttp.Route{{Pattern: "/v1/agents", Handler: h}, {Pattern: "/v1/agents/", Handler: h}}
	srv := httptest.NewServer(hs.Handler())
	e := &coldEnv{dir: dir, rt: rt, svc: svc, arc: arc, srv: srv, url: srv.URL}
	tb.Cleanup(func() { e.close(tb) })
	return e
}

func (e *coldEnv) close(tb testing.TB) {
	tb.Helper()
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.rt.Close(ctx); err != nil {
		tb.Errorf("close runtime: %v", err)
	}
	e.srv.CloseClientConnections()
	e.srv.Close()
	e.srv = nil
}

var coldClient = &http.Client{Timeout: 60 * time.Second}

// do sends a request and returns the status, body and headers.
func (e *coldEnv) do(tb testing.TB, method, path string, body []byte) (int, []byte, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := coldClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// must sends a request that must answer 200, and decodes its body into out.
func (e *coldEnv) must(tb testing.TB, method, path string, body []byte, out any) {
	tb.Helper()
	code, b, _ := e.do(tb, method, path, body)
	if code != http.StatusOK {
		tb.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	if out != nil {
		// A fresh value: decoding into a used one merges.
		v := reflect.ValueOf(out).Elem()
		v.Set(reflect.Zero(v.Type()))
		if err := json.Unmarshal(b, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// stub returns the object of session agent/session.
func (e *coldEnv) stub(tb testing.TB, session string) *cairn.Stub {
	tb.Helper()
	ns, err := e.rt.Namespace(Namespace)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := ns.GetByName(session)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// insert stores msgs in session (agent/name) in one turn, as the session's
// own store does.
func (e *coldEnv) insert(tb testing.TB, session string, msgs []Message) {
	tb.Helper()
	err := e.stub(tb, session).Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		s := store{st: st, svc: e.svc}
		for i := range msgs {
			if err := s.insert(&msgs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("insert: %v", err)
	}
}

// maintain runs the session's archiver now and returns what it did.
func (e *coldEnv) maintain(tb testing.TB, session string) archiveRun {
	tb.Helper()
	run, err := e.tryMaintain(session)
	if err != nil {
		tb.Fatalf("archiver of %s: %v", session, err)
	}
	return run
}

func (e *coldEnv) tryMaintain(name string) (archiveRun, error) {
	var run archiveRun
	err := e.onSession(name, func(s *session) error {
		var err error
		run, err = s.maintain(context.Background())
		return err
	})
	return run, err
}

// onSession runs fn on the session's instance, as an event of its own.
func (e *coldEnv) onSession(name string, fn func(s *session) error) error {
	ns, err := e.rt.Namespace(Namespace)
	if err != nil {
		return err
	}
	stub, err := ns.GetByName(name)
	if err != nil {
		return err
	}
	var ferr error
	run := func(s *session, w http.ResponseWriter) { ferr = fn(s) }
	ctx := context.WithValue(context.Background(), testFuncKey{}, run)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/", nil)
	if err := stub.Fetch(httptest.NewRecorder(), req); err != nil {
		return err
	}
	return ferr
}

// hotCount returns how many messages session has hot.
func (e *coldEnv) hotCount(tb testing.TB, session string) int64 {
	tb.Helper()
	var n int64
	err := e.stub(tb, session).Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		var err error
		n, err = store{st: st}.hotCount()
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// sessionPath is the URL path of a session (agent/name).
func sessionPath(session string) string { return "/v1/agents/" + session }

// pageAll pages through session's whole history, limit messages a page
// (varied if 0), and returns it oldest first. It fails on a repeated
// message or a page that is not newest first.
func (e *coldEnv) pageAll(tb testing.TB, session string, limit int) []Message {
	tb.Helper()
	var all []Message
	before := ""
	for i := 0; ; i++ {
		l := limit
		if l == 0 {
			l = 1 + (i*37)%maxPage
		}
		q := fmt.Sprintf("?limit=%d", l)
		if before != "" {
			q += "&before=" + before
		}
		var p Page
		e.must(tb, "GET", sessionPath(session)+"/messages"+q, nil, &p)
		if len(p.Messages) > l || (p.Next != "" && len(p.Messages) != l) {
			tb.Fatalf("page of %d messages for limit %d, next %q", len(p.Messages), l, p.Next)
		}
		all = append(all, p.Messages...)
		if p.Next == "" {
			break
		}
		before = p.Next
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// export returns the session's export, and its X-Message-Count.
func (e *coldEnv) export(tb testing.TB, session string) ([]Message, string) {
	tb.Helper()
	code, b, h := e.do(tb, "GET", sessionPath(session)+"/export", nil)
	if code != http.StatusOK {
		tb.Fatalf("export: %d %s", code, b)
	}
	if ct := h.Get("Content-Type"); ct != "application/x-ndjson" {
		tb.Errorf("export Content-Type %q", ct)
	}
	var out []Message
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			tb.Fatalf("export line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out, h.Get("X-Message-Count")
}

// sameMessages fails unless got and want are the same messages in the
// same order (compared as JSON).
func sameMessages(tb testing.TB, what string, got, want []Message) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		a, _ := json.Marshal(got[i])
		b, _ := json.Marshal(want[i])
		if !bytes.Equal(a, b) {
			tb.Fatalf("%s: message %d is\n%s\nwant\n%s", what, i, a, b)
		}
	}
}

// exactlyOnce fails unless every message of want is in got exactly once,
// in want's order, and got holds nothing else.
func exactlyOnce(tb testing.TB, what string, got []Message, want []string) {
	tb.Helper()
	seen := map[string]int{}
	for _, m := range got {
		seen[m.ID]++
	}
	for id, n := range seen {
		if n > 1 {
			tb.Fatalf("%s: message %s read %d times", what, id, n)
		}
	}
	if len(got) != len(want) {
		missing := 0
		for _, id := range want {
			if seen[id] == 0 {
				missing++
			}
		}
		tb.Fatalf("%s: %d messages read, want %d (%d missing)", what, len(got), len(want), missing)
	}
	for i := range want {
		if got[i].ID != want[i] {
			tb.Fatalf("%s: message %d is %s, want %s", what, i, got[i].ID, want[i])
		}
	}
}

// words are the text of generated messages.
var words = strings.Fields(`the archive keeps old messages of a session out of its database
in compressed chunks and brings them back when a client pages through the
history; a crash at any point leaves every message readable exactly once,
which is what this test checks with SIGKILL at each step of the protocol
func main() { fmt.Println("hello") } tool results JSON {"rows": [1, 2, 3]}`)

// genMessages makes n messages numbered from first: a user question and
// an assistant answer in turn, of varied sizes (about size bytes of text
// on average), a third of the answers with a tool call and its result.
func genMessages(first, n, size int) []Message {
	out := make([]Message, 0, n)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := first; i < first+n; i++ {
		var b strings.Builder
		target := size/2 + (i*7919)%(size+1)
		for j := 0; b.Len() < target; j++ {
			b.WriteString(words[(i*31+j*17)%len(words)])
			b.WriteByte(' ')
		}
		m := Message{ID: fmt.Sprintf("msg_%020x", i), CreatedAt: base.Add(time.Duration(i) * time.Second), Status: Complete}
		if i%2 == 0 {
			m.Role = User
			m.Parts = []Part{{Type: PartText, Text: b.String()}}
		} else {
			m.Role, m.Model, m.Rounds = Assistant, "m", 1
			m.Usage = &Usage{InputTokens: int64(i), OutputTokens: int64(i % 100)}
			if i%3 == 0 {
				call := fmt.Sprintf("call_%d", i)
				m.Parts = append(m.Parts, Part{Type: PartToolCall, ToolCallID: call, ToolName: "lookup", Input: json.RawMessage(fmt.Sprintf(`{"q":%d}`, i))},
					Part{Type: PartToolResult, ToolCallID: call, ToolName: "lookup", Output: json.RawMessage(`{"rows":[1,2,3]}`)})
				m.Rounds = 2
			}
			m.Parts = append(m.Parts, Part{Type: PartText, Text: b.String()})
		}
		out = append(out, m)
	}
	return out
}

func ids(msgs []Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}
