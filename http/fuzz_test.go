package http_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// fuzzHandler returns the handler of a server for fuzzing, shared by the
// inputs of one fuzz target.
func fuzzHandler(tb testing.TB) http.Handler {
	tb.Helper()
	ts := newServer(tb, serverOptions{})
	return ts.srv.Handler()
}

var fuzzMethods = []string{"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"}

// serveFuzz runs one request through h and checks the answer: an allowed
// status, and the documented error shape for every error.
func serveFuzz(t *testing.T, h http.Handler, req *http.Request, allowed ...int) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	ok := false
	for _, s := range allowed {
		ok = ok || w.Code == s
	}
	if !ok {
		t.Fatalf("%s %s: got status %d (%q), want one of %v", req.Method, req.URL.EscapedPath(), w.Code, w.Body.Bytes(), allowed)
	}
	if w.Code/100 != 2 && req.Method != "HEAD" {
		checkErrorShape(t, req.Method+" "+req.URL.EscapedPath(), w.Header(), w.Body.Bytes())
	}
	return w
}

// FuzzObjectRoute sends requests for arbitrary namespaces, object names and
// object paths. Whatever the bytes, the server answers with a status of its
// contract and, for an error, the JSON error shape.
func FuzzObjectRoute(f *testing.F) {
	h := fuzzHandler(f)
	for _, seed := range []struct {
		method      byte
		ns, name, p string
		rpc         bool
		body        []byte
	}{
		{0, "kv", "a", "k", false, nil},
		{1, "kv", "a", "k", false, []byte("value")},
		{0, "kv", "a", "", false, nil},
		{2, "kv", "a", "", false, nil},
		{3, "kv", "a/b", "x/y/z", false, nil},
		{5, "kv", "a", "k", false, nil},
		{0, "nosuch", "x", "y", false, nil},
		{0, "k v", "x", "y", false, nil},
		{0, "kv", string(bytes.Repeat([]byte("n"), 1025)), "k", false, nil},
		{0, "kv", "\xff", "k", false, nil},
		{0, "kv", "\x00", "k", false, nil},
		{0, "kv", "..", "..", false, nil},
		{0, "kv", "a", string(bytes.Repeat([]byte("k"), 2049)), false, nil},
		{0, "room", "r", "messages", false, nil},
		{0, "room", "r", "", false, nil},
		{2, "session", "s", "chat", false, []byte(`{"text":"hi"}`)},
		{2, "session", "s", "chat", false, []byte(`{`)},
		{2, "kv", "a", "Put", true, []byte(`{"key":"k","value":"v"}`)},
		{2, "kv", "a", "Nope", true, nil},
		{2, "kv", "a", "List", true, []byte(`{"limit":-1}`)},
		{2, "room", "r", "WebSocketMessage", true, nil},
	} {
		f.Add(seed.method, seed.ns, seed.name, seed.p, seed.rpc, seed.body)
	}
	f.Fuzz(func(t *testing.T, method byte, ns, name, p string, rpc bool, body []byte) {
		if ns == "" || name == "" {
			// Not expressible as a canonical path; see
			// TestNonCanonicalPathsAreNotRedirected.
			return
		}
		path := "/v1/objects/" + escapeAll(ns) + "/" + escapeAll(name) + "/"
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		if rpc {
			if p == "" {
				return
			}
			path += "rpc/" + escapeAll(p)
			m = "POST"
		} else {
			path += escapeAll(p)
		}
		req := httptest.NewRequest(m, "/", bytes.NewReader(body))
		req.Host = "127.0.0.1" // auth is off: only loopback hosts are served
		req.URL = &url.URL{Path: mustUnescape(t, path), RawPath: path}
		req.RequestURI = path
		serveFuzz(t, h, req, 200, 400, 404, 405, 413)
	})
}

// escapeAll percent-encodes every byte but ASCII letters and digits, so
// that a segment is never ".", ".." or empty-between-slashes, whatever it
// holds.
func escapeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func mustUnescape(t *testing.T, p string) string {
	t.Helper()
	u, err := url.PathUnescape(p)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// FuzzRPCBody sends arbitrary bytes as the argument of the kv class's RPC
// methods: invalid JSON is a 400, and nothing panics.
func FuzzRPCBody(f *testing.F) {
	h := fuzzHandler(f)
	methods := []string{"Put", "Get", "Delete", "List", "Nope"}
	for _, seed := range []struct {
		method byte
		body   string
	}{
		{0, `{"key":"k","value":"v"}`},
		{1, `{"key":"k"}`},
		{2, `{"key":"k"}`},
		{3, `{"prefix":"k","reverse":true,"limit":2}`},
		{3, ``},
		{0, `{`},
		{0, `[]`},
		{0, `"s"`},
		{0, `null`},
		{0, `{"key":"k","value":1}`},
		{0, `{"key":"k"} {}`},
		{1, "{\"key\":\"\xff\"}"},
		{4, `{}`},
	} {
		f.Add(seed.method, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, method byte, body []byte) {
		m := methods[int(method)%len(methods)]
		req := httptest.NewRequest("POST", "/v1/objects/kv/fuzz/rpc/"+m, bytes.NewReader(body))
		req.Host = "127.0.0.1" // auth is off: only loopback hosts are served
		w := serveFuzz(t, h, req, 200, 400, 404, 413)
		if len(body) > 0 && !json.Valid(body) && w.Code != http.StatusBadRequest {
			t.Fatalf("invalid JSON %q: got status %d, want 400", body, w.Code)
		}
		if w.Code == http.StatusOK && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("body %q: 200 with a result that is not JSON: %q", body, w.Body.Bytes())
		}
	})
}
