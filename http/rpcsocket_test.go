package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/coder/websocket"
)

// gates is what the instances of the test class "gate" share with the
// test: Wait calls block until release is closed or their context ends,
// and report both.
type gates struct {
	started  chan string // the key of each Wait that began
	canceled chan string // the key of each Wait whose context ended
	release  chan struct{}
	once     sync.Once
}

func newGates() *gates {
	return &gates{started: make(chan string, 1024), canceled: make(chan string, 1024), release: make(chan struct{})}
}

func (g *gates) open() { g.once.Do(func() { close(g.release) }) }

// gate is an instance of the test class.
type gate struct {
	st *cairn.State
	g  *gates
}

// Wait blocks until the gates open or ctx ends. It releases the turn
// meanwhile, so that many Waits can block on one object.
func (x *gate) Wait(ctx context.Context, key string) (string, error) {
	err := x.st.Release(func(ctx context.Context) error {
		x.g.started <- key
		select {
		case <-x.g.release:
			return nil
		case <-ctx.Done():
			x.g.canceled <- key
			return ctx.Err()
		}
	})
	if err != nil {
		return "", err
	}
	return "released " + key, nil
}

// Echo answers its argument: the trivial call of the benchmark.
func (x *gate) Echo(ctx context.Context, n int) (int, error) { return n, nil }

// Fail returns an error with the given code ("plain" for one without).
func (x *gate) Fail(ctx context.Context, code string) error {
	if code == "plain" {
		return errors.New("a plain error with details that must not leak")
	}
	return cairn.Errorf(cairn.Code(code), "failed with %s", code)
}

// rpcServer is a test server with the gate class next to the built-in ones.
func rpcServer(tb testing.TB, g *gates, opts serverOptions) *testServer {
	tb.Helper()
	opts.classes = map[string]cairn.Class{"gate": {New: func(st *cairn.State) (any, error) { return &gate{st, g}, nil }}}
	return newServer(tb, opts)
}

// rpcDial opens a raw RPC socket, for tests that look at frames.
func rpcDial(tb testing.TB, ts *testServer, token string) *websocket.Conn {
	tb.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	return dial(tb, ts.url+"/v1/rpc", hdr)
}

// rpcClient opens an RPCConn, closed with the test.
func rpcClient(tb testing.TB, url, token string) *cairnhttp.RPCConn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cairnhttp.NewClient(url, token).DialRPC(ctx)
	if err != nil {
		tb.Fatalf("DialRPC: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// rpcAnswer is an answer frame, decoded.
type rpcAnswer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Status  int    `json:"status"`
	} `json:"error"`
	raw []byte
}

// readAnswer reads one answer frame and checks its shape: an id and
// exactly one of result and error (code, message and status, nothing else).
func readAnswer(tb testing.TB, c *websocket.Conn) rpcAnswer {
	tb.Helper()
	typ, b := read(tb, c)
	if typ != websocket.MessageText {
		tb.Fatalf("answer %q: got a binary frame, want text", b)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		tb.Fatalf("answer %q is not a JSON object: %v", b, err)
	}
	_, hasResult := top["result"]
	_, hasError := top["error"]
	if len(top) != 2 || top["id"] == nil || hasResult == hasError {
		tb.Fatalf("answer %s: want id and one of result or error", b)
	}
	a := rpcAnswer{raw: b}
	json.Unmarshal(b, &a)
	if hasError {
		var e map[string]any
		json.Unmarshal(top["error"], &e)
		if len(e) != 3 || a.Error.Code == "" || a.Error.Message == "" || a.Error.Status == 0 {
			tb.Fatalf("answer %s: want error.code, error.message and error.status and nothing else", b)
		}
	}
	return a
}

// readAnswers reads n answers and returns them by id (as JSON text).
func readAnswers(tb testing.TB, c *websocket.Conn, n int) map[string]rpcAnswer {
	tb.Helper()
	m := make(map[string]rpcAnswer, n)
	for range n {
		a := readAnswer(tb, c)
		m[string(a.ID)] = a
	}
	return m
}

// callFrame returns a call frame.
func callFrame(id any, ns, name, method string, args any) string {
	f := map[string]any{"id": id, "ns": ns, "name": name, "method": method}
	if args != nil {
		f["args"] = args
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// recv waits for a value on ch, failing the test after 10 s.
func recv[T any](tb testing.TB, what string, ch <-chan T) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestRPCSocketMatchesHTTP(t *testing.T) {
	ts := rpcServer(t, newGates(), serverOptions{})
	c := rpcDial(t, ts, "")
	rc := rpcClient(t, ts.url, "")
	for i, step := range []struct {
		method string
		args   any // nil: no args
	}{
		{"Put", map[string]string{"key": "a", "value": "1"}},
		{"Put", map[string]string{"key": "b", "value": "é \" \\ \u2028"}},
		{"Get", map[string]string{"key": "a"}},
		{"Get", map[string]string{"key": "absent"}},
		{"List", nil},
		{"List", map[string]any{"prefix": "b"}},
		{"Delete", map[string]string{"key": "a"}},
		{"Delete", map[string]string{"key": "a"}},
		{"List", nil},
	} {
		// The same calls on three objects: over HTTP, over a raw socket
		// and with RPCConn.
		var body []byte
		if step.args != nil {
			body, _ = json.Marshal(step.args)
		}
		r := do(t, "POST", ts.url+"/v1/objects/kv/over-http/rpc/"+step.method, body)
		wantOK(t, step.method, r)
		want := string(bytes.TrimSpace(r.body))

		send(t, c, callFrame(i, "kv", "over-socket", step.method, step.args))
		a := readAnswer(t, c)
		if string(a.ID) != fmt.Sprint(i) || a.Error != nil {
			t.Fatalf("step %d %s: got answer %s, want id %d and a result", i, step.method, a.raw, i)
		}
		if got := string(a.Result); got != want {
			t.Errorf("step %d %s: socket result %s, HTTP result %s", i, step.method, got, want)
		}

		var got json.RawMessage
		if err := rc.Call(context.Background(), "kv", "over-client", step.method, step.args, &got); err != nil {
			t.Fatalf("step %d %s: RPCConn: %v", i, step.method, err)
		}
		if string(got) != want {
			t.Errorf("step %d %s: RPCConn result %s, HTTP result %s", i, step.method, got, want)
		}
	}

	t.Run("string ids and null args", func(t *testing.T) {
		send(t, c, `{"id":"call-1","ns":"kv","name":"over-socket","method":"List","args":null}`)
		a := readAnswer(t, c)
		if string(a.ID) != `"call-1"` || a.Error != nil || !strings.HasPrefix(string(a.Result), `{"entries":`) {
			t.Errorf("got %s, want the list of id \"call-1\"", a.raw)
		}
	})
	t.Run("typed results", func(t *testing.T) {
		var n int
		if err := rc.Call(context.Background(), "gate", "g", "Echo", 42, &n); err != nil || n != 42 {
			t.Errorf("Echo 42: got %d, %v", n, err)
		}
		if err := rc.Call(context.Background(), "gate", "g", "Echo", 1, nil); err != nil {
			t.Errorf("Echo with out nil: %v", err)
		}
	})
}

func TestRPCSocketConcurrentCalls(t *testing.T) {
	g := newGates()
	ts := rpcServer(t, g, serverOptions{})

	t.Run("a blocked call does not hold up later ones", func(t *testing.T) {
		c := rpcDial(t, ts, "")
		send(t, c, callFrame("blocked", "gate", "g", "Wait", "blocked"))
		recv(t, "Wait to start", g.started)
		const n = 50
		for i := range n {
			send(t, c, callFrame(i, "kv", fmt.Sprint("o", i%5), "Put", map[string]string{"key": "k", "value": "v"}))
		}
		got := readAnswers(t, c, n)
		for i := range n {
			if a, ok := got[fmt.Sprint(i)]; !ok || a.Error != nil {
				t.Errorf("call %d: got %s, want a result", i, a.raw)
			}
		}
		g.open()
		if a := readAnswer(t, c); string(a.ID) != `"blocked"` || string(a.Result) != `"released blocked"` {
			t.Errorf("after the gates opened: got %s, want the Wait's result", a.raw)
		}
	})

	t.Run("many goroutines on one RPCConn", func(t *testing.T) {
		rc := rpcClient(t, ts.url, "")
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				for i := range 20 {
					name, val := fmt.Sprint("w", w), fmt.Sprint(w, "-", i)
					if err := rc.Call(context.Background(), "kv", name, "Put", map[string]string{"key": "k", "value": val}, nil); err != nil {
						t.Errorf("Put: %v", err)
						return
					}
					var res struct{ Value *string }
					if err := rc.Call(context.Background(), "kv", name, "Get", map[string]string{"key": "k"}, &res); err != nil {
						t.Errorf("Get: %v", err)
						return
					}
					if res.Value == nil || *res.Value != val {
						t.Errorf("Get %s: got %v, want %s", name, res.Value, val)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestRPCSocketErrorsMatchHTTP(t *testing.T) {
	ts := rpcServer(t, newGates(), serverOptions{tuneSrv: func(s *cairnhttp.Server) { s.MaxBodyBytes = 1 << 10 }})
	c := rpcDial(t, ts, "")
	long := strings.Repeat("n", cairn.MaxNameLen+1)
	big := map[string]string{"key": "k", "value": strings.Repeat("v", 2<<10)}
	for _, tc := range []struct {
		name, ns, obj, method string
		args                  any
		status                int
		code                  string
	}{
		{"unknown namespace", "nosuch", "x", "Get", map[string]string{"key": "k"}, 404, "not_found"},
		{"invalid namespace", "k v", "x", "Get", map[string]string{"key": "k"}, 400, "invalid"},
		{"1025-byte name", "kv", long, "Get", map[string]string{"key": "k"}, 400, "invalid"},
		{"NUL in name", "kv", "a\x00b", "Get", map[string]string{"key": "k"}, 400, "invalid"},
		{"unknown method", "kv", "x", "Nope", nil, 404, "not_found"},
		{"hook is not a method", "kv", "x", "ServeHTTP", nil, 404, "not_found"},
		{"long method", "kv", "x", strings.Repeat("M", 129), nil, 400, "invalid"},
		{"wrong argument type", "kv", "x", "Put", "just a string", 400, "invalid"},
		{"handler refuses", "kv", "x", "Put", map[string]string{"key": "", "value": "v"}, 400, "invalid"},
		{"args above MaxBodyBytes", "kv", "x", "Put", big, 413, "too_large"},
		{"conflict", "gate", "x", "Fail", "conflict", 409, "conflict"},
		{"unavailable", "gate", "x", "Fail", "unavailable", 503, "unavailable"},
		{"timeout", "gate", "x", "Fail", "timeout", 504, "timeout"},
		{"plain error", "gate", "x", "Fail", "plain", 500, "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.args != nil {
				body, _ = json.Marshal(tc.args)
			}
			path := cairnhttp.ObjectPath("/v1/objects", tc.ns, tc.obj) + "/rpc/" + tc.method
			wantError(t, "HTTP", do(t, "POST", ts.url+path, body), tc.status, tc.code)

			send(t, c, callFrame(tc.name, tc.ns, tc.obj, tc.method, tc.args))
			a := readAnswer(t, c)
			if string(a.ID) != quote(tc.name) || a.Error == nil {
				t.Fatalf("got %s, want an error for id %q", a.raw, tc.name)
			}
			if a.Error.Code != tc.code || a.Error.Status != tc.status {
				t.Errorf("got %s, want code %s and status %d as over HTTP", a.raw, tc.code, tc.status)
			}
			if tc.code == "internal" && strings.Contains(a.Error.Message, "leak") {
				t.Errorf("internal error message %q leaks the error's details", a.Error.Message)
			}
		})
	}

	t.Run("RPCConn returns APIError", func(t *testing.T) {
		rc := rpcClient(t, ts.url, "")
		err := rc.Call(context.Background(), "gate", "x", "Fail", "conflict", nil)
		var ae *cairnhttp.APIError
		if !errors.As(err, &ae) || ae.Status != 409 || cairnhttp.ErrorCode(err) != "conflict" || ae.Message != "failed with conflict" {
			t.Errorf("got %#v, want *APIError 409 conflict", err)
		}
		err = rc.Call(context.Background(), "kv", "a\xffb", "List", nil, nil)
		if cairnhttp.ErrorCode(err) != "invalid" {
			t.Errorf("invalid UTF-8 name: got %v, want invalid", err)
		}
	})
}

func TestRPCSocketAuth(t *testing.T) {
	ts := rpcServer(t, newGates(), serverOptions{tokens: []cairnhttp.Token{
		{Name: "admin", Secret: adminSecret, Admin: true},
		{Name: "kv", Secret: kvSecret, Namespaces: []string{"kv"}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", "wrong-secret-0123456789"},
	} {
		c, err := cairnhttp.NewClient(ts.url, tc.token).DialRPC(ctx)
		if err == nil {
			c.Close()
			t.Errorf("%s: DialRPC succeeded, want 401", tc.name)
			continue
		}
		var ae *cairnhttp.APIError
		if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "unauthorized" {
			t.Errorf("%s: got %v, want an *APIError 401 unauthorized", tc.name, err)
		}
	}

	t.Run("token as a subprotocol", func(t *testing.T) {
		c, _, err := websocket.Dial(ctx, wsURL(ts.url)+"/v1/rpc", &websocket.DialOptions{
			Subprotocols: []string{cairnhttp.Subprotocol, cairnhttp.TokenSubprotocol(kvSecret)},
		})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		send(t, c, callFrame(1, "kv", "x", "List", nil))
		if a := readAnswer(t, c); a.Error != nil {
			t.Errorf("got %s, want a result", a.raw)
		}
	})

	t.Run("scoped token", func(t *testing.T) {
		rc := rpcClient(t, ts.url, kvSecret)
		for _, ns := range []string{"room", "gate", "nosuch"} {
			err := rc.Call(ctx, ns, "x", "Get", nil, nil)
			var ae *cairnhttp.APIError
			if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "forbidden" {
				t.Errorf("kv token calling %s: got %v, want 403 forbidden", ns, err)
			}
			wantError(t, "HTTP "+ns, do(t, "POST", ts.url+"/v1/objects/"+ns+"/x/rpc/Get", nil, "Authorization", "Bearer "+kvSecret), 403, "forbidden")
		}
		if err := rc.Call(ctx, "kv", "x", "List", nil, nil); err != nil {
			t.Errorf("kv token calling kv on the same socket: %v", err)
		}
	})

	t.Run("admin token", func(t *testing.T) {
		rc := rpcClient(t, ts.url, adminSecret)
		var n int
		if err := rc.Call(ctx, "gate", "x", "Echo", 7, &n); err != nil || n != 7 {
			t.Errorf("admin token: got %d, %v, want 7", n, err)
		}
	})

	t.Run("not an upgrade", func(t *testing.T) {
		r := do(t, "GET", ts.url+"/v1/rpc", nil, "Authorization", "Bearer "+kvSecret)
		wantError(t, "GET without Upgrade", r, http.StatusUpgradeRequired, "invalid")
		wantError(t, "GET without token", do(t, "GET", ts.url+"/v1/rpc", nil), 401, "unauthorized")
		r = do(t, "POST", ts.url+"/v1/rpc", nil, "Authorization", "Bearer "+kvSecret)
		wantError(t, "POST", r, http.StatusMethodNotAllowed, "method_not_allowed")
	})
}

func TestRPCSocketMalformedFrames(t *testing.T) {
	g := newGates()
	ts := rpcServer(t, g, serverOptions{tuneSrv: func(s *cairnhttp.Server) { s.MaxBodyBytes = 1 << 10 }})
	c := rpcDial(t, ts, "")
	for _, tc := range []struct {
		name, frame, id string // id: the id the answer must carry
	}{
		{"not JSON", `hello`, "null"},
		{"truncated", `{"id":1,"ns":"kv"`, "null"},
		{"no id", `{"ns":"kv","name":"x","method":"List"}`, "null"},
		{"null id", `{"id":null,"ns":"kv","name":"x","method":"List"}`, "null"},
		{"object id", `{"id":{"a":1},"ns":"kv","name":"x","method":"List"}`, "null"},
		{"bool id", `{"id":true,"ns":"kv","name":"x","method":"List"}`, "null"},
		{"array", `[1,2]`, "null"},
		{"no ns", `{"id":2,"name":"x","method":"List"}`, "2"},
		{"no name", `{"id":3,"ns":"kv","method":"List"}`, "3"},
		{"no method", `{"id":"m","ns":"kv","name":"x"}`, `"m"`},
		{"ns not a string", `{"id":4,"ns":5,"name":"x","method":"List"}`, "4"},
		{"args not JSON", `{"id":5,"ns":"kv","name":"x","method":"List","args":}`, "null"},
		{"unknown member", `{"id":10,"ns":"kv","name":"x","method":"List","arg":{}}`, "10"},
		{"two objects", `{"id":11,"ns":"kv","name":"x","method":"List"} {}`, "null"},
		{"trailing brace", `{"id":12,"ns":"kv","name":"x","method":"List"}}`, "null"},
		{"cancel not an id", `{"cancel":{}}`, "null"},
		{"cancel with more", `{"cancel":1,"ns":"kv"}`, "null"},
		{"invalid UTF-8", "{\"id\":6,\"ns\":\"kv\",\"name\":\"\xff\",\"method\":\"List\"}", "null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send(t, c, tc.frame)
			a := readAnswer(t, c)
			if string(a.ID) != tc.id || a.Error == nil || a.Error.Code != "invalid" || a.Error.Status != 400 {
				t.Errorf("frame %s: got %s, want an invalid error with id %s", tc.frame, a.raw, tc.id)
			}
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Write(ctx, websocket.MessageBinary, []byte(callFrame(1, "kv", "x", "List", nil)))
		if a := readAnswer(t, c); string(a.ID) != "null" || a.Error == nil || a.Error.Code != "invalid" {
			t.Errorf("got %s, want an invalid error", a.raw)
		}
	})
	t.Run("unknown cancel is ignored", func(t *testing.T) {
		send(t, c, `{"cancel":12345}`)
		send(t, c, callFrame(7, "kv", "x", "List", nil))
		if a := readAnswer(t, c); string(a.ID) != "7" || a.Error != nil {
			t.Errorf("got %s, want the answer to call 7", a.raw)
		}
	})
	t.Run("duplicate id in flight", func(t *testing.T) {
		send(t, c, callFrame("dup", "gate", "g", "Wait", "dup"))
		recv(t, "Wait to start", g.started)
		send(t, c, callFrame("dup", "kv", "x", "List", nil))
		a := readAnswer(t, c)
		if string(a.ID) != `"dup"` || a.Error == nil || a.Error.Code != "invalid" {
			t.Errorf("got %s, want an invalid error for the second \"dup\"", a.raw)
		}
		// The same id, escaped, is the same id.
		send(t, c, `{"id":"\u0064up","ns":"kv","name":"x","method":"List"}`)
		if a := readAnswer(t, c); a.Error == nil || a.Error.Code != "invalid" {
			t.Errorf("got %s, want an invalid error for \"\\u0064up\"", a.raw)
		}
		g.open()
		if a := readAnswer(t, c); string(a.ID) != `"dup"` || a.Error != nil {
			t.Errorf("got %s, want the Wait's result", a.raw)
		}
		send(t, c, callFrame("dup", "kv", "x", "List", nil))
		if a := readAnswer(t, c); string(a.ID) != `"dup"` || a.Error != nil {
			t.Errorf("reusing an answered id: got %s, want a result", a.raw)
		}
	})
	t.Run("the socket still works", func(t *testing.T) {
		send(t, c, callFrame(8, "kv", "x", "List", nil))
		if a := readAnswer(t, c); string(a.ID) != "8" || a.Error != nil {
			t.Errorf("got %s, want a result", a.raw)
		}
	})
	t.Run("oversize frame closes with 1009", func(t *testing.T) {
		big := callFrame(9, "kv", "x", "Put", map[string]string{"key": "k", "value": strings.Repeat("v", 100<<10)})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The write may fail: the server closes before reading it all.
		wrote := make(chan error, 1)
		go func() { wrote <- c.Write(ctx, websocket.MessageText, []byte(big)) }()
		_, b, err := c.Read(ctx)
		defer recv(t, "the write to end", wrote)
		if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
			t.Errorf("after a %d-byte frame: got %q, %v (status %d), want close 1009", len(big), b, err, got)
		}
	})
}

func TestRPCSocketCancel(t *testing.T) {
	g := newGates()
	ts := rpcServer(t, g, serverOptions{})

	t.Run("cancel frame", func(t *testing.T) {
		c := rpcDial(t, ts, "")
		send(t, c, callFrame(1, "gate", "g", "Wait", "frame"))
		if got := recv(t, "Wait to start", g.started); got != "frame" {
			t.Fatalf("started %q, want frame", got)
		}
		send(t, c, `{"cancel":1}`)
		if got := recv(t, "the handler's context to end", g.canceled); got != "frame" {
			t.Errorf("canceled %q, want frame", got)
		}
		a := readAnswer(t, c)
		if string(a.ID) != "1" || a.Error == nil || a.Error.Code != "unavailable" {
			t.Errorf("canceled call: got %s, want an unavailable error", a.raw)
		}
	})

	t.Run("ctx of RPCConn.Call", func(t *testing.T) {
		rc := rpcClient(t, ts.url, "")
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- rc.Call(ctx, "gate", "g", "Wait", "ctx", nil) }()
		recv(t, "Wait to start", g.started)
		cancel()
		if err := recv(t, "Call to return", errc); !errors.Is(err, context.Canceled) {
			t.Errorf("Call: got %v, want context.Canceled", err)
		}
		if got := recv(t, "the handler's context to end", g.canceled); got != "ctx" {
			t.Errorf("canceled %q, want ctx", got)
		}
		var n int
		if err := rc.Call(context.Background(), "gate", "g", "Echo", 3, &n); err != nil || n != 3 {
			t.Errorf("a call after the cancel: %d, %v", n, err)
		}
	})

	t.Run("closing the socket cancels its calls", func(t *testing.T) {
		c := rpcDial(t, ts, "")
		for i := range 3 {
			send(t, c, callFrame(i, "gate", "g", "Wait", fmt.Sprint("close-", i)))
		}
		for range 3 {
			recv(t, "Waits to start", g.started)
		}
		c.CloseNow()
		for range 3 {
			if got := recv(t, "the handlers' contexts to end", g.canceled); !strings.HasPrefix(got, "close-") {
				t.Errorf("canceled %q, want close-*", got)
			}
		}
	})

	t.Run("Close fails waiting calls", func(t *testing.T) {
		rc := rpcClient(t, ts.url, "")
		errc := make(chan error, 2)
		for i := range 2 {
			go func() {
				errc <- rc.Call(context.Background(), "gate", "g", "Wait", fmt.Sprint("close-client-", i), nil)
			}()
		}
		recv(t, "Wait to start", g.started)
		recv(t, "Wait to start", g.started)
		if err := rc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for range 2 {
			if err := recv(t, "Call to fail", errc); !errors.Is(err, cairnhttp.ErrRPCClosed) {
				t.Errorf("Call waiting at Close: got %v, want ErrRPCClosed", err)
			}
		}
		for range 2 {
			recv(t, "the handlers' contexts to end", g.canceled)
		}
		if err := rc.Call(context.Background(), "gate", "g", "Echo", 1, nil); !errors.Is(err, cairnhttp.ErrRPCClosed) {
			t.Errorf("Call after Close: got %v, want ErrRPCClosed", err)
		}
	})

	t.Run("a lost socket fails waiting calls", func(t *testing.T) {
		ts2 := rpcServer(t, g, serverOptions{})
		rc := rpcClient(t, ts2.url, "")
		errc := make(chan error, 2)
		for i := range 2 {
			go func() { errc <- rc.Call(context.Background(), "gate", "g", "Wait", fmt.Sprint("lost-", i), nil) }()
		}
		recv(t, "Wait to start", g.started)
		recv(t, "Wait to start", g.started)
		// A Shutdown out of time cuts the socket without waiting.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ts2.srv.Shutdown(ctx)
		for range 2 {
			err := recv(t, "Call to fail", errc)
			if err == nil || errors.Is(err, cairnhttp.ErrRPCClosed) || cairnhttp.ErrorCode(err) != "" {
				t.Errorf("Call on a lost socket: got %v, want a transport error", err)
			}
		}
		for range 2 {
			recv(t, "the handlers' contexts to end", g.canceled)
		}
		if err := rc.Call(context.Background(), "gate", "g", "Echo", 1, nil); err == nil {
			t.Errorf("Call on a lost socket: got no error")
		}
	})

	t.Run("calls beyond the cap are refused", func(t *testing.T) {
		g := newGates()
		ts := rpcServer(t, g, serverOptions{})
		c := rpcDial(t, ts, "")
		for i := range cairnhttp.RPCMaxInFlight {
			send(t, c, callFrame(i, "gate", "g", "Wait", fmt.Sprint(i)))
		}
		for range cairnhttp.RPCMaxInFlight {
			recv(t, "Waits to start", g.started)
		}
		send(t, c, callFrame("over", "gate", "g", "Echo", 1))
		if a := readAnswer(t, c); string(a.ID) != `"over"` || a.Error == nil || a.Error.Code != "unavailable" || a.Error.Status != 503 {
			t.Errorf("call %d: got %s, want unavailable 503", cairnhttp.RPCMaxInFlight+1, a.raw)
		}
		g.open()
		readAnswers(t, c, cairnhttp.RPCMaxInFlight)
		send(t, c, callFrame("after", "gate", "g", "Echo", 1))
		if a := readAnswer(t, c); a.Error != nil {
			t.Errorf("once the calls ended: got %s, want a result", a.raw)
		}
	})
}

// serve runs ts's server on a listener of its own too, as `cairn serve`
// does, so that Shutdown has a server to stop; it returns its URL.
func serve(t *testing.T, ts *testServer) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func TestRPCSocketShutdown(t *testing.T) {
	t.Run("waits for calls, then closes with 1001", func(t *testing.T) {
		g := newGates()
		ts := rpcServer(t, g, serverOptions{})
		u := serve(t, ts)
		c := dial(t, u+"/v1/rpc", nil)
		idle := dial(t, u+"/v1/rpc", nil)
		send(t, c, callFrame(1, "gate", "g", "Wait", "shutdown"))
		recv(t, "Wait to start", g.started)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- ts.srv.Shutdown(ctx) }()
		// A new call is refused while the call in progress goes on.
		var refused bool
		for i := 0; !refused; i++ {
			send(t, c, callFrame(fmt.Sprint("late", i), "gate", "g", "Echo", 1))
			a := readAnswer(t, c)
			switch {
			case a.Error != nil && a.Error.Code == "unavailable":
				refused = true
			case a.Error != nil:
				t.Fatalf("got %s, want a result or unavailable", a.raw)
			}
			if !refused {
				time.Sleep(time.Millisecond)
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v while a call was in progress", err)
		default:
		}
		g.open()
		if a := readAnswer(t, c); string(a.ID) != "1" || a.Error != nil {
			t.Errorf("the call in progress: got %s, want its result", a.raw)
		}
		for _, conn := range []*websocket.Conn{c, idle} {
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, b, err := conn.Read(rctx)
			rcancel()
			if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
				t.Errorf("after Shutdown: got %q, %v, want close 1001", b, err)
			}
		}
		if err := recv(t, "Shutdown to return", done); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel2()
		if c, _, err := websocket.Dial(ctx2, wsURL(ts.url)+"/v1/rpc", nil); err == nil {
			// ts.url is the httptest server, which Shutdown does not stop.
			if _, _, err := c.Read(ctx2); websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Errorf("a socket opened after Shutdown: got %v, want close 1001", err)
			}
			c.CloseNow()
		}
	})

	t.Run("ctx ends first", func(t *testing.T) {
		g := newGates()
		ts := rpcServer(t, g, serverOptions{})
		u := serve(t, ts)
		c := dial(t, u+"/v1/rpc", nil)
		send(t, c, callFrame(1, "gate", "g", "Wait", "stuck"))
		recv(t, "Wait to start", g.started)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: got %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %v with a 200 ms context", d)
		}
		if got := recv(t, "the stuck call's context to end", g.canceled); got != "stuck" {
			t.Errorf("canceled %q, want stuck", got)
		}
		g.open()
	})
}

func TestRPCSocketMetrics(t *testing.T) {
	ts := rpcServer(t, newGates(), serverOptions{})
	rc := rpcClient(t, ts.url, "")
	for range 3 {
		if err := rc.Call(context.Background(), "gate", "x", "Echo", 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	rc.Call(context.Background(), "nosuch", "x", "Echo", 1, nil)
	text := string(do(t, "GET", ts.url+"/metrics", nil).body)
	if got := metricValue(t, text, `cairn_http_requests_total{code="200",route="rpc-socket"}`); got != 3 {
		t.Errorf("rpc-socket 200: got %v, want 3", got)
	}
	if got := metricValue(t, text, `cairn_http_requests_total{code="404",route="rpc-socket"}`); got != 1 {
		t.Errorf("rpc-socket 404: got %v, want 1", got)
	}
}

// BenchmarkRPC makes the same trivial call (gate.Echo) from 16 clients,
// each with its own connection and object, one call at a time: an HTTP
// request per call, or frames on one RPC socket per client.
func BenchmarkRPC(b *testing.B) {
	const clients = 16
	ts := rpcServer(b, newGates(), serverOptions{})
	run := func(b *testing.B, call func(ctx context.Context, w, n int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start, cpu0 := time.Now(), cpuTime()
		for w := range clients {
			wg.Go(func() {
				for {
					n := next.Add(1)
					if n > int64(b.N) {
						return
					}
					if err := call(context.Background(), w, int(n)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		// The process's CPU time per call, server and client: unlike
		// calls/s it does not fall when other processes take the machine.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/call")
	}
	b.Run("http", func(b *testing.B) {
		var cs [clients]*cairnhttp.Client
		for i := range cs {
			cs[i] = cairnhttp.NewClient(ts.url, "")
			cs[i].HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			b.Cleanup(cs[i].HTTP.CloseIdleConnections)
		}
		run(b, func(ctx context.Context, w, n int) error {
			var out int
			path := cairnhttp.ObjectPath("/v1/objects", "gate", fmt.Sprint("bench-", w)) + "/rpc/Echo"
			if err := cs[w].JSON(ctx, "POST", path, n, &out); err != nil {
				return err
			}
			if out != n {
				return fmt.Errorf("Echo %d: got %d", n, out)
			}
			return nil
		})
	})
	socket := func(b *testing.B, conns int) {
		cs := make([]*cairnhttp.RPCConn, conns)
		for i := range cs {
			cs[i] = rpcClient(b, ts.url, "")
		}
		run(b, func(ctx context.Context, w, n int) error {
			var out int
			if err := cs[w%conns].Call(ctx, "gate", fmt.Sprint("bench-", w), "Echo", n, &out); err != nil {
				return err
			}
			if out != n {
				return fmt.Errorf("Echo %d: got %d", n, out)
			}
			return nil
		})
	}
	b.Run("socket", func(b *testing.B) { socket(b, clients) })
	// The 16 clients share one socket, as goroutines of one process
	// would: many calls in flight on it.
	b.Run("socket-shared", func(b *testing.B) { socket(b, 1) })
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// FuzzRPCFrame sends arbitrary frames on an RPC socket: each is answered
// in the documented shape, or not at all (a cancel), and the socket stays
// usable, which a call sent after each frame checks.
func FuzzRPCFrame(f *testing.F) {
	ts := newServer(f, serverOptions{tuneSrv: func(s *cairnhttp.Server) { s.MaxBodyBytes = 1 << 10 }})
	for _, seed := range []string{
		callFrame(1, "kv", "fuzz", "Put", map[string]string{"key": "k", "value": "v"}),
		callFrame("a", "kv", "fuzz", "List", nil),
		`{"id":2,"ns":"kv","name":"fuzz","method":"Get","args":{"key":"k"}}`,
		`{"id":3,"ns":"kv","name":"fuzz","method":"Get","args":null}`,
		`{"cancel":1}`,
		`{"cancel":"a","id":1}`,
		`{"id":1e3,"ns":"kv","name":"\u0000","method":"List"}`,
		`{"id":-0.5,"ns":"room","name":"r","method":"Nope"}`,
		`{"id":"\ud800","ns":"kv","name":"x","method":"List"}`,
		`{"id":4,"ns":"kv","name":"x","method":"List","arg":{}}`,
		`{"id":5,"ns":"kv","name":"x","method":"List"}}`,
		`{"id":6,"ns":"kv"`,
		"{\"id\":7,\"ns\":\"kv\",\"name\":\"\xff\",\"method\":\"List\"}",
		`[]`, `null`, `"id"`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 32<<10 {
			t.Skip("frames above the limit close the socket (TestRPCSocketMalformedFrames)")
		}
		c := dial(t, ts.url+"/v1/rpc", nil) // one per input, so that a failure replays alone
		const sentinel = `"sentinel"`
		send(t, c, string(frame))
		send(t, c, fmt.Sprintf(`{"id":%s,"ns":"kv","name":"fuzz","method":"List"}`, sentinel))
		for {
			a := readAnswer(t, c)
			if string(a.ID) == sentinel {
				break
			}
			if a.Error != nil && a.Error.Status != cairn.HTTPStatus(cairn.Code(a.Error.Code)) {
				t.Fatalf("frame %q: answer %s: status does not match the code", frame, a.raw)
			}
		}
	})
}

// TestRPCSocketPings proves that the server pings its RPC sockets: a
// client that stops answering (it never reads, as a vanished machine)
// is dropped after about two intervals, its waiting call canceled, while
// a client that reads (the library answers pings as it reads) keeps its
// call waiting for many intervals.
func TestRPCSocketPings(t *testing.T) {
	g := newGates()
	defer g.open()
	const iv = 50 * time.Millisecond
	ts := rpcServer(t, g, serverOptions{tuneSrv: func(s *cairnhttp.Server) { s.RPCPingInterval = iv }})

	alive := rpcDial(t, ts, "")
	go func() {
		for {
			if _, _, err := alive.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	send(t, alive, callFrame(1, "gate", "g", "Wait", "alive"))
	recv(t, "the live client's Wait to start", g.started)

	dead := rpcDial(t, ts, "") // never reads: no pong
	send(t, dead, callFrame(1, "gate", "g", "Wait", "dead"))
	recv(t, "the dead client's Wait to start", g.started)
	start := time.Now()
	if got := recv(t, "the dead client's call to be canceled", g.canceled); got != "dead" {
		t.Fatalf("canceled %q first, want dead", got)
	}
	if d := time.Since(start); d > 20*iv {
		t.Errorf("dropped after %v, want about two ping intervals (%v)", d, 2*iv)
	}
	time.Sleep(10 * iv)
	select {
	case got := <-g.canceled:
		t.Errorf("canceled %q too: a client that reads answers the pings", got)
	default:
	}
}
