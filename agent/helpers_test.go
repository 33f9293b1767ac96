package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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
	if dir == "" {
		dir = tb.TempDir()
	}
	eng, err := sqlite.Open(dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
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
	h := svc.Handler()
	hs.Routes = []cairnhttp.Route{{Pattern: "/v1/agents", Handler: h}, {Pattern: "/v1/agents/", Handler: h}}
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
	return resp.StatusCode, b
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
