package cairn_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// The tests of this file prove the runtime's guarantees about turns,
// transactions, the output gate, eviction, calls between objects and HTTP
// (ARCHITECTURE.md G2-G5, G8). Storage, limits, names and SQL are in
// storage_test.go, alarms in alarm_test.go, IDs in id_test.go.

// ---- a configurable class ----

// rpcFunc is an RPC method of a testClass instance.
type rpcFunc func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error)

// testClass makes instances that serve its methods (and the testBuiltins) by
// RPC, and optionally an alarm and HTTP. It counts constructions, so that a
// test sees when an instance was discarded and activated again.
type testClass struct {
	methods    map[string]rpcFunc
	alarm      func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error
	serve      func(st *cairn.State, w http.ResponseWriter, r *http.Request)
	migrations []cairn.Migration
	newHook    func(st *cairn.State) error // runs in New; an error fails it

	news atomic.Int64 // calls of New
}

func (c *testClass) class() cairn.Class {
	return cairn.Class{
		Migrations: c.migrations,
		New: func(st *cairn.State) (any, error) {
			c.news.Add(1)
			if c.newHook != nil {
				if err := c.newHook(st); err != nil {
					return nil, err
				}
			}
			o := &funcObject{st: st, c: c}
			if c.serve != nil {
				return httpObject{o}, nil
			}
			return o, nil
		},
	}
}

type funcObject struct {
	st *cairn.State
	c  *testClass
}

func (o *funcObject) RPC(ctx context.Context, name string, arg json.RawMessage) (any, error) {
	if m := o.c.methods[name]; m != nil {
		return m(ctx, o.st, arg)
	}
	if m := testBuiltins[name]; m != nil {
		return m(ctx, o.st, arg)
	}
	return nil, cairn.Errorf(cairn.NotFound, "no method %q", name)
}

func (o *funcObject) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
	if o.c.alarm == nil {
		return nil
	}
	return o.c.alarm(ctx, o.st, a)
}

type httpObject struct{ *funcObject }

func (o httpObject) ServeHTTP(w http.ResponseWriter, r *http.Request) { o.c.serve(o.st, w, r) }

type kvArg struct {
	K string `json:"k"`
	V string `json:"v"`
}

type sqlArg struct {
	Q    string `json:"q"`
	Args []any  `json:"args,omitempty"`
}

func decodeArg(arg json.RawMessage, v any) error {
	if err := json.Unmarshal(arg, v); err != nil {
		return cairn.Errorf(cairn.Invalid, "decode argument: %v", err)
	}
	return nil
}

// testBuiltins are methods every testClass instance has.
var testBuiltins = map[string]rpcFunc{
	"put": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var e kvArg
		if err := decodeArg(arg, &e); err != nil {
			return nil, err
		}
		return nil, st.Put(e.K, []byte(e.V))
	},
	"get": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var k string
		if err := decodeArg(arg, &k); err != nil {
			return nil, err
		}
		v, ok, err := st.Get(k)
		if err != nil || !ok {
			return nil, err
		}
		s := string(v)
		return &s, nil
	},
	"keys": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		es, err := st.List(cairn.ListOptions{})
		keys := []string{}
		for _, e := range es {
			keys = append(keys, e.Key)
		}
		return keys, err
	},
	"exec": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var a sqlArg
		if err := decodeArg(arg, &a); err != nil {
			return nil, err
		}
		return st.Exec(a.Q, a.Args...)
	},
	"query": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var a sqlArg
		if err := decodeArg(arg, &a); err != nil {
			return nil, err
		}
		return st.Query(a.Q, a.Args...)
	},
	"name": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		return st.Name(), nil
	},
	"alarm": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		at, ok, err := st.Alarm()
		if err != nil || !ok {
			return nil, err
		}
		return &at, nil
	},
	"setAlarm": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var at time.Time
		if err := decodeArg(arg, &at); err != nil {
			return nil, err
		}
		return nil, st.SetAlarm(at)
	},
	"deleteAlarm": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		return nil, st.DeleteAlarm()
	},
	"deleteAll": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		return nil, st.DeleteAll()
	},
}

// ---- runtimes and calls ----

const testNS = "t"

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// newTestRuntime opens a runtime at Process durability with c registered as
// namespace "t".
func newTestRuntime(tb testing.TB, c *testClass, tune func(*cairn.Runtime)) (*cairn.Runtime, *cairn.Namespace) {
	tb.Helper()
	return newTestRuntimeAt(tb, "", cairn.Process, c, tune)
}

func newTestRuntimeAt(tb testing.TB, dir string, level cairn.Durability, c *testClass, tune func(*cairn.Runtime)) (*cairn.Runtime, *cairn.Namespace) {
	tb.Helper()
	rt := newRuntime(tb, dir, level, map[string]cairn.Class{testNS: c.class()}, func(rt *cairn.Runtime) {
		rt.Logger = quietLogger // panics are expected here; their stacks are noise
		if tune != nil {
			tune(rt)
		}
	})
	ns, err := rt.Namespace(testNS)
	if err != nil {
		tb.Fatal(err)
	}
	return rt, ns
}

// closeNow closes rt now (the cleanup's Close is then a no-op), so
// that a test can open another runtime on the same data directory.
func closeNow(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Fatalf("close runtime: %v", err)
	}
}

func stubFor(tb testing.TB, ns *cairn.Namespace, name string) *cairn.Stub {
	tb.Helper()
	s, err := ns.GetByName(name)
	if err != nil {
		tb.Fatalf("GetByName(%q): %v", name, err)
	}
	return s
}

// do calls method and fails the test on error.
func mustCall(tb testing.TB, s *cairn.Stub, method string, arg, result any) {
	tb.Helper()
	if err := tryCall(s, method, arg, result); err != nil {
		tb.Fatalf("%s on %q: %v", method, s.Name(), err)
	}
}

// try calls method with a deadline, so that a deadlock fails the test
// instead of hanging it.
func tryCall(s *cairn.Stub, method string, arg, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Call(ctx, method, arg, result)
}

func kvPut(tb testing.TB, s *cairn.Stub, k, v string) {
	tb.Helper()
	mustCall(tb, s, "put", kvArg{k, v}, nil)
}

func kvGet(tb testing.TB, s *cairn.Stub, k string) (string, bool) {
	tb.Helper()
	var v *string
	mustCall(tb, s, "get", k, &v)
	if v == nil {
		return "", false
	}
	return *v, true
}

func wantKV(tb testing.TB, s *cairn.Stub, k, want string) {
	tb.Helper()
	got, ok := kvGet(tb, s, k)
	if !ok {
		tb.Errorf("%q: got no value, want %q", k, want)
	} else if got != want {
		tb.Errorf("%q: got %q, want %q", k, got, want)
	}
}

func wantNoKV(tb testing.TB, s *cairn.Stub, k string) {
	tb.Helper()
	if got, ok := kvGet(tb, s, k); ok {
		tb.Errorf("%q: got %q, want no value", k, got)
	}
}

// wantCode checks that err carries code want.
func wantCode(tb testing.TB, what string, err error, want cairn.Code) {
	tb.Helper()
	if got := cairn.ErrorCode(err); got != want {
		tb.Errorf("%s: got error %v (code %q), want code %q", what, err, got, want)
	}
}

type asyncResult struct {
	out json.RawMessage
	err error
}

// goCall calls method in a new goroutine; the result arrives on the channel.
func goCall(ctx context.Context, s *cairn.Stub, method string, arg any) <-chan asyncResult {
	ch := make(chan asyncResult, 1)
	raw, err := json.Marshal(arg)
	if err != nil {
		ch <- asyncResult{err: err}
		return ch
	}
	go func() {
		out, err := s.CallJSON(ctx, method, raw)
		ch <- asyncResult{out, err}
	}()
	return ch
}

// recv waits for a value from ch.
func waitRecv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// await waits for a call started with goCall and fails the test if it
// failed.
func awaitCall(tb testing.TB, ch <-chan asyncResult, what string) json.RawMessage {
	tb.Helper()
	r := waitRecv(tb, ch, what)
	if r.err != nil {
		tb.Fatalf("%s: %v", what, r.err)
	}
	return r.out
}

// notYet checks that nothing arrives on ch for a while: it shows that
// something is being held back. (A bounded look for an absence, not a
// sleep waiting for an effect.)
func notYet[T any](tb testing.TB, ch <-chan T, what string) {
	tb.Helper()
	select {
	case v := <-ch:
		tb.Fatalf("%s happened too early (got %v)", what, v)
	case <-time.After(100 * time.Millisecond):
	}
}

// watchCtx reports when the runtime first watches its Done channel. A
// caller's context is watched only once the caller has to wait (for the
// turn, or for the output gate), so this tells a test that a call is queued.
type watchCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWatchCtx() *watchCtx { return watchCtxFrom(context.Background()) }

// watchCtxFrom wraps ctx, which must not be a context the runtime watches
// already (context.WithCancel of a custom parent would watch it at once).
func watchCtxFrom(ctx context.Context) *watchCtx {
	return &watchCtx{Context: ctx, waiting: make(chan struct{})}
}

func (c *watchCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// goQueued starts a call while another event holds the object's turn and
// returns once the call is queued behind it.
func goQueued(tb testing.TB, s *cairn.Stub, method string, arg any) <-chan asyncResult {
	tb.Helper()
	return goQueuedCtx(tb, newWatchCtx(), s, method, arg)
}

func goQueuedCtx(tb testing.TB, ctx *watchCtx, s *cairn.Stub, method string, arg any) <-chan asyncResult {
	tb.Helper()
	ch := goCall(ctx, s, method, arg)
	select {
	case <-ctx.waiting:
	case r := <-ch:
		tb.Fatalf("%s returned (%v) instead of queueing behind the held turn", method, r.err)
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s to queue", method)
	}
	return ch
}

// turnHolder is a method that holds the turn until released.
type turnHolder struct {
	entered chan struct{}
	release chan struct{}
}

func newTurnHolder() *turnHolder {
	return &turnHolder{entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (h *turnHolder) method(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
	h.entered <- struct{}{}
	select {
	case <-h.release:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hold starts a call of the turnHolder's method (registered as "hold") and
// returns once it holds the turn.
func (h *turnHolder) hold(tb testing.TB, s *cairn.Stub) <-chan asyncResult {
	tb.Helper()
	ch := goCall(context.Background(), s, "hold", nil)
	waitRecv(tb, h.entered, "the holding call to start")
	return ch
}

// ---- a clock and a committer under the test's control ----

// clock is real time plus an offset the test moves forward.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// gate is a Committer that, while holding, makes every Durable call wait
// until the test answers it.
type gateCommitter struct {
	holding atomic.Bool
	n       atomic.Int64 // Durable calls
	calls   chan *durableCall
	stop    chan struct{}
}

type durableCall struct {
	Ref   cairn.ObjectRef
	Info  cairn.CommitInfo
	once  sync.Once
	reply chan error
}

// release answers the call (once; later calls do nothing).
func (c *durableCall) release(err error) { c.once.Do(func() { c.reply <- err }) }

func (g *gateCommitter) Durable(ctx context.Context, ref cairn.ObjectRef, s cairn.Store, c cairn.CommitInfo) error {
	g.n.Add(1)
	if !g.holding.Load() {
		return nil
	}
	call := &durableCall{Ref: ref, Info: c, reply: make(chan error, 1)}
	g.calls <- call
	return <-call.reply
}

// next returns the next Durable call waiting for an answer.
func (g *gateCommitter) next(tb testing.TB) *durableCall {
	tb.Helper()
	return waitRecv(tb, g.calls, "a Durable call")
}

// newGatedRuntime opens a runtime whose Committer is a gate. At cleanup,
// before the runtime closes, the gate answers every call.
func newGatedRuntime(tb testing.TB, c *testClass, tune func(*cairn.Runtime)) (*cairn.Runtime, *cairn.Namespace, *gateCommitter) {
	tb.Helper()
	g := &gateCommitter{calls: make(chan *durableCall, 1000), stop: make(chan struct{})}
	tb.Cleanup(func() { close(g.stop) }) // runs after the runtime's Close
	rt, ns := newTestRuntime(tb, c, func(rt *cairn.Runtime) {
		rt.Committer = g
		if tune != nil {
			tune(rt)
		}
	})
	tb.Cleanup(func() { // runs before the runtime's Close
		g.holding.Store(false)
		go func() {
			for {
				select {
				case c := <-g.calls:
					c.release(nil)
				case <-g.stop:
					return
				}
			}
		}()
	})
	return rt, ns, g
}

var allLevels = []cairn.Durability{cairn.Process, cairn.Disk}

// ---- G3: turns ----

func TestTurnsDoNotInterleave(t *testing.T) {
	for _, level := range allLevels {
		t.Run(level.String(), func(t *testing.T) {
			var inTurn atomic.Bool
			var overlaps atomic.Int64
			c := &testClass{methods: map[string]rpcFunc{
				"incr": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
					if !inTurn.CompareAndSwap(false, true) {
						overlaps.Add(1)
					}
					defer inTurn.Store(false)
					v, _, err := st.Get("n")
					if err != nil {
						return nil, err
					}
					n, _ := strconv.Atoi(string(v))
					for i := 0; i < 50; i++ {
						runtime.Gosched() // let any other handler run, if one could
					}
					return n + 1, st.Put("n", []byte(strconv.Itoa(n+1)))
				},
			}}
			_, ns := newTestRuntimeAt(t, "", level, c, nil)
			s := stubFor(t, ns, "counter")

			const callers = 50
			results := make(chan asyncResult, callers)
			var wg sync.WaitGroup
			for i := 0; i < callers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := s.CallJSON(context.Background(), "incr", nil)
					results <- asyncResult{out, err}
				}()
			}
			wg.Wait()
			close(results)
			seen := make(map[int]bool)
			for r := range results {
				if r.err != nil {
					t.Fatalf("incr: %v", r.err)
				}
				n, _ := strconv.Atoi(string(r.out))
				if seen[n] {
					t.Errorf("two calls both saw the counter go to %d", n)
				}
				seen[n] = true
			}
			for i := 1; i <= callers; i++ {
				if !seen[i] {
					t.Errorf("no call saw the counter go to %d", i)
				}
			}
			if got := overlaps.Load(); got != 0 {
				t.Errorf("%d handlers started while another was running, want 0", got)
			}
			wantKV(t, s, "n", strconv.Itoa(callers))
		})
	}
}

func TestReleaseInterleavesOnlyThere(t *testing.T) {
	dir := t.TempDir()
	released := make(chan struct{})
	unblock := make(chan struct{})
	c := &testClass{methods: map[string]rpcFunc{
		"slow": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			if err := st.Put("before", []byte("1")); err != nil {
				return nil, err
			}
			err := st.Release(func(ctx context.Context) error {
				close(released)
				select {
				case <-unblock:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil {
				return nil, err
			}
			// The handler goes on in a new transaction, seeing what the
			// events delivered meanwhile wrote.
			v, _, err := st.Get("ping")
			if err != nil {
				return nil, err
			}
			return string(v), st.Put("after", []byte("1"))
		},
	}}
	rt, ns := newTestRuntimeAt(t, dir, cairn.Disk, c, nil)
	s := stubFor(t, ns, "r")

	slow := goCall(context.Background(), s, "slow", nil)
	waitRecv(t, released, "the handler to release its turn")
	// Another event is delivered, and completes, while the turn is released.
	kvPut(t, s, "ping", "pong")
	wantKV(t, s, "before", "1") // committed at the release point
	wantNoKV(t, s, "after")
	close(unblock)
	out := awaitCall(t, slow, "slow")
	if got, want := string(out), `"pong"`; got != want {
		t.Errorf("after Release the handler read %s, want %s", got, want)
	}
	if got := rt.Stats().TurnsReleased; got < 1 {
		t.Errorf("Stats().TurnsReleased = %d, want at least 1", got)
	}

	// Both transactions of the turn are durable.
	closeNow(t, rt)
	_, ns = newTestRuntimeAt(t, dir, cairn.Disk, c, nil)
	s = stubFor(t, ns, "r")
	wantKV(t, s, "before", "1")
	wantKV(t, s, "after", "1")
	wantKV(t, s, "ping", "pong")
}

// A reset while a turn is released (here: another event panics) makes
// Release return Unavailable; the writes made before Release stay.
func TestReleaseAfterReset(t *testing.T) {
	released := make(chan struct{})
	unblock := make(chan struct{})
	var afterErr error
	c := &testClass{methods: map[string]rpcFunc{
		"slow": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			if err := st.Put("before", []byte("1")); err != nil {
				return nil, err
			}
			err := st.Release(func(ctx context.Context) error {
				close(released)
				<-unblock
				return nil
			})
			afterErr = st.Put("after", []byte("1")) // misuse: must fail
			return nil, err
		},
		"boom": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			panic("boom")
		},
	}}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "r")
	slow := goCall(context.Background(), s, "slow", nil)
	waitRecv(t, released, "the handler to release its turn")
	if err := tryCall(s, "boom", nil, nil); err == nil {
		t.Fatal("boom: got no error, want one")
	}
	close(unblock)
	r := waitRecv(t, slow, "slow")
	wantCode(t, "Release after the instance was reset", r.err, cairn.Unavailable)
	if afterErr == nil {
		t.Error("Put after Release reported a reset: got no error, want one")
	}
	wantKV(t, s, "before", "1")
	wantNoKV(t, s, "after")
}

// State documents that it returns Invalid when used outside the turn of
// the event being handled.
func TestStateOutsideTurnIsInvalid(t *testing.T) {
	t.Run("after the turn", func(t *testing.T) {
		var saved *cairn.State
		c := &testClass{methods: map[string]rpcFunc{
			"save": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				saved = st
				return nil, nil
			},
		}}
		_, ns := newTestRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		mustCall(t, s, "save", nil, nil)
		wantCode(t, "Put after the turn ended", saved.Put("k", []byte("v")), cairn.Invalid)
		_, _, err := saved.Get("k")
		wantCode(t, "Get after the turn ended", err, cairn.Invalid)
		wantNoKV(t, s, "k")
	})
	t.Run("inside Release", func(t *testing.T) {
		var inside error
		c := &testClass{methods: map[string]rpcFunc{
			"rel": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				return nil, st.Release(func(ctx context.Context) error {
					inside = st.Put("k", []byte("v"))
					return nil
				})
			},
		}}
		_, ns := newTestRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		mustCall(t, s, "rel", nil, nil)
		wantCode(t, "Put inside Release", inside, cairn.Invalid)
		wantNoKV(t, s, "k")
	})
	// Uses while another event holds the turn (from inside Release, or
	// from a goroutine of the instance) cannot be told apart from that
	// event's own: the documentation forbids them rather than promising
	// an error.
}

// ---- arrival order ----

var appendMethods = map[string]rpcFunc{
	"append": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
		var i int
		if err := decodeArg(arg, &i); err != nil {
			return nil, err
		}
		v, _, err := st.Get("seq")
		if err != nil {
			return nil, err
		}
		var seq []int
		if len(v) > 0 {
			if err := json.Unmarshal(v, &seq); err != nil {
				return nil, err
			}
		}
		b, _ := json.Marshal(append(seq, i))
		return nil, st.Put("seq", b)
	},
}

func seqOf(tb testing.TB, s *cairn.Stub) []int {
	tb.Helper()
	v, _ := kvGet(tb, s, "seq")
	var seq []int
	if v != "" {
		if err := json.Unmarshal([]byte(v), &seq); err != nil {
			tb.Fatal(err)
		}
	}
	return seq
}

func TestArrivalOrder(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		_, ns := newTestRuntime(t, &testClass{methods: appendMethods}, nil)
		s := stubFor(t, ns, "a")
		var want []int
		for i := 0; i < 20; i++ {
			mustCall(t, s, "append", i, nil)
			want = append(want, i)
		}
		if got := seqOf(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got order %v, want %v", got, want)
		}
	})
	t.Run("queued", func(t *testing.T) {
		h := newTurnHolder()
		m := map[string]rpcFunc{"hold": h.method, "append": appendMethods["append"]}
		_, ns := newTestRuntime(t, &testClass{methods: m}, nil)
		s := stubFor(t, ns, "a")
		held := h.hold(t, s)
		var calls []<-chan asyncResult
		var want []int
		for i := 0; i < 10; i++ {
			calls = append(calls, goQueued(t, s, "append", i))
			want = append(want, i)
		}
		close(h.release)
		awaitCall(t, held, "hold")
		for i, c := range calls {
			awaitCall(t, c, fmt.Sprintf("append %d", i))
		}
		if got := seqOf(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got order %v, want arrival order %v", got, want)
		}
	})
	t.Run("canceled waiter leaves the line", func(t *testing.T) {
		h := newTurnHolder()
		m := map[string]rpcFunc{"hold": h.method, "append": appendMethods["append"]}
		_, ns := newTestRuntime(t, &testClass{methods: m}, nil)
		s := stubFor(t, ns, "a")
		held := h.hold(t, s)
		first := goQueued(t, s, "append", 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		canceled := goQueuedCtx(t, watchCtxFrom(ctx), s, "append", 2)
		third := goQueued(t, s, "append", 3)
		cancel()
		if r := waitRecv(t, canceled, "the canceled call"); r.err == nil {
			t.Errorf("canceled call: got no error, want one")
		}
		close(h.release)
		awaitCall(t, held, "hold")
		awaitCall(t, first, "append 1")
		awaitCall(t, third, "append 3")
		if got, want := fmt.Sprint(seqOf(t, s)), "[1 3]"; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})
}

// ---- G4: atomic turns and explicit transactions ----

var notesMigration = cairn.Migration{SQL: "CREATE TABLE notes (body TEXT NOT NULL)"}

func noteCount(tb testing.TB, s *cairn.Stub) int {
	tb.Helper()
	var rows cairn.Rows
	mustCall(tb, s, "query", sqlArg{Q: "SELECT count(*) FROM notes"}, &rows)
	if len(rows.Values) != 1 || len(rows.Values[0]) != 1 {
		tb.Fatalf("count: got rows %v", rows.Values)
	}
	n, _ := rows.Values[0][0].(float64) // through JSON
	return int(n)
}

func writeBoth(st *cairn.State, key string) error {
	if err := st.Put(key, []byte("v")); err != nil {
		return err
	}
	_, err := st.Exec("INSERT INTO notes (body) VALUES (?)", key)
	return err
}

func TestFailedTurnWritesNothing(t *testing.T) {
	var h *turnHolder // set by the subtest that uses "hold"
	c := &testClass{
		migrations: []cairn.Migration{notesMigration},
		methods: map[string]rpcFunc{
			"hold": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				return h.method(ctx, st, arg)
			},
			"ok": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				var k string
				decodeArg(arg, &k)
				return nil, writeBoth(st, k)
			},
			"fail": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				var k string
				decodeArg(arg, &k)
				if err := writeBoth(st, k); err != nil {
					return nil, err
				}
				return nil, cairn.Errorf(cairn.Conflict, "changed my mind")
			},
			"boom": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				var k string
				decodeArg(arg, &k)
				if err := writeBoth(st, k); err != nil {
					return nil, err
				}
				panic("boom")
			},
		},
	}
	rt, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")
	mustCall(t, s, "ok", "ok1", nil)

	t.Run("error", func(t *testing.T) {
		err := tryCall(s, "fail", "fail1", nil)
		wantCode(t, "fail", err, cairn.Conflict)
		if got, want := cairn.ErrorMessage(err), "changed my mind"; got != want {
			t.Errorf("message: got %q, want %q", got, want)
		}
		wantNoKV(t, s, "fail1")
		if got := noteCount(t, s); got != 1 {
			t.Errorf("notes: got %d rows, want 1", got)
		}
	})
	t.Run("panic", func(t *testing.T) {
		news, resets := c.news.Load(), rt.Stats().Resets
		if err := tryCall(s, "boom", "boom1", nil); err == nil {
			t.Fatal("boom: got no error, want one")
		}
		wantNoKV(t, s, "boom1")
		if got := c.news.Load(); got != news+1 {
			t.Errorf("New called %d times after the panic, want 1 (the instance is discarded)", got-news)
		}
		if got := rt.Stats().Resets; got <= resets {
			t.Errorf("Stats().Resets = %d, want more than %d", got, resets)
		}
		wantKV(t, s, "ok1", "v")
		if got := noteCount(t, s); got != 1 {
			t.Errorf("notes: got %d rows, want 1", got)
		}
	})
	// Turns that share a commit: a failed one rolls back alone.
	for _, bad := range []string{"fail", "boom"} {
		t.Run(bad+" inside a group", func(t *testing.T) {
			h = newTurnHolder()
			s := stubFor(t, ns, "group-"+bad)
			held := h.hold(t, s)
			before := goQueued(t, s, "ok", "before")
			failed := goQueued(t, s, bad, "bad")
			after := goQueued(t, s, "ok", "after")
			close(h.release)
			awaitCall(t, held, "hold")
			awaitCall(t, before, "the turn before")
			if r := waitRecv(t, failed, bad); r.err == nil {
				t.Errorf("%s: got no error, want one", bad)
			}
			awaitCall(t, after, "the turn after")
			wantKV(t, s, "before", "v")
			wantKV(t, s, "after", "v")
			wantNoKV(t, s, "bad")
			if got := noteCount(t, s); got != 2 {
				t.Errorf("notes: got %d rows, want 2", got)
			}
		})
	}
}

func TestTransaction(t *testing.T) {
	errNo := errors.New("no")
	c := &testClass{
		migrations: []cairn.Migration{notesMigration},
		methods: map[string]rpcFunc{
			"rollback": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				if err := st.Put("a", []byte("1")); err != nil {
					return nil, err
				}
				err := st.Transaction(func() error {
					if err := writeBoth(st, "b"); err != nil {
						return err
					}
					if _, ok, _ := st.Get("b"); !ok {
						return fmt.Errorf("b not visible inside its transaction")
					}
					return errNo
				})
				if !errors.Is(err, errNo) {
					return nil, fmt.Errorf("Transaction returned %v, want fn's error", err)
				}
				if _, ok, _ := st.Get("b"); ok {
					return nil, fmt.Errorf("b still visible after its transaction rolled back")
				}
				return nil, st.Put("c", []byte("1"))
			},
			"nested": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				return nil, st.Transaction(func() error {
					if err := writeBoth(st, "outer"); err != nil {
						return err
					}
					if err := st.Transaction(func() error {
						if err := writeBoth(st, "inner-failed"); err != nil {
							return err
						}
						return errNo
					}); !errors.Is(err, errNo) {
						return fmt.Errorf("inner Transaction returned %v, want fn's error", err)
					}
					return st.Transaction(func() error { return writeBoth(st, "inner-kept") })
				})
			},
			"outerFails": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				err := st.Transaction(func() error {
					if err := writeBoth(st, "outer2"); err != nil {
						return err
					}
					if err := st.Transaction(func() error { return writeBoth(st, "inner2") }); err != nil {
						return err
					}
					return errNo
				})
				if !errors.Is(err, errNo) {
					return nil, fmt.Errorf("Transaction returned %v, want fn's error", err)
				}
				return nil, nil
			},
			"panics": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				func() {
					defer func() { recover() }()
					st.Transaction(func() error {
						writeBoth(st, "panicked")
						panic("in transaction")
					})
				}()
				return nil, st.Put("recovered", []byte("1"))
			},
			"misuse": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				var relErr, delErr error
				st.Transaction(func() error {
					relErr = st.Release(func(ctx context.Context) error { return nil })
					delErr = st.DeleteAll()
					return nil
				})
				if cairn.ErrorCode(relErr) != cairn.Invalid || cairn.ErrorCode(delErr) != cairn.Invalid {
					return nil, fmt.Errorf("inside Transaction: Release gave %v, DeleteAll gave %v; want Invalid for both", relErr, delErr)
				}
				return nil, st.Put("misuse", []byte("1"))
			},
		},
	}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")
	for _, m := range []string{"rollback", "nested", "outerFails", "panics", "misuse"} {
		mustCall(t, s, m, nil, nil)
	}
	wantKV(t, s, "a", "1")
	wantNoKV(t, s, "b")
	wantKV(t, s, "c", "1")
	wantKV(t, s, "outer", "v")
	wantNoKV(t, s, "inner-failed")
	wantKV(t, s, "inner-kept", "v")
	wantNoKV(t, s, "outer2")
	wantNoKV(t, s, "inner2")
	wantNoKV(t, s, "panicked")
	wantKV(t, s, "recovered", "1")
	wantKV(t, s, "misuse", "1")
	var rows cairn.Rows
	mustCall(t, s, "query", sqlArg{Q: "SELECT body FROM notes ORDER BY body"}, &rows)
	if got, want := fmt.Sprint(rows.Values), "[[inner-kept] [outer]]"; got != want {
		t.Errorf("notes: got %s, want %s", got, want)
	}
}

// ---- G5: the output gate ----

func TestOutputGate(t *testing.T) {
	t.Run("call waits for durable", func(t *testing.T) {
		_, ns, g := newGatedRuntime(t, &testClass{}, nil)
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		w := goCall(context.Background(), s, "put", kvArg{"k", "v"})
		c := g.next(t)
		notYet(t, w, "the write's result while its commit is not durable")
		c.release(nil)
		awaitCall(t, w, "put")
	})
	t.Run("read of a pending write waits for durable", func(t *testing.T) {
		_, ns, g := newGatedRuntime(t, &testClass{}, nil)
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		w := goCall(context.Background(), s, "put", kvArg{"k", "v"})
		c := g.next(t)
		r := goCall(context.Background(), s, "get", "k")
		notYet(t, r, "a read of a write whose commit is not durable")
		c.release(nil)
		awaitCall(t, w, "put")
		if got, want := string(awaitCall(t, r, "get")), `"v"`; got != want {
			t.Errorf("get: got %s, want %s", got, want)
		}
	})
	t.Run("pipelined commits release in order", func(t *testing.T) {
		ran := make(chan struct{}, 1)
		c := &testClass{methods: map[string]rpcFunc{
			"put2": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				ran <- struct{}{}
				return nil, st.Put("k2", []byte("v2"))
			},
		}}
		_, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		w1 := goCall(context.Background(), s, "put", kvArg{"k1", "v1"})
		c1 := g.next(t)
		w2 := goCall(context.Background(), s, "put2", nil)
		// The next turn runs while the previous commit is in flight.
		waitRecv(t, ran, "the second turn to run while the first commit is not durable")
		notYet(t, w1, "the first result before its commit is durable")
		notYet(t, w2, "the second result before the first commit is durable")
		c1.release(nil)
		awaitCall(t, w1, "first put")
		c2 := g.next(t)
		if c2.Info.Seq <= c1.Info.Seq {
			t.Errorf("second Durable has seq %d, want more than %d", c2.Info.Seq, c1.Info.Seq)
		}
		notYet(t, w2, "the second result before its commit is durable")
		c2.release(nil)
		awaitCall(t, w2, "second put")
	})
	t.Run("release point waits for durable", func(t *testing.T) {
		started := make(chan struct{})
		c := &testClass{methods: map[string]rpcFunc{
			"rel": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				if err := st.Put("k", []byte("v")); err != nil {
					return nil, err
				}
				return nil, st.Release(func(ctx context.Context) error {
					close(started)
					return nil
				})
			},
		}}
		_, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		done := goCall(context.Background(), s, "rel", nil)
		cl := g.next(t)
		notYet(t, started, "the released function before the turn's writes are durable")
		cl.release(nil)
		waitRecv(t, started, "the released function")
		awaitCall(t, done, "rel")
	})
	t.Run("call to another object waits for durable", func(t *testing.T) {
		bRan := make(chan struct{}, 1)
		c := &testClass{methods: map[string]rpcFunc{
			"relay": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				if err := st.Put("k", []byte("v")); err != nil {
					return nil, err
				}
				ns, err := st.Runtime().Namespace(st.Namespace())
				if err != nil {
					return nil, err
				}
				b, err := ns.GetByName("b")
				if err != nil {
					return nil, err
				}
				return nil, b.Call(ctx, "mark", nil, nil)
			},
			"mark": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				bRan <- struct{}{}
				return nil, nil
			},
		}}
		_, ns, g := newGatedRuntime(t, c, nil)
		a := stubFor(t, ns, "a")
		g.holding.Store(true)
		done := goCall(context.Background(), a, "relay", nil)
		cl := g.next(t)
		notYet(t, bRan, "the call to b before a's writes are durable")
		cl.release(nil)
		waitRecv(t, bRan, "the call to b")
		awaitCall(t, done, "relay")
	})
	t.Run("turns share a commit", func(t *testing.T) {
		h := newTurnHolder()
		c := &testClass{methods: map[string]rpcFunc{"hold": h.method}}
		rt, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		held := h.hold(t, s)
		var calls []<-chan asyncResult
		for i := 0; i < 5; i++ {
			calls = append(calls, goQueued(t, s, "put", kvArg{fmt.Sprint("k", i), "v"}))
		}
		n0, commits0 := g.n.Load(), rt.Stats().Commits
		close(h.release)
		awaitCall(t, held, "hold")
		for i, c := range calls {
			awaitCall(t, c, fmt.Sprint("put ", i))
		}
		if got := g.n.Load() - n0; got != 1 {
			t.Errorf("5 queued writes took %d Durable calls, want 1", got)
		}
		if got := rt.Stats().Commits - commits0; got != 1 {
			t.Errorf("5 queued writes took %d commits, want 1", got)
		}
	})
}

// G5: a failed commit fails its callers and discards the instance.
func TestFailedCommit(t *testing.T) {
	errDisk := errors.New("disk on fire")
	t.Run("single", func(t *testing.T) {
		c := &testClass{}
		rt, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		kvPut(t, s, "old", "1")
		resets := rt.Stats().Resets
		g.holding.Store(true)
		w := goCall(context.Background(), s, "put", kvArg{"k", "v"})
		g.next(t).release(errDisk)
		if r := waitRecv(t, w, "put"); r.err == nil {
			t.Fatal("put whose commit failed: got no error, want one")
		}
		g.holding.Store(false)
		news := c.news.Load()
		wantKV(t, s, "old", "1")
		kvPut(t, s, "new", "2")
		wantKV(t, s, "new", "2")
		if got := c.news.Load() - news; got != 1 {
			t.Errorf("New called %d times after the failed commit, want 1", got)
		}
		if got := rt.Stats().Resets; got <= resets {
			t.Errorf("Stats().Resets = %d, want more than %d", got, resets)
		}
	})
	t.Run("group", func(t *testing.T) {
		h := newTurnHolder()
		c := &testClass{methods: map[string]rpcFunc{"hold": h.method}}
		_, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		held := h.hold(t, s)
		x := goQueued(t, s, "put", kvArg{"x", "1"})
		y := goQueued(t, s, "put", kvArg{"y", "1"})
		g.holding.Store(true)
		close(h.release)
		awaitCall(t, held, "hold") // it wrote nothing: not part of the failed commit
		g.next(t).release(errDisk)
		for _, r := range []asyncResult{waitRecv(t, x, "put x"), waitRecv(t, y, "put y")} {
			if r.err == nil {
				t.Errorf("a put of the failed group got no error, want one")
			}
		}
		g.holding.Store(false)
		// Whatever the outcome, the group is one transaction.
		_, hasX := kvGet(t, s, "x")
		_, hasY := kvGet(t, s, "y")
		if hasX != hasY {
			t.Errorf("after the failed group: x present %v, y present %v; want both or neither", hasX, hasY)
		}
		kvPut(t, s, "z", "1")
		wantKV(t, s, "z", "1")
	})
	t.Run("pipelined", func(t *testing.T) {
		ran := make(chan struct{}, 1)
		c := &testClass{methods: map[string]rpcFunc{
			"put2": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				v, _, err := st.Get("k1") // depends on the first commit
				if err != nil {
					return nil, err
				}
				ran <- struct{}{}
				return nil, st.Put("k2", v)
			},
		}}
		_, ns, g := newGatedRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		w1 := goCall(context.Background(), s, "put", kvArg{"k1", "v1"})
		c1 := g.next(t)
		// The second turn reads the first's writes: it must fail too.
		w2 := goCall(context.Background(), s, "put2", nil)
		waitRecv(t, ran, "the second turn")
		c1.release(errDisk)
		if r := waitRecv(t, w1, "first put"); r.err == nil {
			t.Errorf("first put: got no error, want one")
		}
		// The second commit is not durable either way; answer its call if
		// the runtime makes one.
		select {
		case r := <-w2:
			if r.err == nil {
				t.Errorf("second put, after a failed commit it followed: got no error, want one")
			}
		case c2 := <-g.calls:
			c2.release(nil)
			if r := waitRecv(t, w2, "second put"); r.err == nil {
				t.Errorf("second put, after a failed commit it followed: got no error, want one")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the second put")
		}
		g.holding.Store(false)
		kvPut(t, s, "k3", "v3")
		wantKV(t, s, "k3", "v3")
	})
}

// ---- G8: eviction ----

func TestEviction(t *testing.T) {
	const idle = time.Hour
	setup := func(t *testing.T, c *testClass, tune func(*cairn.Runtime)) (*cairn.Runtime, *cairn.Namespace, *testClock) {
		clk := &testClock{}
		rt, ns := newTestRuntime(t, c, func(rt *cairn.Runtime) {
			rt.Now = clk.Now
			rt.IdleTimeout = idle
			if tune != nil {
				tune(rt)
			}
		})
		return rt, ns, clk
	}
	t.Run("idle object is evicted and reloaded", func(t *testing.T) {
		c := &testClass{}
		rt, ns, clk := setup(t, c, nil)
		s := stubFor(t, ns, "a")
		kvPut(t, s, "k", "v")
		if !rt.IsActive(s.ID()) {
			t.Fatal("object not active after a call")
		}
		clk.Advance(idle - time.Minute)
		rt.EvictIdle()
		if !rt.IsActive(s.ID()) {
			t.Fatal("object evicted before its idle timeout")
		}
		evictions := rt.Stats().Evictions
		clk.Advance(2 * time.Minute)
		rt.EvictIdle()
		if rt.IsActive(s.ID()) {
			t.Fatal("idle object still active after EvictIdle")
		}
		if got := rt.Stats().Evictions; got <= evictions {
			t.Errorf("Stats().Evictions = %d, want more than %d", got, evictions)
		}
		wantKV(t, s, "k", "v")
		if got := c.news.Load(); got != 2 {
			t.Errorf("New called %d times, want 2 (once per activation)", got)
		}
	})
	t.Run("not during a turn", func(t *testing.T) {
		h := newTurnHolder()
		c := &testClass{methods: map[string]rpcFunc{"hold": h.method}}
		rt, ns, clk := setup(t, c, nil)
		s := stubFor(t, ns, "a")
		kvPut(t, s, "k", "v")
		held := h.hold(t, s)
		clk.Advance(2 * idle)
		rt.EvictIdle()
		if !rt.IsActive(s.ID()) {
			t.Error("object evicted while a turn was running")
		}
		close(h.release)
		awaitCall(t, held, "hold")
		if got := c.news.Load(); got != 1 {
			t.Errorf("New called %d times, want 1", got)
		}
	})
	t.Run("not while a turn is released", func(t *testing.T) {
		released := make(chan struct{})
		unblock := make(chan struct{})
		c := &testClass{methods: map[string]rpcFunc{
			"slow": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
				if err := st.Put("before", []byte("1")); err != nil {
					return nil, err
				}
				if err := st.Release(func(ctx context.Context) error {
					close(released)
					<-unblock
					return nil
				}); err != nil {
					return nil, err
				}
				return nil, st.Put("after", []byte("1"))
			},
		}}
		rt, ns, clk := setup(t, c, nil)
		s := stubFor(t, ns, "a")
		slow := goCall(context.Background(), s, "slow", nil)
		waitRecv(t, released, "the turn to be released")
		clk.Advance(2 * idle)
		rt.EvictIdle()
		if !rt.IsActive(s.ID()) {
			t.Error("object evicted while a turn was released")
		}
		close(unblock)
		awaitCall(t, slow, "slow")
		wantKV(t, s, "before", "1")
		wantKV(t, s, "after", "1")
		if got := c.news.Load(); got != 1 {
			t.Errorf("New called %d times, want 1", got)
		}
	})
	t.Run("LRU cap", func(t *testing.T) {
		c := &testClass{}
		rt, ns, _ := setup(t, c, func(rt *cairn.Runtime) { rt.MaxActive = 2 })
		a, b, cc := stubFor(t, ns, "a"), stubFor(t, ns, "b"), stubFor(t, ns, "c")
		kvPut(t, a, "k", "a")
		kvPut(t, b, "k", "b")
		kvPut(t, a, "k2", "a") // a is now more recently used than b
		kvPut(t, cc, "k", "c")
		for _, x := range []struct {
			s    *cairn.Stub
			want bool
		}{{a, true}, {b, false}, {cc, true}} {
			if got := rt.IsActive(x.s.ID()); got != x.want {
				t.Errorf("IsActive(%s) = %v, want %v", x.s.Name(), got, x.want)
			}
		}
		if got := rt.Active(); got > 2 {
			t.Errorf("Active() = %d, want at most 2", got)
		}
		news := c.news.Load()
		wantKV(t, b, "k", "b")
		if got := c.news.Load() - news; got != 1 {
			t.Errorf("reading the evicted object called New %d times, want 1", got)
		}
	})
	// G2 and G5: an evicted instance whose commit is still in flight (its
	// caller gave up waiting) must not coexist with a new instance that
	// serves reads of that commit before it is durable.
	t.Run("not while a commit is in flight", func(t *testing.T) {
		c := &testClass{}
		clk := &testClock{}
		rt, ns, g := newGatedRuntime(t, c, func(rt *cairn.Runtime) {
			rt.Now = clk.Now
			rt.IdleTimeout = idle
		})
		s := stubFor(t, ns, "a")
		g.holding.Store(true)
		ctx, cancel := context.WithCancel(context.Background())
		w := goCall(ctx, s, "put", kvArg{"k", "v"})
		cl := g.next(t)
		cancel()
		if r := waitRecv(t, w, "the abandoned put"); r.err == nil {
			t.Fatal("put whose caller gave up: got no error, want one")
		}
		clk.Advance(2 * idle)
		t.Cleanup(func() { cl.release(nil) })
		// The object is not evicted while its commit is still becoming
		// durable: a second instance could serve what is not durable yet.
		if n := rt.EvictIdle(); n != 0 || !rt.IsActive(s.ID()) {
			t.Fatalf("EvictIdle with a commit in flight evicted %d objects (active: %v), want 0 (true)", n, rt.IsActive(s.ID()))
		}
		r := goCall(context.Background(), s, "get", "k")
		notYet(t, r, "a read of a commit that is not durable")
		if got := c.news.Load(); got != 1 {
			t.Errorf("New called %d times while the first instance's commit was in flight, want 1", got)
		}
		cl.release(nil)
		if got, want := string(awaitCall(t, r, "get")), `"v"`; got != want {
			t.Errorf("get: got %s, want %s", got, want)
		}
		clk.Advance(2 * idle)
		waitFor(t, "the object to be evicted once its commit is durable", func() bool {
			rt.EvictIdle()
			return !rt.IsActive(s.ID())
		})
	})
}

// ---- objects calling objects ----

func relayClass() *testClass {
	c := &testClass{}
	c.methods = map[string]rpcFunc{
		// relay calls relay on the first object of the path with the rest
		// of it; at the end of the path it returns the object's name.
		"relay": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			var path []string
			if err := decodeArg(arg, &path); err != nil {
				return nil, err
			}
			if err := st.Put("visited", []byte("1")); err != nil {
				return nil, err
			}
			if len(path) == 0 {
				return st.Name(), nil
			}
			ns, err := st.Runtime().Namespace(st.Namespace())
			if err != nil {
				return nil, err
			}
			next, err := ns.GetByName(path[0])
			if err != nil {
				return nil, err
			}
			var out string
			err = next.Call(ctx, "relay", path[1:], &out)
			return out, err
		},
		// relayReleased does the same from inside Release.
		"relayReleased": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			var path []string
			if err := decodeArg(arg, &path); err != nil {
				return nil, err
			}
			ns, err := st.Runtime().Namespace(st.Namespace())
			if err != nil {
				return nil, err
			}
			next, err := ns.GetByName(path[0])
			if err != nil {
				return nil, err
			}
			var out string
			err = st.Release(func(ctx context.Context) error {
				return next.Call(ctx, "relay", path[1:], &out)
			})
			return out, err
		},
	}
	return c
}

func TestObjectsCallObjects(t *testing.T) {
	_, ns := newTestRuntime(t, relayClass(), nil)
	a, b := stubFor(t, ns, "a"), stubFor(t, ns, "b")
	t.Run("a calls b", func(t *testing.T) {
		var got string
		mustCall(t, a, "relay", []string{"b"}, &got)
		if got != "b" {
			t.Errorf("got %q, want %q", got, "b")
		}
		wantKV(t, b, "visited", "1")
	})
	t.Run("self call is refused", func(t *testing.T) {
		err := tryCall(a, "relay", []string{"a"}, nil)
		wantCode(t, "a calling itself", err, cairn.Invalid)
	})
	t.Run("released turn can be called back", func(t *testing.T) {
		var got string
		mustCall(t, a, "relayReleased", []string{"b", "a"}, &got)
		if got != "a" {
			t.Errorf("got %q, want %q", got, "a")
		}
	})
	t.Run("call cycle is refused", func(t *testing.T) {
		// a holds its turn while calling b, which calls a: like a self
		// call, this can only wait forever, so it must be refused.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := a.Call(ctx, "relay", []string{"b", "a"}, nil)
		wantCode(t, "a calling b calling a", err, cairn.Invalid)
	})
}

// ---- Stub.Fetch ----

func TestFetch(t *testing.T) {
	cont := make(chan struct{})
	c := &testClass{serve: func(st *cairn.State, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hello":
			if err := st.Put("hits", []byte("1")); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("X-Object", st.Name())
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "hello")
		case "/stream":
			io.WriteString(w, "part1\n")
			w.(http.Flusher).Flush()
			select {
			case <-cont:
			case <-r.Context().Done():
			}
			io.WriteString(w, "part2\n")
		case "/panic":
			io.WriteString(w, "never sent")
			panic("boom")
		case "/flushpanic":
			io.WriteString(w, "sent")
			w.(http.Flusher).Flush()
			panic("boom")
		}
	}}
	serve := func(ns *cairn.Namespace) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := ns.GetByName(r.URL.Query().Get("o"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if err := s.Fetch(w, r); err != nil && !errors.Is(err, cairn.ErrResponseStarted) {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	_, ns := newTestRuntime(t, c, nil)
	srv := serve(ns)

	t.Run("response", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/hello?o=a")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || string(body) != "hello" || resp.Header.Get("X-Object") != "a" {
			t.Errorf("got %d %q X-Object=%q, want 201 \"hello\" X-Object=\"a\"", resp.StatusCode, body, resp.Header.Get("X-Object"))
		}
		wantKV(t, stubFor(t, ns, "a"), "hits", "1")
	})
	t.Run("flush streams", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/stream?o=s")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// The handler is still blocked: this part can only be here if the
		// flush sent it.
		line, err := br.ReadString('\n')
		if err != nil || line != "part1\n" {
			t.Fatalf("first part: got %q, %v; want %q", line, err, "part1\n")
		}
		close(cont)
		rest, _ := io.ReadAll(br)
		if string(rest) != "part2\n" {
			t.Errorf("second part: got %q, want %q", rest, "part2\n")
		}
	})
	t.Run("panic sends nothing", func(t *testing.T) {
		s := stubFor(t, ns, "p")
		w := &spyWriter{header: make(http.Header)}
		err := s.Fetch(w, httptest.NewRequest("GET", "/panic", nil))
		if err == nil {
			t.Fatal("got no error, want one")
		}
		if errors.Is(err, cairn.ErrResponseStarted) {
			t.Errorf("got %v, which claims the response started", err)
		}
		if w.wrote {
			t.Errorf("the failed handler's response was written: %q", w.body)
		}
	})
	t.Run("panic after flush", func(t *testing.T) {
		s := stubFor(t, ns, "p")
		w := &spyWriter{header: make(http.Header)}
		err := s.Fetch(w, httptest.NewRequest("GET", "/flushpanic", nil))
		if !errors.Is(err, cairn.ErrResponseStarted) {
			t.Errorf("got %v, want an error wrapping ErrResponseStarted", err)
		}
		if string(w.body) != "sent" {
			t.Errorf("body: got %q, want %q", w.body, "sent")
		}
	})
	t.Run("class without ServeHTTP", func(t *testing.T) {
		_, ns := newTestRuntime(t, &testClass{}, nil)
		s := stubFor(t, ns, "a")
		w := &spyWriter{header: make(http.Header)}
		err := s.Fetch(w, httptest.NewRequest("GET", "/", nil))
		wantCode(t, "Fetch on a class without ServeHTTP", err, cairn.NotFound)
		if w.wrote {
			t.Errorf("a response was written: %q", w.body)
		}
	})
	t.Run("response waits for durable", func(t *testing.T) {
		_, ns, g := newGatedRuntime(t, c, nil)
		srv := serve(ns)
		g.holding.Store(true)
		type resp struct {
			status int
			err    error
		}
		got := make(chan resp, 1)
		go func() {
			r, err := http.Get(srv.URL + "/hello?o=g")
			if err != nil {
				got <- resp{err: err}
				return
			}
			r.Body.Close()
			got <- resp{status: r.StatusCode}
		}()
		cl := g.next(t)
		notYet(t, got, "the response before the turn's writes are durable")
		cl.release(nil)
		if r := waitRecv(t, got, "the response"); r.err != nil || r.status != http.StatusCreated {
			t.Errorf("got %d, %v; want 201", r.status, r.err)
		}
	})
}

// spyWriter is a ResponseWriter that records whether anything was written.
type spyWriter struct {
	header http.Header
	wrote  bool
	body   []byte
}

func (w *spyWriter) Header() http.Header  { return w.header }
func (w *spyWriter) WriteHeader(code int) { w.wrote = true }
func (w *spyWriter) Flush()               {}
func (w *spyWriter) Write(p []byte) (int, error) {
	w.wrote = true
	w.body = append(w.body, p...)
	return len(p), nil
}

// ---- lifecycle ----

func TestCallAfterClose(t *testing.T) {
	rt, ns := newTestRuntime(t, &testClass{}, nil)
	s := stubFor(t, ns, "a")
	kvPut(t, s, "k", "v")
	closeNow(t, rt)
	wantCode(t, "call after Close", tryCall(s, "get", "k", nil), cairn.Unavailable)
}

func TestActivationFailure(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	var migrated atomic.Int64
	c := &testClass{
		migrations: []cairn.Migration{
			{SQL: "CREATE TABLE once (x)"}, // fails if a failed activation kept it
			{Func: func(ctx context.Context, st *cairn.State) error {
				migrated.Add(1)
				return st.Put("migrated", []byte("1"))
			}},
		},
		newHook: func(st *cairn.State) error {
			if fail.Load() {
				return errors.New("not today")
			}
			return nil
		},
	}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")
	if err := tryCall(s, "get", "k", nil); err == nil {
		t.Fatal("call while New fails: got no error, want one")
	}
	fail.Store(false)
	wantKV(t, s, "migrated", "1")
	if got := migrated.Load(); got != 2 {
		t.Errorf("migration ran %d times, want 2 (the failed activation's run rolled back)", got)
	}

	t.Run("panic in New", func(t *testing.T) {
		var panicked atomic.Bool
		c := &testClass{newHook: func(st *cairn.State) error {
			if panicked.CompareAndSwap(false, true) {
				panic("in New")
			}
			return nil
		}}
		_, ns := newTestRuntime(t, c, nil)
		s := stubFor(t, ns, "a")
		if err := tryCall(s, "get", "k", nil); err == nil {
			t.Fatal("call while New panics: got no error, want one")
		}
		kvPut(t, s, "k", "v")
		wantKV(t, s, "k", "v")
	})
}
