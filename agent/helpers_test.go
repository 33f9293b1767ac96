package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// env is a runtime with the agent class behind the real HTTP server.
type env struct {
	rt  *cairn.Runtime
	svc *agent.Service
	srv *httptest.Server
	url string
}

// newEnv opens a runtime on dir (a fresh one if "") with agents, served
// over HTTP on 127.0.0.1. It is closed when the test ends, unless closed
// before with close.
func newEnv(tb testing.TB, dir string, agents ...agent.Agent) *env {
	tb.Helper()
	return newEnvWith(tb, dir, nil, agents...)
}

// newEnvWith is newEnv with setup, if not nil, called on the runtime
// before it opens (to set its clock, logger, idle timeout).
func newEnvWith(tb testing.TB, dir string, setup func(*cairn.Runtime), agents ...agent.Agent) *env {
	tb.Helper()
	return openEnv(tb, dir, setup, agents, func(hs *cairnhttp.Server, svc *agent.Service) {
		h := svc.Handler()
		hs.Routes = []cairnhttp.Route{{Pattern: "/v1/agents", Handler: h}, {Pattern: "/v1/agents/", Handler: h}}
	})
}

// openEnv is newEnvWith with mount, which sets the routes (and tokens)
// of the HTTP server.
func openEnv(tb testing.TB, dir string, setup func(*cairn.Runtime), agents []agent.Agent, mount func(*cairnhttp.Server, *agent.Service)) *env {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	eng, err := sqlite.Open(dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	if setup != nil {
		setup(rt)
	}
	svc, err := agent.NewService(agents...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := svc.Register(rt); err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	hs := cairnhttp.NewServer(rt)
	mount(hs, svc)
	srv := httptest.NewServer(hs.Handler())
	e := &env{rt: rt, svc: svc, srv: srv, url: srv.URL}
	tb.Cleanup(func() { e.close(tb) })
	return e
}

// close stops the server and the runtime.
func (e *env) close(tb testing.TB) {
	tb.Helper()
	if e.srv == nil {
		return
	}
	// The runtime first: closing it ends generations in flight, which a
	// client leaving does not, and the server waits for their handlers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.rt.Close(ctx); err != nil {
		tb.Errorf("close runtime: %v", err)
	}
	e.srv.CloseClientConnections()
	e.srv.Close()
	e.srv = nil
}

// do sends a request and returns the status and body.
func (e *env) do(tb testing.TB, method, path string, body []byte, header ...string) (int, []byte) {
	tb.Helper()
	code, b, _ := e.doHeader(tb, method, path, body, header...)
	return code, b
}

// doHeader is do, with the response's header.
func (e *env) doHeader(tb testing.TB, method, path string, body []byte, header ...string) (int, []byte, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
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

// send posts text to a session and returns the assistant message.
func (e *env) send(tb testing.TB, session, text string) agent.Message {
	tb.Helper()
	body, _ := json.Marshal(map[string]string{"text": text})
	code, b := e.do(tb, "POST", "/v1/agents/"+session+"/messages", body)
	if code != http.StatusOK {
		tb.Fatalf("POST %s: %d %s", session, code, b)
	}
	var m agent.Message
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("decode message: %v", err)
	}
	return m
}

// page gets a page of a session's history.
func (e *env) page(tb testing.TB, session, query string) agent.Page {
	tb.Helper()
	code, b := e.do(tb, "GET", "/v1/agents/"+session+"/messages"+query, nil)
	if code != http.StatusOK {
		tb.Fatalf("GET %s%s: %d %s", session, query, code, b)
	}
	var p agent.Page
	if err := json.Unmarshal(b, &p); err != nil {
		tb.Fatalf("decode page: %v", err)
	}
	return p
}

// history returns all of a session's messages, oldest first.
func (e *env) history(tb testing.TB, session string) []agent.Message {
	tb.Helper()
	p := e.page(tb, session, "?limit=200")
	msgs := p.Messages
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	return msgs
}

// errorCode returns the code of an API error body.
func errorCode(b []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(b, &e)
	return e.Error.Code
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	ID, Event string
	Data      map[string]any
}

// sseReader reads events from a response body.
type sseReader struct{ r *bufio.Reader }

func (s *sseReader) next(tb testing.TB) (sseEvent, bool) {
	tb.Helper()
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, false
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if ev.Event != "" {
				return ev, true
			}
			continue
		}
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "id":
			ev.ID = v
		case "event":
			ev.Event = v
		case "data":
			if err := json.Unmarshal([]byte(v), &ev.Data); err != nil {
				tb.Fatalf("event data %q: %v", v, err)
			}
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
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

func roles(msgs []agent.Message) string {
	var s []string
	for _, m := range msgs {
		s = append(s, string(m.Role)+":"+m.Text())
	}
	return strings.Join(s, "|")
}

// client bounds every test request, so that a stream that never comes
// fails the test instead of hanging it.
var client = &http.Client{Timeout: 20 * time.Second}

// open sends a request that answers with an event stream and returns the
// response (closed when the test ends) and its reader. A status other
// than 200 fails the test.
func (e *env) open(tb testing.TB, method, path string, body []byte, header ...string) (*http.Response, *sseReader) {
	tb.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		tb.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp, &sseReader{bufio.NewReader(resp.Body)}
}

// rest reads events until the stream ends.
func (s *sseReader) rest(tb testing.TB) []sseEvent {
	tb.Helper()
	var evs []sseEvent
	for {
		ev, ok := s.next(tb)
		if !ok {
			return evs
		}
		evs = append(evs, ev)
	}
}

// until reads events up to and including the first named name.
func (s *sseReader) until(tb testing.TB, name string) []sseEvent {
	tb.Helper()
	var evs []sseEvent
	for {
		ev, ok := s.next(tb)
		if !ok {
			tb.Fatalf("stream ended before %s; got %s", name, eventNames(evs))
		}
		evs = append(evs, ev)
		if ev.Event == name {
			return evs
		}
	}
}

// eventNames lists the events' names, for messages.
func eventNames(evs []sseEvent) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Event)
	}
	return strings.Join(s, ",")
}

// endMessage returns the message of a message-end event.
func endMessage(tb testing.TB, ev sseEvent) agent.Message {
	tb.Helper()
	if ev.Event != "message-end" {
		tb.Fatalf("event %s, want message-end", ev.Event)
	}
	b, _ := json.Marshal(ev.Data["message"])
	var m agent.Message
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// script is a provider whose answers a test scripts in Go: reply gets
// the call's number (from 1) and request and returns the events, and may
// block (honouring ctx). It records the requests.
type script struct {
	reply func(ctx context.Context, n int, req *agent.Request) []agent.Event

	mu   sync.Mutex
	reqs []*agent.Request
}

func (p *script) Name() string { return "script" }

func (p *script) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		p.mu.Lock()
		cp := *req
		cp.Messages = append([]agent.Message(nil), req.Messages...)
		p.reqs = append(p.reqs, &cp)
		n := len(p.reqs)
		p.mu.Unlock()
		for _, ev := range p.reply(ctx, n, &cp) {
			if !yield(ev) {
				return
			}
		}
	}
}

// requests returns the requests so far.
func (p *script) requests() []*agent.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*agent.Request(nil), p.reqs...)
}

// Events for scripts.
func textEv(s string) agent.Event { return agent.Event{Type: agent.EventText, Text: s} }

func callEv(i int, id, name, input string) agent.Event {
	return agent.Event{Type: agent.EventToolCall, ToolCall: &agent.ToolCall{Index: i, ID: id, Name: name, Input: input}}
}

func doneEv(reason string) agent.Event {
	return agent.Event{Type: agent.EventDone, FinishReason: reason}
}

func usageEv(in, out int64) agent.Event {
	return agent.Event{Type: agent.EventUsage, Usage: &agent.Usage{InputTokens: in, OutputTokens: out}}
}
