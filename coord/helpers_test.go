package coord_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// openRuntime opens a runtime with the coord classes on dir (a fresh one if
// empty). It is not closed for the caller: see newRuntime.
func openRuntime(tb testing.TB, dir string, level cairn.Durability) *cairn.Runtime {
	tb.Helper()
	return openRuntimeTuned(tb, dir, level, nil)
}

// openRuntimeTuned is openRuntime with tune applied before Open.
func openRuntimeTuned(tb testing.TB, dir string, level cairn.Durability, tune func(*cairn.Runtime)) *cairn.Runtime {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	eng, err := sqlite.Open(dir, level)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = level
	if tune != nil {
		tune(rt)
	}
	for name, c := range coord.Classes() {
		if _, err := rt.Register(name, c); err != nil {
			tb.Fatal(err)
		}
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	return rt
}

// newRuntime opens a runtime with the coord classes on a fresh directory,
// closed at the end of the test.
func newRuntime(tb testing.TB) *cairn.Runtime {
	tb.Helper()
	rt := openRuntime(tb, "", cairn.Process)
	tb.Cleanup(func() { closeRuntime(tb, rt) })
	return rt
}

func closeRuntime(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Errorf("close runtime: %v", err)
	}
}

// stub returns the stub of the object called name in namespace ns.
func stub(tb testing.TB, rt *cairn.Runtime, ns, name string) *cairn.Stub {
	tb.Helper()
	n, err := rt.Namespace(ns)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := n.GetByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// call calls method and fails the test on error.
func call[R any](tb testing.TB, s *cairn.Stub, method string, arg any) R {
	tb.Helper()
	var r R
	if err := s.Call(context.Background(), method, arg, &r); err != nil {
		tb.Fatalf("%s(%+v): %v", method, arg, err)
	}
	return r
}

// wantCode checks err's code.
func wantCode(tb testing.TB, what string, err error, want cairn.Code) {
	tb.Helper()
	if got := cairn.ErrorCode(err); got != want {
		tb.Fatalf("%s: got error %v (code %q), want code %q", what, err, got, want)
	}
}

// waitFor polls cond until it holds, or fails after 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type asyncResult struct {
	out json.RawMessage
	err error
}

// goCall calls method in a goroutine.
func goCall(ctx context.Context, s *cairn.Stub, method string, arg any) <-chan asyncResult {
	ch := make(chan asyncResult, 1)
	go func() {
		var out json.RawMessage
		err := s.Call(ctx, method, arg, &out)
		ch <- asyncResult{out, err}
	}()
	return ch
}

// await returns what ch delivers, failing the test after 10 s.
func await[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// objectAlarm returns the alarm of an object, and whether it has one.
func objectAlarm(tb testing.TB, s *cairn.Stub) (time.Time, bool) {
	tb.Helper()
	var at time.Time
	var ok bool
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		var err error
		at, ok, err = st.Alarm()
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return at, ok
}

// rawLease reads a lock or leader's stored holder without going through
// the class (no lazy expiry): what the alarm alone did.
func rawLease(tb testing.TB, s *cairn.Stub) (owner string, token int64) {
	tb.Helper()
	return rawLeaseNamed(tb, s, "")
}

// rawLeaseNamed is rawLease for the lease called name: a lock of the lock
// table, in its shard s. A lease never written reads as free.
func rawLeaseNamed(tb testing.TB, s *cairn.Stub, name string) (owner string, token int64) {
	tb.Helper()
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		rows, err := st.Query(`SELECT owner, token FROM leases WHERE name = ?`, name)
		if err != nil || len(rows.Values) == 0 {
			return err
		}
		owner, _ = rows.Values[0][0].(string)
		token, _ = rows.Values[0][1].(int64)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return owner, token
}

// An HTTP server over a runtime that a test can restart on the same data
// directory while clients keep the same URL.
type server struct {
	tb  testing.TB
	dir string
	url string

	mu    sync.Mutex
	rt    *cairn.Runtime
	level cairn.Durability // of the runtime running now
	h     atomic.Pointer[http.Handler]
}

func newServer(tb testing.TB, level cairn.Durability) *server {
	tb.Helper()
	s := &server{tb: tb, dir: tb.TempDir()}
	s.start(level)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.h.Load()).ServeHTTP(w, r)
	}))
	tb.Cleanup(func() {
		hs.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		closeRuntime(tb, s.rt)
	})
	s.url = hs.URL
	return s
}

func (s *server) start(level cairn.Durability) {
	rt := openRuntime(s.tb, s.dir, level)
	hs := cairnhttp.NewServer(rt)
	// The lock table's routes, mounted as cmd/cairn/serve.go does.
	locks, err := coord.NewLocks(rt)
	if err != nil {
		s.tb.Fatal(err)
	}
	for _, p := range coord.LocksRoutes {
		hs.Routes = append(hs.Routes, cairnhttp.Route{Pattern: p, Handler: locks, Namespace: "locks", Name: "locks"})
	}
	h := hs.Handler()
	s.mu.Lock()
	s.rt, s.level = rt, level
	s.mu.Unlock()
	s.h.Store(&h)
}

func (s *server) runtime() *cairn.Runtime {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rt
}

// restart closes the runtime (requests meanwhile get 503) and opens a new
// one on the same directory.
func (s *server) restart(level cairn.Durability) {
	down := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Test-Down", "1") // never reached a runtime: no effect
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"unavailable","message":"restarting"}}`))
	}))
	s.h.Store(&down)
	s.mu.Lock()
	closeRuntime(s.tb, s.rt)
	s.mu.Unlock()
	s.start(level)
}

// httpResult is an HTTP answer: status, error code and body.
type httpResult struct {
	status int
	code   string
	body   []byte
	down   bool // answered by the restart stand-in: no effect
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// post sends a JSON body; err is set if no answer came (the outcome is
// then unknown).
func post(ctx context.Context, url string, body any) (httpResult, error) {
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return httpResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	return send(req)
}

func send(req *http.Request) (httpResult, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return httpResult{}, err
	}
	r := httpResult{status: resp.StatusCode, body: b, down: resp.Header.Get("X-Test-Down") != ""}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct{ Code string } `json:"error"`
		}
		json.Unmarshal(b, &eb)
		r.code = eb.Error.Code
	}
	return r, nil
}

func mustPost[R any](tb testing.TB, url string, body any) R {
	tb.Helper()
	r, err := post(context.Background(), url, body)
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	if r.status != http.StatusOK {
		tb.Fatalf("POST %s %v: status %d: %s", url, body, r.status, r.body)
	}
	var out R
	if err := json.Unmarshal(r.body, &out); err != nil {
		tb.Fatalf("POST %s: decode %s: %v", url, r.body, err)
	}
	return out
}

func mustGet[R any](tb testing.TB, url string) R {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	r, err := send(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	if r.status != http.StatusOK {
		tb.Fatalf("GET %s: status %d: %s", url, r.status, r.body)
	}
	var out R
	if err := json.Unmarshal(r.body, &out); err != nil {
		tb.Fatalf("GET %s: decode %s: %v", url, r.body, err)
	}
	return out
}

var errUnknown = errors.New("outcome unknown")
