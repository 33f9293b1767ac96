package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/builtin"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
	"github.com/coder/websocket"
)

// Test servers.

type serverOptions struct {
	tokens  []cairnhttp.Token
	classes map[string]cairn.Class // registered next to the built-in classes
	tune    func(rt *cairn.Runtime)
	tuneSrv func(s *cairnhttp.Server)
}

type testServer struct {
	rt  *cairn.Runtime
	srv *cairnhttp.Server
	url string
}

// newServer runs the full HTTP API (metrics included, as `cairn serve` has
// them) over a runtime on a fresh data directory, on 127.0.0.1:0.
func newServer(tb testing.TB, opts serverOptions) *testServer {
	tb.Helper()
	eng, err := sqlite.Open(tb.TempDir(), cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	if opts.tune != nil {
		opts.tune(rt)
	}
	for name, class := range builtin.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			tb.Fatal(err)
		}
	}
	for name, class := range opts.classes {
		if _, err := rt.Register(name, class); err != nil {
			tb.Fatal(err)
		}
	}
	metrics := cairnhttp.NewMetrics(rt)
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			tb.Errorf("close runtime: %v", err)
		}
	})
	srv := cairnhttp.NewServer(rt)
	srv.Tokens = opts.tokens
	srv.Metrics = metrics
	if opts.tuneSrv != nil {
		opts.tuneSrv(srv)
	}
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	return &testServer{rt: rt, srv: srv, url: hs.URL}
}

// id returns the ID of the object called name in namespace ns.
func (ts *testServer) id(tb testing.TB, ns, name string) cairn.ID {
	tb.Helper()
	n, err := ts.rt.Namespace(ns)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := n.IDFromName(name)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// noRedirects is a client that shows redirects instead of following them,
// so that a test sees what the server answered.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; hdr holds header name and value pairs.
func do(tb testing.TB, method, u string, body []byte, hdr ...string) response {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantOK fails unless r is a 200.
func wantOK(tb testing.TB, what string, r response) {
	tb.Helper()
	if r.status != http.StatusOK {
		tb.Fatalf("%s: got status %d (%s), want 200", what, r.status, r.body)
	}
}

// decode decodes r's JSON body into v.
func decode(tb testing.TB, what string, r response, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("%s: decode %q: %v", what, r.body, err)
	}
}

// wantError checks that r is an error with the given status and code, in
// the documented shape: {"error": {"code": "...", "message": "..."}} and
// nothing else.
func wantError(tb testing.TB, what string, r response, status int, code string) {
	tb.Helper()
	if r.status != status {
		tb.Errorf("%s: got status %d (%s), want %d", what, r.status, r.body, status)
		return
	}
	checkErrorShape(tb, what, r.header, r.body)
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.body, &eb)
	if code != "" && eb.Error.Code != code {
		tb.Errorf("%s: got error code %q, want %q (body %s)", what, eb.Error.Code, code, r.body)
	}
}

// checkErrorShape checks an error body's shape and content type.
func checkErrorShape(tb testing.TB, what string, h http.Header, body []byte) {
	tb.Helper()
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("%s: got Content-Type %q, want application/json", what, ct)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		tb.Errorf("%s: error body %q is not a JSON object: %v", what, body, err)
		return
	}
	if len(top) != 1 || top["error"] == nil {
		tb.Errorf("%s: error body %s: want exactly one member, \"error\"", what, body)
		return
	}
	var e map[string]any
	if err := json.Unmarshal(top["error"], &e); err != nil {
		tb.Errorf("%s: error body %s: \"error\" is not an object", what, body)
		return
	}
	code, _ := e["code"].(string)
	msg, _ := e["message"].(string)
	if len(e) != 2 || code == "" || msg == "" {
		tb.Errorf("%s: error body %s: want error.code and error.message, non-empty strings, and nothing else", what, body)
	}
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

// clock is an injectable clock, moved by hand.
type clock struct{ nanos atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.nanos.Store(time.Now().UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *clock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

// evict moves the clock past the idle timeout and evicts until the object
// is out of memory (a turn may still be finishing when the test gets its
// output).
func evict(tb testing.TB, rt *cairn.Runtime, c *clock, id cairn.ID) {
	tb.Helper()
	waitFor(tb, "eviction of "+id.String()[:8], func() bool {
		c.Advance(rt.IdleTimeout + time.Second)
		rt.EvictIdle()
		return !rt.IsActive(id)
	})
}

// WebSockets.

func wsURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

func dial(tb testing.TB, u string, hdr http.Header) *websocket.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(u), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s: %v (status %d)", u, err, status)
	}
	tb.Cleanup(func() { c.CloseNow() })
	return c
}

// read reads one message, failing the test after 10 s.
func read(tb testing.TB, c *websocket.Conn) (websocket.MessageType, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("read websocket: %v", err)
	}
	return typ, b
}

func readJSON(tb testing.TB, c *websocket.Conn, v any) {
	tb.Helper()
	_, b := read(tb, c)
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("websocket message %q: %v", b, err)
	}
}

func send(tb testing.TB, c *websocket.Conn, text string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		tb.Fatalf("write websocket: %v", err)
	}
}

// 1. The kv class over HTTP.

func TestKV(t *testing.T) {
	ts := newServer(t, serverOptions{})
	obj := ts.url + "/v1/objects/kv/box"

	t.Run("put get delete", func(t *testing.T) {
		wantOK(t, "put", do(t, "PUT", obj+"/greeting", []byte("hello")))
		r := do(t, "GET", obj+"/greeting", nil)
		wantOK(t, "get", r)
		if got, want := string(r.body), "hello"; got != want {
			t.Errorf("get: got %q, want %q", got, want)
		}
		wantOK(t, "overwrite", do(t, "PUT", obj+"/greeting", []byte("bye")))
		if got, want := string(do(t, "GET", obj+"/greeting", nil).body), "bye"; got != want {
			t.Errorf("get after overwrite: got %q, want %q", got, want)
		}
		var del struct{ Deleted bool }
		r = do(t, "DELETE", obj+"/greeting", nil)
		wantOK(t, "delete", r)
		decode(t, "delete", r, &del)
		if !del.Deleted {
			t.Errorf("delete: got deleted false, want true")
		}
		r = do(t, "DELETE", obj+"/greeting", nil)
		decode(t, "delete again", r, &del)
		if del.Deleted {
			t.Errorf("delete again: got deleted true, want false")
		}
		wantError(t, "get after delete", do(t, "GET", obj+"/greeting", nil), http.StatusNotFound, "not_found")
	})

	t.Run("keys with slashes", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/slashes"
		wantOK(t, "put a/b/c", do(t, "PUT", o+"/a/b/c", []byte("1")))
		wantOK(t, "put escaped", do(t, "PUT", o+"/x%2Fy", []byte("2")))
		wantOK(t, "put trailing slash", do(t, "PUT", o+"/dir/", []byte("3")))
		wantOK(t, "put double slash escaped", do(t, "PUT", o+"/p%2F%2Fq", []byte("4")))
		for key, want := range map[string]string{"a/b/c": "1", "x/y": "2", "dir/": "3", "p//q": "4"} {
			var got builtin.GetResult
			r := do(t, "POST", o+"/rpc/Get", []byte(`{"key":`+strconv.Quote(key)+`}`))
			wantOK(t, "rpc get "+key, r)
			decode(t, "rpc get "+key, r, &got)
			if got.Value == nil || *got.Value != want {
				t.Errorf("key %q: got %s, want %q", key, r.body, want)
			}
		}
		if got, want := string(do(t, "GET", o+"/x/y", nil).body), "2"; got != want {
			t.Errorf("GET x/y (stored as x%%2Fy): got %q, want %q", got, want)
		}
	})

	t.Run("names with slashes", func(t *testing.T) {
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/team%2Fa/k", []byte("a")))
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/team%2Fb/k", []byte("b")))
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/team%2Fa/k", nil).body); got != "a" {
			t.Errorf("object team/a: got %q, want %q", got, "a")
		}
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/team%2Fb/k", nil).body); got != "b" {
			t.Errorf("object team/b: got %q, want %q", got, "b")
		}
	})

	t.Run("binary values", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/binary"
		val := make([]byte, 256*4)
		for i := range val {
			val[i] = byte(i)
		}
		wantOK(t, "put", do(t, "PUT", o+"/bin", val))
		r := do(t, "GET", o+"/bin", nil)
		wantOK(t, "get", r)
		if !bytes.Equal(r.body, val) {
			t.Errorf("get: got %d bytes differing from the %d put", len(r.body), len(val))
		}
		wantOK(t, "put empty", do(t, "PUT", o+"/empty", []byte{}))
		r = do(t, "GET", o+"/empty", nil)
		wantOK(t, "get empty", r)
		if len(r.body) != 0 {
			t.Errorf("get empty: got %q, want empty", r.body)
		}
		var list builtin.ListResult
		decode(t, "list", do(t, "GET", o+"/?prefix=bin", nil), &list)
		if len(list.Entries) != 1 || list.Entries[0].Encoding != "base64" || list.Entries[0].Value == "" {
			t.Fatalf("list: got %+v, want one base64 entry", list.Entries)
		}
	})

	t.Run("list", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/lister"
		for _, k := range []string{"a/1", "a/2", "a/3", "b/1", "c"} {
			wantOK(t, "put "+k, do(t, "PUT", o+"/"+k, []byte("v-"+k)))
		}
		keys := func(query string) []string {
			t.Helper()
			r := do(t, "GET", o+"/"+query, nil)
			wantOK(t, "list "+query, r)
			var res builtin.ListResult
			decode(t, "list "+query, r, &res)
			out := []string{}
			for _, e := range res.Entries {
				if e.Value != "v-"+e.Key {
					t.Errorf("list %s: key %q has value %q, want %q", query, e.Key, e.Value, "v-"+e.Key)
				}
				out = append(out, e.Key)
			}
			return out
		}
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"", []string{"a/1", "a/2", "a/3", "b/1", "c"}},
			{"?prefix=a/", []string{"a/1", "a/2", "a/3"}},
			{"?prefix=a%2F&limit=2", []string{"a/1", "a/2"}},
			{"?prefix=a/&reverse=true", []string{"a/3", "a/2", "a/1"}},
			{"?reverse=true&limit=2", []string{"c", "b/1"}},
			{"?start=a/2&end=b/1", []string{"a/2", "a/3"}},
			{"?prefix=zzz", []string{}},
		} {
			if got := keys(tc.query); !slices.Equal(got, tc.want) {
				t.Errorf("list %q: got %q, want %q", tc.query, got, tc.want)
			}
		}
		wantError(t, "limit 0", do(t, "GET", o+"/?limit=0", nil), http.StatusBadRequest, "invalid")
		wantError(t, "limit 1001", do(t, "GET", o+"/?limit=1001", nil), http.StatusBadRequest, "invalid")
		wantError(t, "reverse=maybe", do(t, "GET", o+"/?reverse=maybe", nil), http.StatusBadRequest, "invalid")
	})

	t.Run("oversize body", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/big"
		body := bytes.Repeat([]byte("x"), int(ts.srv.MaxBodyBytes)+1)
		wantError(t, "put", do(t, "PUT", o+"/k", body), http.StatusRequestEntityTooLarge, "too_large")
		wantError(t, "get after refused put", do(t, "GET", o+"/k", nil), http.StatusNotFound, "not_found")
	})

	t.Run("oversize value", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/big"
		limit := cairn.DefaultLimits.MaxValueBytes
		if int64(limit)+1 >= ts.srv.MaxBodyBytes {
			t.Fatalf("value limit %d is not under MaxBodyBytes %d", limit, ts.srv.MaxBodyBytes)
		}
		wantError(t, "put", do(t, "PUT", o+"/k", bytes.Repeat([]byte("y"), limit+1)), http.StatusRequestEntityTooLarge, "too_large")
		wantError(t, "get after refused put", do(t, "GET", o+"/k", nil), http.StatusNotFound, "not_found")
		// The limit itself is accepted, with the longest key.
		key := strings.Repeat("k", cairn.DefaultLimits.MaxKeyBytes)
		wantOK(t, "put at the limit", do(t, "PUT", o+"/"+key, bytes.Repeat([]byte("z"), limit)))
		if r := do(t, "GET", o+"/"+key, nil); len(r.body) != limit {
			t.Errorf("get at the limit: got %d bytes, want %d", len(r.body), limit)
		}
	})

	t.Run("oversize key", func(t *testing.T) {
		o := ts.url + "/v1/objects/kv/big"
		key := strings.Repeat("k", cairn.DefaultLimits.MaxKeyBytes+1)
		wantError(t, "put", do(t, "PUT", o+"/"+key, []byte("v")), http.StatusRequestEntityTooLarge, "too_large")
	})
}

// 2. Error paths.

func TestErrors(t *testing.T) {
	ts := newServer(t, serverOptions{})
	wantOK(t, "seed key", do(t, "PUT", ts.url+"/v1/objects/kv/x/keep", []byte("kept")))

	long := strings.Repeat("n", cairn.MaxNameLen+1)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown route", "GET", "/nope", "", 404, "not_found"},
		{"unknown v1 route", "GET", "/v1/things", "", 404, "not_found"},
		{"unknown namespace", "GET", "/v1/objects/nosuch/x/k", "", 404, "not_found"},
		{"unknown namespace rpc", "POST", "/v1/objects/nosuch/x/rpc/Get", "{}", 404, "not_found"},
		{"unknown namespace admin", "GET", "/v1/admin/objects/nosuch/x", "", 404, "not_found"},
		{"invalid namespace", "GET", "/v1/objects/k%20v/x/k", "", 400, "invalid"},
		{"long namespace", "GET", "/v1/objects/" + strings.Repeat("n", cairn.MaxNamespaceLen+1) + "/x/k", "", 400, "invalid"},
		{"1025-byte name", "GET", "/v1/objects/kv/" + long + "/k", "", 400, "invalid"},
		{"1025-byte name rpc", "POST", "/v1/objects/kv/" + long + "/rpc/Get", "{}", 400, "invalid"},
		{"1025-byte name admin", "GET", "/v1/admin/objects/kv/" + long + "/kv", "", 400, "invalid"},
		{"invalid UTF-8 name", "GET", "/v1/objects/kv/%ff/k", "", 400, "invalid"},
		{"invalid UTF-8 inside name", "PUT", "/v1/objects/kv/a%c3b/k", "v", 400, "invalid"},
		{"NUL name", "GET", "/v1/objects/kv/%00/k", "", 400, "invalid"},
		{"NUL inside name", "PUT", "/v1/objects/kv/a%00b/k", "v", 400, "invalid"},
		{"NUL name admin", "GET", "/v1/admin/objects/kv/a%00b/kv", "", 400, "invalid"},
		{"bad ID admin", "GET", "/v1/admin/objects/kv/abc?by=id", "", 400, "invalid"},
		{"ID of another namespace", "GET", "/v1/admin/objects/kv/" + ts.id(t, "room", "x").String() + "?by=id", "", 400, "invalid"},
		{"missing key", "GET", "/v1/objects/kv/x/absent", "", 404, "not_found"},
		{"kv POST /", "POST", "/v1/objects/kv/x/", "", 400, "invalid"},
		{"kv method on key", "PATCH", "/v1/objects/kv/x/k", "", 405, "method_not_allowed"},
		{"room unknown path", "GET", "/v1/objects/room/r/nope", "", 404, "not_found"},
		{"room without upgrade", "GET", "/v1/objects/room/r/", "", 400, "invalid"},
		{"admin namespaces POST", "POST", "/v1/admin/namespaces", "", 405, "method_not_allowed"},
		{"admin objects DELETE", "DELETE", "/v1/admin/namespaces/kv/objects", "", 405, "method_not_allowed"},
		{"admin object PATCH", "PATCH", "/v1/admin/objects/kv/x", "", 405, "method_not_allowed"},
		{"admin kv list POST", "POST", "/v1/admin/objects/kv/x/kv", "", 405, "method_not_allowed"},
		{"admin kv key POST", "POST", "/v1/admin/objects/kv/x/kv/k", "", 405, "method_not_allowed"},
		{"admin sql GET", "GET", "/v1/admin/objects/kv/x/sql", "", 405, "method_not_allowed"},
		{"admin alarm POST", "POST", "/v1/admin/objects/kv/x/alarm", "", 405, "method_not_allowed"},
		{"admin usage PUT", "PUT", "/v1/admin/usage", "", 405, "method_not_allowed"},
		{"admin objects limit 0", "GET", "/v1/admin/namespaces/kv/objects?limit=0", "", 400, "invalid"},
		{"admin objects limit junk", "GET", "/v1/admin/namespaces/kv/objects?limit=x", "", 400, "invalid"},
		{"admin inspect unknown object", "GET", "/v1/admin/objects/kv/never-written", "", 404, "not_found"},
		{"admin kv get missing", "GET", "/v1/admin/objects/kv/x/kv/absent", "", 404, "not_found"},
		{"rpc malformed JSON", "POST", "/v1/objects/kv/x/rpc/Put", "{", 400, "invalid"},
		{"rpc trailing garbage", "POST", "/v1/objects/kv/x/rpc/Put", `{"key":"a"} x`, 400, "invalid"},
		{"rpc wrong argument type", "POST", "/v1/objects/kv/x/rpc/Put", `"just a string"`, 400, "invalid"},
		{"rpc unknown method", "POST", "/v1/objects/kv/x/rpc/Nope", "{}", 404, "not_found"},
		{"rpc hook is not a method", "POST", "/v1/objects/kv/x/rpc/ServeHTTP", "{}", 404, "not_found"},
		{"rpc long method", "POST", "/v1/objects/kv/x/rpc/" + strings.Repeat("M", 129), "{}", 400, "invalid"},
		{"rpc empty key", "POST", "/v1/objects/kv/x/rpc/Put", `{"key":"","value":"v"}`, 400, "invalid"},
		{"rpc key not UTF-8", "POST", "/v1/objects/kv/x/rpc/Put", "{\"key\":\"a\xffb\",\"value\":\"v\"}", 400, "invalid"},
		{"sql syntax error", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELEC 1"}`, 400, "invalid"},
		{"sql unknown table", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELECT * FROM nosuch"}`, 400, "invalid"},
		{"sql malformed body", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":`, 400, "invalid"},
		{"sql unknown field", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELECT 1","bogus":1}`, 400, "invalid"},
		{"sql object argument", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELECT ?","args":[{"a":1}]}`, 400, "invalid"},
		{"sql transaction control", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"BEGIN"}`, 400, "invalid"},
		{"sql attach", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"ATTACH DATABASE 'other.db' AS o"}`, 400, "invalid"},
		{"sql pragma", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"PRAGMA journal_mode=DELETE"}`, 400, "invalid"},
		{"sql reads _cairn_kv", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELECT * FROM _cairn_kv"}`, 400, "invalid"},
		{"sql deletes _cairn_kv", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"DELETE FROM _cairn_kv"}`, 400, "invalid"},
		{"sql drops _cairn_kv", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"DROP TABLE _cairn_kv"}`, 400, "invalid"},
		{"sql upper-case _CAIRN_KV", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"UPDATE _CAIRN_KV SET value = x''"}`, 400, "invalid"},
		{"sql quoted _cairn_kv", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"INSERT INTO \"_cairn_kv\" VALUES (x'6b', x'76')"}`, 400, "invalid"},
		{"sql _cairn_meta", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"SELECT * FROM main._cairn_meta"}`, 400, "invalid"},
		{"sql creates _cairn_ table", "POST", "/v1/admin/objects/kv/x/sql", `{"sql":"CREATE TABLE _cairn_mine (a)"}`, 400, "invalid"},
		{"alarm without at", "PUT", "/v1/admin/objects/kv/x/alarm", `{}`, 400, "invalid"},
		{"alarm bad time", "PUT", "/v1/admin/objects/kv/x/alarm", `{"at":"tomorrow"}`, 400, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			wantError(t, tc.method+" "+tc.path, do(t, tc.method, ts.url+tc.path, body), tc.status, tc.code)
		})
	}

	t.Run("405 names the allowed methods", func(t *testing.T) {
		r := do(t, "POST", ts.url+"/v1/admin/namespaces", nil)
		if got, want := r.header.Get("Allow"), "GET"; got != want {
			t.Errorf("Allow: got %q, want %q", got, want)
		}
	})

	t.Run("a 1024-byte name is fine", func(t *testing.T) {
		name := strings.Repeat("é", cairn.MaxNameLen/2)
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/"+url.PathEscape(name)+"/k", []byte("v")))
	})

	t.Run("refused SQL wrote nothing", func(t *testing.T) {
		r := do(t, "GET", ts.url+"/v1/objects/kv/x/keep", nil)
		if r.status != 200 || string(r.body) != "kept" {
			t.Errorf("key keep after refused SQL: got %d %q, want 200 %q", r.status, r.body, "kept")
		}
		r = do(t, "POST", ts.url+"/v1/admin/objects/kv/x/sql", []byte(`{"sql":"SELECT count(*) FROM sqlite_schema WHERE name = '_cairn_mine'"}`))
		wantOK(t, "sql", r)
		var res cairnhttp.SQLResponse
		decode(t, "sql", r, &res)
		if len(res.Rows) != 1 || res.Rows[0][0] != float64(0) {
			t.Errorf("tables named _cairn_mine: got %v, want [[0]]", res.Rows)
		}
	})
}

// Non-canonical paths (an empty name, "." and ".." segments, doubled
// slashes) are hostile input like any other: the server must answer them
// with an error in the documented shape, not redirect the request to a
// different object or key.
func TestNonCanonicalPathsAreNotRedirected(t *testing.T) {
	ts := newServer(t, serverOptions{})
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/objects/kv//k"},                           // empty name: redirected to object "k"
		{"POST", "/v1/objects/kv//rpc/Put"},                    // redirected to object "rpc", key "Put"
		{"PUT", "/v1/objects/kv/x/a//b"},                       // redirected to key "a/b"
		{"PUT", "/v1/objects/kv/x/../y/k"},                     // redirected to object "y"
		{"PUT", "/v1/admin/objects/kv/x/kv/a/../../../y/kv/k"}, // to object "y"
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := do(t, tc.method, ts.url+tc.path, []byte(`{"key":"k","value":"v"}`))
			if r.status/100 == 3 {
				t.Fatalf("got %d redirect to %q, want a 4xx JSON error", r.status, r.header.Get("Location"))
			}
			if r.status/100 != 4 {
				t.Fatalf("got status %d (%s), want a 4xx JSON error", r.status, r.body)
			}
			checkErrorShape(t, tc.path, r.header, r.body)
		})
	}
}

// 3. RPC.

func TestRPC(t *testing.T) {
	ts := newServer(t, serverOptions{})
	rpc := ts.url + "/v1/objects/kv/rpc-box/rpc/"
	r := do(t, "POST", rpc+"Put", []byte(`{"key":"a","value":"1"}`), "Content-Type", "application/json")
	wantOK(t, "Put", r)
	if got := strings.TrimSpace(string(r.body)); got != "null" {
		t.Errorf("Put: got %q, want null", got)
	}
	var got builtin.GetResult
	r = do(t, "POST", rpc+"Get", []byte(`{"key":"a"}`))
	wantOK(t, "Get", r)
	decode(t, "Get", r, &got)
	if got.Value == nil || *got.Value != "1" {
		t.Errorf("Get: got %s, want value 1", r.body)
	}
	r = do(t, "POST", rpc+"Get", []byte(`{"key":"absent"}`))
	wantOK(t, "Get absent", r)
	if got := strings.TrimSpace(string(r.body)); got != `{"value":null}` {
		t.Errorf("Get absent: got %s, want {\"value\":null}", got)
	}
	// The RPC and the HTTP face see the same storage.
	if got := string(do(t, "GET", ts.url+"/v1/objects/kv/rpc-box/a", nil).body); got != "1" {
		t.Errorf("GET after RPC Put: got %q, want 1", got)
	}
	var list builtin.ListResult
	r = do(t, "POST", rpc+"List", nil) // no body: no argument
	wantOK(t, "List", r)
	decode(t, "List", r, &list)
	if len(list.Entries) != 1 || list.Entries[0].Key != "a" {
		t.Errorf("List: got %s, want the one key a", r.body)
	}
	var del builtin.DeleteResult
	r = do(t, "POST", rpc+"Delete", []byte(`{"key":"a"}`))
	decode(t, "Delete", r, &del)
	if !del.Deleted {
		t.Errorf("Delete: got %s, want deleted true", r.body)
	}
	wantError(t, "GET RPC route", do(t, "GET", ts.url+"/v1/objects/kv/rpc-box/rpc/Get", nil), http.StatusNotFound, "not_found")
}

// 4. Auth (G11).

const (
	adminSecret = "admin-secret-0123456789"
	kvSecret    = "kv-only-secret-0123456789"
)

func TestAuth(t *testing.T) {
	ts := newServer(t, serverOptions{tokens: []cairnhttp.Token{
		{Name: "admin", Secret: adminSecret, Admin: true},
		{Name: "kv", Secret: kvSecret, Namespaces: []string{"kv"}},
	}})
	wantOK(t, "seed", do(t, "PUT", ts.url+"/v1/objects/kv/x/k", []byte("v"), "Authorization", "Bearer "+adminSecret))

	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
		code                     string
	}{
		{"healthz is open", "GET", "/healthz", "", 200, ""},
		{"no token", "GET", "/v1/objects/kv/x/k", "", 401, "unauthorized"},
		{"no token rpc", "POST", "/v1/objects/kv/x/rpc/List", "", 401, "unauthorized"},
		{"no token admin", "GET", "/v1/admin/namespaces", "", 401, "unauthorized"},
		{"wrong token", "GET", "/v1/objects/kv/x/k", "Bearer wrong-secret-0123456789", 401, "unauthorized"},
		{"token prefix", "GET", "/v1/objects/kv/x/k", "Bearer " + kvSecret[:len(kvSecret)-1], 401, "unauthorized"},
		{"empty bearer", "GET", "/v1/objects/kv/x/k", "Bearer ", 401, "unauthorized"},
		{"basic auth", "GET", "/v1/objects/kv/x/k", "Basic " + kvSecret, 401, "unauthorized"},
		{"kv token on kv", "GET", "/v1/objects/kv/x/k", "Bearer " + kvSecret, 200, ""},
		{"kv token rpc on kv", "POST", "/v1/objects/kv/x/rpc/List", "Bearer " + kvSecret, 200, ""},
		{"kv token, lower-case scheme", "GET", "/v1/objects/kv/x/k", "bearer " + kvSecret, 200, ""},
		{"kv token on room", "GET", "/v1/objects/room/r/messages", "Bearer " + kvSecret, 403, "forbidden"},
		{"kv token rpc on room", "POST", "/v1/objects/room/r/rpc/Get", "Bearer " + kvSecret, 403, "forbidden"},
		{"kv token on unknown namespace", "GET", "/v1/objects/nosuch/r/k", "Bearer " + kvSecret, 403, "forbidden"},
		{"kv token on admin", "GET", "/v1/admin/namespaces", "Bearer " + kvSecret, 403, "forbidden"},
		{"kv token on admin of kv", "GET", "/v1/admin/objects/kv/x/kv", "Bearer " + kvSecret, 403, "forbidden"},
		{"kv token on admin usage", "GET", "/v1/admin/usage", "Bearer " + kvSecret, 403, "forbidden"},
		{"metrics without token", "GET", "/metrics", "", 401, "unauthorized"},
		{"metrics with kv token", "GET", "/metrics", "Bearer " + kvSecret, 403, "forbidden"},
		{"metrics with admin token", "GET", "/metrics", "Bearer " + adminSecret, 200, ""},
		{"admin token on kv", "GET", "/v1/objects/kv/x/k", "Bearer " + adminSecret, 200, ""},
		{"admin token on room", "GET", "/v1/objects/room/r/messages", "Bearer " + adminSecret, 200, ""},
		{"admin token on session", "GET", "/v1/objects/session/s/get", "Bearer " + adminSecret, 200, ""},
		{"admin token on admin", "GET", "/v1/admin/namespaces", "Bearer " + adminSecret, 200, ""},
		{"admin token on admin kv", "GET", "/v1/admin/objects/kv/x/kv/k", "Bearer " + adminSecret, 200, ""},
		{"admin token on usage", "GET", "/v1/admin/usage", "Bearer " + adminSecret, 200, ""},
		{"admin token on unknown namespace", "GET", "/v1/objects/nosuch/r/k", "Bearer " + adminSecret, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.auth != "" {
				hdr = []string{"Authorization", tc.auth}
			}
			r := do(t, tc.method, ts.url+tc.path, nil, hdr...)
			if tc.status == 200 {
				wantOK(t, tc.path, r)
				return
			}
			wantError(t, tc.path, r, tc.status, tc.code)
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}

	t.Run("websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, tc := range []struct {
			name, auth string
			status     int
		}{
			{"no token", "", 401},
			{"kv token on room", "Bearer " + kvSecret, 403},
		} {
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			c, resp, err := websocket.Dial(ctx, wsURL(ts.url)+"/v1/objects/room/r/", &websocket.DialOptions{HTTPHeader: hdr})
			if err == nil {
				c.CloseNow()
				t.Errorf("%s: dial succeeded, want %d", tc.name, tc.status)
				continue
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Errorf("%s: got %v, want status %d", tc.name, err, tc.status)
			}
		}
		c := dial(t, ts.url+"/v1/objects/room/r/?user=admin", http.Header{"Authorization": {"Bearer " + adminSecret}})
		var joined map[string]any
		readJSON(t, c, &joined)
		if joined["joined"] != "admin" {
			t.Errorf("admin socket: got %v, want joined admin", joined)
		}
	})
}

func TestCheckListen(t *testing.T) {
	rt := cairn.NewRuntime(nil) // CheckListen needs no engine
	open := cairnhttp.NewServer(rt)
	withTokens := cairnhttp.NewServer(rt)
	withTokens.Tokens = []cairnhttp.Token{{Name: "admin", Secret: adminSecret, Admin: true}}
	for _, tc := range []struct {
		srv  *cairnhttp.Server
		addr string
		ok   bool
	}{
		{open, "127.0.0.1:0", true},
		{open, "127.0.0.1:8420", true},
		{open, "127.1.2.3:0", true},
		{open, "localhost:0", true},
		{open, "[::1]:0", true},
		{open, "0.0.0.0:0", false},
		{open, ":8420", false},
		{open, "[::]:0", false},
		{open, "192.168.1.10:0", false},
		{open, "example.com:80", false},
		{open, "no-port", false},
		{withTokens, "0.0.0.0:0", true},
		{withTokens, ":8420", true},
	} {
		err := tc.srv.CheckListen(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q) with %d tokens: got %v, want ok %v", tc.addr, len(tc.srv.Tokens), err, tc.ok)
		}
		if err != nil && cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("CheckListen(%q): got code %q, want invalid", tc.addr, cairn.ErrorCode(err))
		}
	}
}

// 5. WebSocket hibernation (G8).

func TestRoomHibernation(t *testing.T) {
	clk := newClock()
	ts := newServer(t, serverOptions{tune: func(rt *cairn.Runtime) { rt.Now = clk.Now }})
	rt := ts.rt
	id := ts.id(t, "room", "lobby")
	room := ts.url + "/v1/objects/room/lobby/"

	a := dial(t, room+"?user=a", nil)
	var joined struct {
		Joined  string
		Members int
	}
	readJSON(t, a, &joined)
	if joined.Joined != "a" || joined.Members != 1 {
		t.Fatalf("a joined: got %+v, want a with 1 member", joined)
	}
	b := dial(t, room+"?user=b", nil)
	readJSON(t, b, &joined)
	if joined.Joined != "b" || joined.Members != 2 {
		t.Fatalf("b joined: got %+v, want b with 2 members", joined)
	}

	wantMessage := func(c *websocket.Conn, who, user, text string) builtin.RoomMessage {
		t.Helper()
		var m builtin.RoomMessage
		readJSON(t, c, &m)
		if m.User != user || m.Text != text || m.Seq == 0 {
			t.Fatalf("%s received %+v, want a message from %q saying %q", who, m, user, text)
		}
		return m
	}
	send(t, a, "hello")
	m1 := wantMessage(a, "a", "a", "hello")
	if m2 := wantMessage(b, "b", "a", "hello"); m2 != m1 {
		t.Errorf("a and b received different broadcasts: %+v and %+v", m1, m2)
	}

	evictions := rt.Stats().Evictions
	evict(t, rt, clk, id)
	if got := rt.Stats().Evictions; got <= evictions {
		t.Errorf("evictions: got %d, want more than %d", got, evictions)
	}
	if got := rt.Sockets(); got != 2 {
		t.Fatalf("open sockets after eviction: got %d, want 2", got)
	}

	// The auto-response answers without waking the object.
	activations := rt.Stats().Activations
	send(t, a, "ping")
	if typ, got := read(t, a); typ != websocket.MessageText || string(got) != "pong" {
		t.Fatalf("ping: got %v %q, want text pong", typ, got)
	}
	if rt.IsActive(id) {
		t.Errorf("the room is active after a ping; the auto-response must not wake it")
	}
	if got := rt.Stats().Activations; got != activations {
		t.Errorf("activations after ping: got %d, want %d", got, activations)
	}

	// A real message wakes it, and the attachment (the user name) survived.
	send(t, a, "after the nap")
	wantMessage(a, "a", "a", "after the nap")
	wantMessage(b, "b", "a", "after the nap") // b saw no pong in between
	if !rt.IsActive(id) {
		t.Errorf("the room is not active after a message")
	}
	if got := rt.Stats().Activations; got != activations+1 {
		t.Errorf("activations after message: got %d, want %d", got, activations+1)
	}
	evict(t, rt, clk, id)
	send(t, b, "me too")
	wantMessage(a, "a", "b", "me too")
	wantMessage(b, "b", "b", "me too")

	// The messages are stored.
	r := do(t, "GET", room+"messages", nil)
	wantOK(t, "messages", r)
	var hist struct{ Messages []builtin.RoomMessage }
	decode(t, "messages", r, &hist)
	var texts []string
	for _, m := range hist.Messages {
		texts = append(texts, m.User+": "+m.Text)
	}
	if want := []string{"a: hello", "a: after the nap", "b: me too"}; !slices.Equal(texts, want) {
		t.Errorf("stored messages: got %q, want %q", texts, want)
	}

	// Closing a socket, while the room is evicted, delivers the close event.
	evict(t, rt, clk, id)
	if err := a.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close a: %v", err)
	}
	var left map[string]string
	readJSON(t, b, &left)
	if left["left"] != "a" {
		t.Errorf("b received %v, want {\"left\":\"a\"}", left)
	}
	waitFor(t, "one socket left", func() bool { return rt.Sockets() == 1 })
}

// probe is a class for the hibernation test: it accepts sockets with a tag
// and an attachment of ?size= bytes, and answers any message with what it
// sees of the socket.
type probe struct{ st *cairn.State }

func attachment(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func (p *probe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	size, _ := strconv.Atoi(r.URL.Query().Get("size"))
	_, err := p.st.AcceptWebSocket(r, cairn.SocketOptions{Tags: []string{r.URL.Query().Get("tag")}, Attachment: attachment(size)})
	if err != nil {
		status := http.StatusBadRequest
		if cairn.ErrorCode(err) == cairn.TooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, err.Error(), status)
	}
}

type probeReport struct {
	Attachment int      `json:"attachment"`
	Intact     bool     `json:"intact"`
	Tags       []string `json:"tags"`
	Tagged     int      `json:"tagged"` // sockets with the tag named by the message
}

func (p *probe) WebSocketMessage(ctx context.Context, ws *cairn.WebSocket, m cairn.Message) error {
	att := ws.Attachment()
	b, _ := json.Marshal(probeReport{
		Attachment: len(att), Intact: bytes.Equal(att, attachment(len(att))),
		Tags: ws.Tags(), Tagged: len(p.st.WebSockets(string(m.Data))),
	})
	return ws.Send(ctx, cairn.Message{Text: true, Data: b})
}

func (p *probe) WebSocketClose(ctx context.Context, ws *cairn.WebSocket, code int, reason string) error {
	return nil
}

func TestSocketAttachmentAndTagsSurviveEviction(t *testing.T) {
	clk := newClock()
	ts := newServer(t, serverOptions{
		tune:    func(rt *cairn.Runtime) { rt.Now = clk.Now },
		classes: map[string]cairn.Class{"probe": {New: func(st *cairn.State) (any, error) { return &probe{st}, nil }}},
	})
	id := ts.id(t, "probe", "p")
	base := ts.url + "/v1/objects/probe/p/"
	red := dial(t, base+"?tag=red&size="+strconv.Itoa(16<<10), nil)
	dial(t, base+"?tag=blue&size=10", nil)
	waitFor(t, "two sockets", func() bool { return ts.rt.Sockets() == 2 })

	evict(t, ts.rt, clk, id)
	send(t, red, "red")
	var rep probeReport
	readJSON(t, red, &rep)
	want := probeReport{Attachment: 16 << 10, Intact: true, Tags: []string{"red"}, Tagged: 1}
	if rep.Attachment != want.Attachment || !rep.Intact || !slices.Equal(rep.Tags, want.Tags) || rep.Tagged != want.Tagged {
		t.Errorf("after eviction: got %+v, want %+v", rep, want)
	}
	if !ts.rt.IsActive(id) {
		t.Errorf("the object is not active after a message")
	}

	t.Run("attachment over the limit", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, wsURL(base)+"?tag=x&size="+strconv.Itoa(cairn.MaxSocketAttachment+1), nil)
		if err == nil {
			c.CloseNow()
			t.Fatalf("dial with a %d-byte attachment succeeded", cairn.MaxSocketAttachment+1)
		}
		if resp == nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("got %v, want status 413", err)
		}
		if got := ts.rt.Sockets(); got != 2 {
			t.Errorf("sockets after a refused accept: got %d, want 2", got)
		}
	})
}

// 6. Metrics.

// metricValue returns the value of one series of a Prometheus text
// exposition, written as it appears (labels sorted by name).
func metricValue(tb testing.TB, text, series string) float64 {
	tb.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(series):]), 64)
			if err != nil {
				tb.Fatalf("series %s: %v", series, err)
			}
			return v
		}
	}
	tb.Fatalf("no series %s in /metrics", series)
	return 0
}

func TestMetrics(t *testing.T) {
	ts := newServer(t, serverOptions{tune: func(rt *cairn.Runtime) { rt.MaxActive = 2 }})
	const puts = 5
	for i := 0; i < puts; i++ {
		wantOK(t, "put", do(t, "PUT", fmt.Sprintf("%s/v1/objects/kv/m%d/k", ts.url, i), []byte("value")))
	}
	wantOK(t, "rpc", do(t, "POST", ts.url+"/v1/objects/kv/m0/rpc/Get", []byte(`{"key":"k"}`)))
	do(t, "GET", ts.url+"/nope", nil)
	c := dial(t, ts.url+"/v1/objects/room/metrics/", nil)
	read(t, c)
	if err := ts.rt.FlushUsage(); err != nil {
		t.Fatal(err)
	}

	r := do(t, "GET", ts.url+"/metrics", nil)
	wantOK(t, "metrics", r)
	text := string(r.body)
	for _, tc := range []struct {
		series string
		min    float64
	}{
		{"cairn_turns_total", puts + 2},
		{"cairn_commits_total", puts},
		{"cairn_active_objects", 1},
		{"cairn_evictions_total", puts - 2},
		{"cairn_websockets", 1},
		{`cairn_storage_bytes{namespace="kv"}`, 1},
		{`cairn_turn_duration_seconds_count{namespace="kv"}`, puts + 1},
		{`cairn_turn_duration_seconds_count{namespace="room"}`, 1},
		{"cairn_commit_duration_seconds_count", puts},
		{"cairn_commit_batch_turns_count", puts},
		{`cairn_http_requests_total{code="200",route="fetch"}`, puts},
		{`cairn_http_requests_total{code="200",route="rpc"}`, 1},
		{`cairn_http_requests_total{code="404",route="notfound"}`, 1},
	} {
		if got := metricValue(t, text, tc.series); got < tc.min {
			t.Errorf("%s: got %v, want at least %v", tc.series, got, tc.min)
		}
	}
	if got, want := metricValue(t, text, "cairn_active_objects"), float64(ts.rt.Active()); got != want {
		t.Errorf("cairn_active_objects: got %v, want %v", got, want)
	}
	if got := metricValue(t, text, "cairn_websockets"); got != 1 {
		t.Errorf("cairn_websockets: got %v, want 1", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the websocket gauge to drop", func() bool {
		return metricValue(t, string(do(t, "GET", ts.url+"/metrics", nil).body), "cairn_websockets") == 0
	})
}

// 7. Admin API.

func TestAdmin(t *testing.T) {
	ts := newServer(t, serverOptions{})
	admin := ts.url + "/v1/admin"
	names := []string{"obj-0", "obj-1", "obj-2", "obj-3", "obj-4"}
	for _, n := range names {
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/"+n+"/k", []byte("v-"+n)))
	}

	t.Run("namespaces", func(t *testing.T) {
		r := do(t, "GET", admin+"/namespaces", nil)
		wantOK(t, "namespaces", r)
		var out struct{ Namespaces []cairnhttp.NamespaceJSON }
		decode(t, "namespaces", r, &out)
		byName := map[string]cairnhttp.NamespaceJSON{}
		for _, n := range out.Namespaces {
			byName[n.Name] = n
		}
		for _, n := range []string{"kv", "room", "session"} {
			if !byName[n].Registered {
				t.Errorf("namespace %s: got %+v, want registered", n, byName[n])
			}
		}
		if got := byName["kv"].Objects; got != int64(len(names)) {
			t.Errorf("kv objects: got %d, want %d", got, len(names))
		}
	})

	t.Run("objects paging", func(t *testing.T) {
		var want []string
		for _, n := range names {
			want = append(want, ts.id(t, "kv", n).String())
		}
		slices.Sort(want)
		var got []string
		after := ""
		for page := 0; ; page++ {
			if page > len(names) {
				t.Fatalf("paging does not end: %q", got)
			}
			r := do(t, "GET", admin+"/namespaces/kv/objects?limit=2&after="+after, nil)
			wantOK(t, "objects", r)
			var out struct {
				Objects []cairnhttp.ObjectJSON
				Next    string
			}
			decode(t, "objects", r, &out)
			if len(out.Objects) > 2 {
				t.Fatalf("page %d: got %d objects, want at most 2", page, len(out.Objects))
			}
			for _, o := range out.Objects {
				got = append(got, o.ID)
				if o.Namespace != "kv" || !strings.HasPrefix(o.Name, "obj-") || ts.id(t, "kv", o.Name).String() != o.ID {
					t.Errorf("object %+v: want namespace kv and a name matching the ID", o)
				}
			}
			if out.Next == "" {
				break
			}
			after = out.Next
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged IDs: got %q, want %q", got, want)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		id := ts.id(t, "kv", "obj-0").String()
		for _, path := range []string{"/objects/kv/obj-0", "/objects/kv/" + id + "?by=id"} {
			var o cairnhttp.ObjectJSON
			// Sizes reach the catalog with the periodic usage flush.
			waitFor(t, "the size of obj-0 in the catalog", func() bool {
				r := do(t, "GET", admin+path, nil)
				wantOK(t, path, r)
				decode(t, path, r, &o)
				return o.Bytes > 0
			})
			if o.Namespace != "kv" || o.Name != "obj-0" || o.ID != id || o.Created.IsZero() || o.LastActive.IsZero() {
				t.Errorf("%s: got %+v, want kv/obj-0 %s with creation and activity times", path, o, id)
			}
		}
	})

	t.Run("kv", func(t *testing.T) {
		obj := admin + "/objects/kv/obj-0/kv"
		wantOK(t, "put", do(t, "PUT", obj+"/dir/a", []byte("A")))
		wantOK(t, "put", do(t, "PUT", obj+"/dir%2Fb", []byte{0xff, 0x00}))
		r := do(t, "GET", obj+"/dir/a", nil)
		wantOK(t, "get", r)
		if string(r.body) != "A" {
			t.Errorf("get dir/a: got %q, want A", r.body)
		}
		// The class sees what the admin API wrote.
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/obj-0/dir/a", nil).body); got != "A" {
			t.Errorf("kv class get dir/a: got %q, want A", got)
		}
		var list struct{ Entries []builtin.EntryJSON }
		r = do(t, "GET", obj+"?prefix=dir/&reverse=true", nil)
		wantOK(t, "list", r)
		decode(t, "list", r, &list)
		want := []builtin.EntryJSON{{Key: "dir/b", Value: "/wA=", Encoding: "base64"}, {Key: "dir/a", Value: "A"}}
		if !slices.Equal(list.Entries, want) {
			t.Errorf("list: got %+v, want %+v", list.Entries, want)
		}
		var del struct{ Deleted bool }
		decode(t, "delete", do(t, "DELETE", obj+"/dir/a", nil), &del)
		if !del.Deleted {
			t.Errorf("delete: got deleted false, want true")
		}
		decode(t, "delete again", do(t, "DELETE", obj+"/dir/a", nil), &del)
		if del.Deleted {
			t.Errorf("delete again: got deleted true, want false")
		}
		wantError(t, "get deleted", do(t, "GET", obj+"/dir/a", nil), http.StatusNotFound, "not_found")
	})

	t.Run("sql", func(t *testing.T) {
		sql := func(q string, args ...any) cairnhttp.SQLResponse {
			t.Helper()
			body, _ := json.Marshal(cairnhttp.SQLRequest{SQL: q, Args: args})
			r := do(t, "POST", admin+"/objects/kv/obj-2/sql", body)
			wantOK(t, q, r)
			var res cairnhttp.SQLResponse
			decode(t, q, r, &res)
			return res
		}
		sql("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b, f REAL, n)")
		res := sql("INSERT INTO t (id, s, b, f, n) VALUES (?, ?, ?, ?, ?)", 1, "one", true, 2.5, nil)
		if res.RowsWritten != 1 {
			t.Errorf("insert: got rows_written %d, want 1", res.RowsWritten)
		}
		sql("INSERT INTO t (id, s) VALUES (?, ?)", 2, "two")
		res = sql("SELECT id, s, b, f, n FROM t WHERE id = ?", 1)
		if !slices.Equal(res.Columns, []string{"id", "s", "b", "f", "n"}) {
			t.Errorf("columns: got %q", res.Columns)
		}
		if got, want := fmt.Sprint(res.Rows), "[[1 one 1 2.5 <nil>]]"; got != want {
			t.Errorf("rows: got %s, want %s", got, want)
		}
		if res = sql("SELECT s FROM t WHERE id > ? ORDER BY id", 5); len(res.Rows) != 0 || res.Rows == nil {
			t.Errorf("empty result: got %#v, want [] (not null)", res.Rows)
		}
		// User SQL and KV share the object: the KV key is untouched.
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/obj-2/k", nil).body); got != "v-obj-2" {
			t.Errorf("kv after SQL: got %q, want v-obj-2", got)
		}
	})

	t.Run("alarm", func(t *testing.T) {
		p := admin + "/objects/kv/obj-3/alarm"
		var a cairnhttp.AlarmJSON
		decode(t, "get", do(t, "GET", p, nil), &a)
		if a.At != nil {
			t.Errorf("alarm before set: got %v, want null", a.At)
		}
		at := time.Now().Add(time.Hour).Truncate(time.Millisecond).UTC()
		body, _ := json.Marshal(cairnhttp.AlarmJSON{At: &at})
		wantOK(t, "set", do(t, "PUT", p, body))
		r := do(t, "GET", p, nil)
		wantOK(t, "get", r)
		decode(t, "get", r, &a)
		if a.At == nil || !a.At.Equal(at) {
			t.Errorf("alarm: got %s, want %v", r.body, at)
		}
		var o cairnhttp.ObjectJSON
		decode(t, "inspect", do(t, "GET", admin+"/objects/kv/obj-3", nil), &o)
		if o.Alarm == nil || !o.Alarm.Equal(at) {
			t.Errorf("inspect alarm: got %v, want %v", o.Alarm, at)
		}
		r = do(t, "DELETE", p, nil)
		wantOK(t, "delete", r)
		a = cairnhttp.AlarmJSON{}
		decode(t, "get after delete", do(t, "GET", p, nil), &a)
		if a.At != nil {
			t.Errorf("alarm after delete: got %v, want null", a.At)
		}
	})

	t.Run("delete object", func(t *testing.T) {
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/obj-1/other", []byte("x")))
		body, _ := json.Marshal(cairnhttp.SQLRequest{SQL: "CREATE TABLE u (a)"})
		wantOK(t, "sql", do(t, "POST", admin+"/objects/kv/obj-1/sql", body))
		r := do(t, "DELETE", admin+"/objects/kv/obj-1", nil)
		wantOK(t, "delete", r)
		var list builtin.ListResult
		decode(t, "list", do(t, "GET", ts.url+"/v1/objects/kv/obj-1/", nil), &list)
		if len(list.Entries) != 0 {
			t.Errorf("kv after delete: got %+v, want empty", list.Entries)
		}
		body, _ = json.Marshal(cairnhttp.SQLRequest{SQL: "SELECT count(*) FROM sqlite_schema WHERE name = 'u'"})
		var res cairnhttp.SQLResponse
		decode(t, "sql", do(t, "POST", admin+"/objects/kv/obj-1/sql", body), &res)
		if fmt.Sprint(res.Rows) != "[[0]]" {
			t.Errorf("user table after delete: got %v, want [[0]]", res.Rows)
		}
		// Other objects are untouched.
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/obj-4/k", nil).body); got != "v-obj-4" {
			t.Errorf("obj-4 after deleting obj-1: got %q, want v-obj-4", got)
		}
	})

	t.Run("usage", func(t *testing.T) {
		r := do(t, "GET", admin+"/usage", nil)
		wantOK(t, "usage", r)
		var out struct{ Namespaces []cairnhttp.NamespaceJSON }
		decode(t, "usage", r, &out)
		for _, n := range out.Namespaces {
			if n.Name != "kv" {
				continue
			}
			if n.Requests < int64(len(names)) || n.RowsWritten < int64(len(names)) || n.RowsRead < 1 || n.Bytes <= 0 {
				t.Errorf("kv usage: got %+v, want at least %d requests and rows written, reads and bytes", n, len(names))
			}
			return
		}
		t.Errorf("usage: no kv namespace in %s", r.body)
	})
}

// Integer arguments of the admin SQL route reach SQLite exactly, also
// beyond 2^53 (row IDs, Unix nanoseconds).
func TestSQLIntegerArgumentsAreExact(t *testing.T) {
	ts := newServer(t, serverOptions{})
	for _, n := range []string{"9007199254740993", "1700000000123456789", "-9223372036854775808"} {
		r := do(t, "POST", ts.url+"/v1/admin/objects/kv/ints/sql", []byte(`{"sql":"SELECT ? AS v, typeof(?) AS t","args":[`+n+`,`+n+`]}`))
		wantOK(t, "sql "+n, r)
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.UseNumber()
		var res struct{ Rows [][]any }
		if err := dec.Decode(&res); err != nil {
			t.Fatal(err)
		}
		if len(res.Rows) != 1 || fmt.Sprint(res.Rows[0]) != "["+n+" integer]" {
			t.Errorf("SELECT ? with %s: got %v, want [%s integer]", n, res.Rows, n)
		}
	}
}

// Room messages are JSON whatever the user name: the room quotes names
// with strconv.Quote, whose escapes (\x01, \a, \v) are not JSON.
func TestRoomMessagesAreJSONWhateverTheUserName(t *testing.T) {
	ts := newServer(t, serverOptions{})
	for i, user := range []string{"plain", "tab\there", "bell\a", "ctl\x01", "del\x7f", "emoji 😀", "quote\"back\\slash", "line\u2028sep"} {
		t.Run(strconv.Quote(user), func(t *testing.T) {
			room := ts.url + "/v1/objects/room/names-" + strconv.Itoa(i) + "/"
			c := dial(t, room+"?user="+url.QueryEscape(user), nil)
			_, b := read(t, c)
			var joined struct{ Joined string }
			if err := json.Unmarshal(b, &joined); err != nil || joined.Joined != user {
				t.Errorf("joined message %q: got %q (%v), want valid JSON naming %q", b, joined.Joined, err, user)
			}
			other := dial(t, room+"?user=other", nil)
			read(t, other)
			c.Close(websocket.StatusNormalClosure, "")
			_, b = read(t, other)
			var left struct{ Left string }
			if err := json.Unmarshal(b, &left); err != nil || left.Left != user {
				t.Errorf("left message %q: got %q (%v), want valid JSON naming %q", b, left.Left, err, user)
			}
			other.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// A slow client uploading a body does not hold the object: other requests
// to it go on (G3: only explicit releases interleave, but reading a
// request body is the client's time, not the object's).
func TestSlowUploadDoesNotBlockTheObject(t *testing.T) {
	ts := newServer(t, serverOptions{})
	obj := ts.url + "/v1/objects/kv/slow"
	// Activate the object first, so that the upload below finds it live.
	wantError(t, "warm-up GET", do(t, "GET", obj+"/k", nil), http.StatusNotFound, "not_found")

	pr, pw := io.Pipe()
	req, err := http.NewRequest("PUT", obj+"/upload", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1 << 20
	putDone := make(chan struct{})
	go func() {
		defer close(putDone)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF); <-putDone })
	// The write returns once the transport took the bytes: the request is
	// on the wire and its body is arriving slowly.
	if _, err := pw.Write([]byte("the first bytes")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", obj+"/k", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Fatalf("GET %d while an upload to the same object is slow: %v", i+1, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %d of a missing key: got status %d, want 404", i+1, resp.StatusCode)
		}
	}
}

// With auth off (loopback only), a browser is still a way in: a page from
// another site can send "simple" cross-site requests to 127.0.0.1, and
// with DNS rebinding read the answers. The WebSocket upgrade refuses other
// origins for this reason; the other routes must too.
func TestLoopbackWithoutAuthRefusesOtherSites(t *testing.T) {
	ts := newServer(t, serverOptions{})
	wantOK(t, "seed", do(t, "PUT", ts.url+"/v1/objects/kv/private/secret", []byte("s3cret")))

	t.Run("cross-site simple POST", func(t *testing.T) {
		r := do(t, "POST", ts.url+"/v1/admin/objects/kv/private/sql", []byte(`{"sql":"CREATE TABLE pwned (a)"}`),
			"Content-Type", "text/plain", "Origin", "https://evil.example")
		wantError(t, "cross-site SQL", r, http.StatusForbidden, "")
		r = do(t, "POST", ts.url+"/v1/objects/kv/private/secret", []byte("overwritten"),
			"Content-Type", "text/plain", "Origin", "https://evil.example")
		wantError(t, "cross-site kv POST", r, http.StatusForbidden, "")
		if got := string(do(t, "GET", ts.url+"/v1/objects/kv/private/secret", nil).body); got != "s3cret" {
			t.Errorf("secret after cross-site POST: got %q, want s3cret", got)
		}
	})

	t.Run("same origin and no origin are fine", func(t *testing.T) {
		wantOK(t, "no Origin", do(t, "GET", ts.url+"/v1/objects/kv/private/secret", nil))
		wantOK(t, "same Origin", do(t, "GET", ts.url+"/v1/objects/kv/private/secret", nil, "Origin", ts.url))
	})

	t.Run("DNS rebinding", func(t *testing.T) {
		req, _ := http.NewRequest("GET", ts.url+"/v1/objects/kv/private/secret", nil)
		req.Host = "evil.example:" + req.URL.Port()
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Errorf("request for Host %s: got %d %q, want it refused", req.Host, resp.StatusCode, b)
		}
	})
}
