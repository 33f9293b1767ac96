package coord_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
)

// Tests of the lock table (namespace locks): a lock of the table behaves
// as a Lock object does, through the Go API (Locks) and HTTP
// (/v1/locks/{name}) alike; bad input changes nothing; a shard refuses a
// lock that is not its own; the locks of one shard lapse by the shard's
// alarm, each on time, with no traffic. Its linearizability over HTTP is in
// lin_test.go, its fencing across SIGKILL in crash_test.go.

// oneShard returns n lock names, prefix followed by a number, that
// LockShard puts in the same object: the tests of locks sharing a shard
// hold whatever LockShards is.
func oneShard(tb testing.TB, prefix string, n int) []string {
	tb.Helper()
	byShard := make(map[string][]string)
	for i := 0; i < 100000; i++ {
		name := prefix + strconv.Itoa(i)
		sh := coord.LockShard(name)
		byShard[sh] = append(byShard[sh], name)
		if len(byShard[sh]) == n {
			return byShard[sh]
		}
	}
	tb.Fatalf("no %d names %s<n> in one shard", n, prefix)
	return nil
}

// shardOf returns the stub of the shard object of the lock named name.
func shardOf(tb testing.TB, rt *cairn.Runtime, name string) *cairn.Stub {
	tb.Helper()
	return stub(tb, rt, "locks", coord.LockShard(name))
}

func newLocks(tb testing.TB, rt *cairn.Runtime) *coord.Locks {
	tb.Helper()
	l, err := coord.NewLocks(rt)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// tableAPI is one face of the lock table: its Go API or its HTTP API. call
// runs op (acquire, renew, release, cancel or inspect) on the lock named
// lock and returns its result (an AcquireResult, ReleaseResult,
// CancelResult or LockInfo), or an error carrying the answer's code.
type tableAPI struct {
	name string
	call func(ctx context.Context, lock, op string, arg any) (any, error)
}

// goTableAPI is the lock table through Locks.
func goTableAPI(l *coord.Locks) tableAPI {
	return tableAPI{name: "go", call: func(ctx context.Context, lock, op string, arg any) (any, error) {
		switch op {
		case "acquire":
			return l.Acquire(ctx, lock, arg.(coord.AcquireArgs))
		case "renew":
			return l.Renew(ctx, lock, arg.(coord.RenewArgs))
		case "release":
			return l.Release(ctx, lock, arg.(coord.ReleaseArgs))
		case "cancel":
			return l.Cancel(ctx, lock, arg.(coord.CancelArgs))
		case "inspect":
			return l.Inspect(ctx, lock)
		}
		return nil, fmt.Errorf("no operation %q", op)
	}}
}

// statusOf is the HTTP status of an error code.
var statusOf = map[string]int{
	"invalid":   http.StatusBadRequest,
	"not_found": http.StatusNotFound,
	"conflict":  http.StatusConflict,
	"timeout":   http.StatusGatewayTimeout,
}

// httpTableAPI is the lock table through the HTTP server at base. An error
// answered with a status other than its code's fails the test.
func httpTableAPI(tb testing.TB, base string) tableAPI {
	return tableAPI{name: "http", call: func(ctx context.Context, lock, op string, arg any) (any, error) {
		u := base + "/v1/locks/" + url.PathEscape(lock)
		var r httpResult
		var err error
		if op == "inspect" {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			r, err = send(req)
		} else {
			r, err = post(ctx, u+"/"+op, arg)
		}
		if err != nil {
			return nil, err
		}
		if r.status != http.StatusOK {
			if want, ok := statusOf[r.code]; !ok || r.status != want {
				tb.Errorf("%s of %q: status %d with code %q: %s", op, lock, r.status, r.code, r.body)
			}
			return nil, cairn.Errorf(cairn.Code(r.code), "%d %s", r.status, r.body)
		}
		switch op {
		case "acquire", "renew":
			return decodeAs[coord.AcquireResult](r.body)
		case "release":
			return decodeAs[coord.ReleaseResult](r.body)
		case "cancel":
			return decodeAs[coord.CancelResult](r.body)
		}
		return decodeAs[coord.LockInfo](r.body)
	}}
}

func decodeAs[R any](b []byte) (any, error) {
	var r R
	err := json.Unmarshal(b, &r)
	return r, err
}

// tableDo runs op through api and returns its result as an R.
func tableDo[R any](ctx context.Context, api tableAPI, lock, op string, arg any) (R, error) {
	res, err := api.call(ctx, lock, op, arg)
	r, _ := res.(R)
	return r, err
}

// tableMust is tableDo failing the test on error.
func tableMust[R any](tb testing.TB, api tableAPI, lock, op string, arg any) R {
	tb.Helper()
	r, err := tableDo[R](context.Background(), api, lock, op, arg)
	if err != nil {
		tb.Fatalf("%s: %s of %q (%+v): %v", api.name, op, lock, arg, err)
	}
	return r
}

type tableAcquired struct {
	res coord.AcquireResult
	err error
}

// goAcquire acquires in a goroutine.
func goAcquire(api tableAPI, lock string, a coord.AcquireArgs) <-chan tableAcquired {
	ch := make(chan tableAcquired, 1)
	go func() {
		r, err := tableDo[coord.AcquireResult](context.Background(), api, lock, "acquire", a)
		ch <- tableAcquired{r, err}
	}()
	return ch
}

// TestLockTableSemantics proves that a lock of the table behaves as a Lock
// object does, through the Go API and through HTTP alike: one holder, a
// conflict (409) when held and not waiting, FIFO waiters granted in turn
// on release, fencing tokens strictly increasing per lock and counted
// apart for two locks of one shard (each starts at 1), renew and release
// by the holder only with its current token, retries by request id
// answering the same grant, cancel of a grant and of a waiter, and
// Inspect's holder, last_token and waiters.
func TestLockTableSemantics(t *testing.T) {
	t.Run("go", func(t *testing.T) {
		testTableSemantics(t, goTableAPI(newLocks(t, newRuntime(t))))
	})
	t.Run("http", func(t *testing.T) {
		testTableSemantics(t, httpTableAPI(t, newServer(t, cairn.Process).url))
	})
}

func testTableSemantics(t *testing.T, api tableAPI) {
	ctx := context.Background()
	names := oneShard(t, "res-", 2)
	a, b := names[0], names[1]
	acquire := func(lock string, arg coord.AcquireArgs) coord.AcquireResult {
		t.Helper()
		return tableMust[coord.AcquireResult](t, api, lock, "acquire", arg)
	}
	release := func(lock string, arg coord.ReleaseArgs) {
		t.Helper()
		if r := tableMust[coord.ReleaseResult](t, api, lock, "release", arg); !r.Released {
			t.Fatalf("release of %q (%+v): %+v", lock, arg, r)
		}
	}
	inspect := func(lock string) coord.LockInfo {
		t.Helper()
		return tableMust[coord.LockInfo](t, api, lock, "inspect", nil)
	}
	fails := func(what, lock, op string, arg any, want cairn.Code) {
		t.Helper()
		_, err := api.call(ctx, lock, op, arg)
		wantCode(t, what, err, want)
	}
	held := func(what string, info coord.LockInfo, owner string, token, last int64) {
		t.Helper()
		if info.Holder == nil || info.Holder.Owner != owner || info.Holder.Token != token || info.LastToken != last {
			t.Fatalf("%s: got %+v (holder %+v), want %s holding token %d, last_token %d", what, info, info.Holder, owner, token, last)
		}
	}

	// Two locks of one shard: each counts its tokens from 1.
	ga := acquire(a, coord.AcquireArgs{Owner: "o1", TTLMs: 60000})
	if ga.Token != 1 || ga.Owner != "o1" {
		t.Fatalf("first grant of %q: got %+v, want token 1 for o1", a, ga)
	}
	fails("acquire of a held lock without waiting", a, "acquire", coord.AcquireArgs{Owner: "o2", TTLMs: 60000}, cairn.Conflict)
	fails("acquire by the holder", a, "acquire", coord.AcquireArgs{Owner: "o1", TTLMs: 60000}, cairn.Conflict)
	gb := acquire(b, coord.AcquireArgs{Owner: "o2", TTLMs: 60000})
	if gb.Token != 1 || gb.Owner != "o2" {
		t.Fatalf("first grant of %q, in the shard of %q: got %+v, want token 1 for o2", b, a, gb)
	}

	// Renew: the holder only, with its token.
	fails("renew by another owner", a, "renew", coord.RenewArgs{Owner: "o2", Token: ga.Token, TTLMs: 1000}, cairn.Conflict)
	fails("renew with a wrong token", a, "renew", coord.RenewArgs{Owner: "o1", Token: ga.Token + 1, TTLMs: 1000}, cairn.Conflict)
	fails("renew with the token of another lock's holder", a, "renew", coord.RenewArgs{Owner: "o2", Token: gb.Token, TTLMs: 1000}, cairn.Conflict)
	r := tableMust[coord.AcquireResult](t, api, a, "renew", coord.RenewArgs{Owner: "o1", Token: ga.Token, TTLMs: 120000})
	if r.Token != ga.Token || r.ExpiresAt <= ga.ExpiresAt {
		t.Fatalf("renew: got %+v, want token %d and a later expiry than %d", r, ga.Token, ga.ExpiresAt)
	}

	// FIFO waiters, granted one by one on release.
	owners := []string{"w1", "w2", "w3"}
	chans := make([]<-chan tableAcquired, len(owners))
	for i, o := range owners {
		chans[i] = goAcquire(api, a, coord.AcquireArgs{Owner: o, TTLMs: 60000, WaitMs: 20000})
		waitFor(t, o+" in line", func() bool { return len(inspect(a).Waiters) == i+1 }) // the arrival order is certain
	}
	info := inspect(a)
	held("inspect with waiters", info, "o1", ga.Token, ga.Token)
	for i, w := range info.Waiters {
		if w.Owner != owners[i] || i > 0 && w.Seq <= info.Waiters[i-1].Seq {
			t.Fatalf("waiters: got %+v, want %v in order", info.Waiters, owners)
		}
	}
	if ib := inspect(b); len(ib.Waiters) != 0 {
		t.Fatalf("%q lists waiters of %q: %+v", b, a, ib.Waiters)
	}
	held("the other lock", inspect(b), "o2", gb.Token, gb.Token)
	fails("release by another owner", a, "release", coord.ReleaseArgs{Owner: "o2", Token: ga.Token}, cairn.Conflict)
	fails("release with a wrong token", a, "release", coord.ReleaseArgs{Owner: "o1", Token: 99}, cairn.Conflict)
	prev := coord.ReleaseArgs{Owner: "o1", Token: ga.Token}
	for i, o := range owners {
		release(a, prev)
		got := await(t, chans[i], o)
		if want := ga.Token + int64(i) + 1; got.err != nil || got.res.Owner != o || got.res.Token != want {
			t.Fatalf("grant %d: got %+v %v, want %s with token %d", i, got.res, got.err, o, want)
		}
		for _, ch := range chans[i+1:] {
			select {
			case r := <-ch:
				t.Fatalf("a later waiter was served out of turn: %+v %v", r.res, r.err)
			default:
			}
		}
		prev = coord.ReleaseArgs{Owner: o, Token: got.res.Token}
	}
	held("after the waiters", inspect(a), "w3", 4, 4)

	// A stale token: o1's, and w3's once it released.
	fails("release with a stale token", a, "release", coord.ReleaseArgs{Owner: "o1", Token: ga.Token}, cairn.Conflict)
	fails("renew with a stale token", a, "renew", coord.RenewArgs{Owner: "o1", Token: ga.Token, TTLMs: 1000}, cairn.Conflict)
	release(a, prev)
	fails("second release without a request id", a, "release", prev, cairn.Conflict)
	fails("renew after release", a, "renew", coord.RenewArgs{Owner: prev.Owner, Token: prev.Token, TTLMs: 1000}, cairn.Conflict)

	// Retries with a request id answer the same grant, also after release.
	req := coord.AcquireArgs{Owner: "r", TTLMs: 60000, RequestID: "req-1"}
	g1 := acquire(a, req)
	if g2 := acquire(a, req); g2 != g1 || g1.Token != 5 {
		t.Fatalf("acquire and its retry: got %+v and %+v, want the same grant with token 5", g1, g2)
	}
	rel := coord.ReleaseArgs{Owner: "r", Token: g1.Token, RequestID: "rel-1"}
	release(a, rel)
	release(a, rel) // a retry succeeds again
	if g3 := acquire(a, req); g3.Token != g1.Token {
		t.Fatalf("acquire retried after its release: got token %d, want %d", g3.Token, g1.Token)
	}
	if info := inspect(a); info.Holder != nil || info.LastToken != g1.Token {
		t.Fatalf("after a retried acquire of a released grant: %+v (holder %+v), want free with last_token %d", info, info.Holder, g1.Token)
	}
	// The same request id on the other lock is another request: b is
	// held, so it is refused rather than answered a's grant.
	fails("request id of a grant of another lock", b, "acquire", req, cairn.Conflict)

	// Cancel by request id releases a grant; cancel of a waiting acquire
	// takes it out of line, and it answers conflict.
	acquire(a, coord.AcquireArgs{Owner: "c", TTLMs: 60000, RequestID: "c1"})
	if res := tableMust[coord.CancelResult](t, api, a, "cancel", coord.CancelArgs{Owner: "c", RequestID: "c1"}); !res.Released {
		t.Fatalf("cancel of a grant: got %+v, want released", res)
	}
	if info := inspect(a); info.Holder != nil || info.LastToken != 6 {
		t.Fatalf("after the cancel: %+v (holder %+v), want free with last_token 6", info, info.Holder)
	}
	gh := acquire(a, coord.AcquireArgs{Owner: "h", TTLMs: 60000})
	ch := goAcquire(api, a, coord.AcquireArgs{Owner: "cw", TTLMs: 60000, WaitMs: 20000, RequestID: "cw1"})
	waitFor(t, "cw in line", func() bool { return len(inspect(a).Waiters) == 1 })
	if w := inspect(a).Waiters[0]; w.Owner != "cw" || w.RequestID != "cw1" {
		t.Fatalf("waiter: %+v", w)
	}
	if res := tableMust[coord.CancelResult](t, api, a, "cancel", coord.CancelArgs{Owner: "cw", RequestID: "cw1"}); res.Canceled != 1 || res.Released {
		t.Fatalf("cancel of a waiter: got %+v, want 1 canceled, nothing released", res)
	}
	wantCode(t, "canceled acquire", await(t, ch, "cw").err, cairn.Conflict)
	info = inspect(a)
	held("after the waiter's cancel", info, "h", gh.Token, 7)
	if len(info.Waiters) != 0 {
		t.Fatalf("waiters after the cancel: %+v", info.Waiters)
	}
	// The other lock counted apart all along.
	held("the other lock at the end", inspect(b), "o2", gb.Token, 1)
}

// untouched fails the test if any lock of the shards of names has a row:
// a lease, a waiter, or a request's result. (Every shard has the lease
// named "", which its first migration leaves and no lock can be called.)
func untouched(tb testing.TB, rt *cairn.Runtime, what string, names ...string) {
	tb.Helper()
	seen := make(map[string]bool)
	for _, n := range names {
		sh := coord.LockShard(n)
		if seen[sh] {
			continue
		}
		seen[sh] = true
		rows := rawRows(tb, stub(tb, rt, "locks", sh), `SELECT 'lease', name FROM leases WHERE name != ''
			UNION ALL SELECT 'waiter', name FROM lease_waiters UNION ALL SELECT 'result', name FROM lease_results`)
		if len(rows) != 0 {
			tb.Fatalf("%s: shard %s has rows %q, want none", what, sh, rows)
		}
	}
}

// TestLockTableInput proves that bad input to the lock table is refused
// with code invalid (HTTP 400) and changes nothing: an empty, oversize
// (over 256 bytes) or invalid UTF-8 lock name, an empty or oversize owner,
// a bad TTL or wait, malformed JSON, through the Go API, the shards' RPC
// methods and HTTP; over HTTP an unknown operation is 404 and a wrong
// method 405. A name of exactly 256 bytes is a lock like any other.
func TestLockTableInput(t *testing.T) {
	srv := newServer(t, cairn.Process)
	rt := srv.runtime()
	locks := newLocks(t, rt)
	ctx := context.Background()
	long := strings.Repeat("x", coord.MaxIDBytes+1)
	ok := coord.AcquireArgs{Owner: "a", TTLMs: 60000}
	touched := []string{"res", long, "res\xff", "", "\ufffd", "res\ufffd"}

	// The Go API.
	for _, c := range []struct {
		what, name string
		a          coord.AcquireArgs
	}{
		{"empty name", "", ok},
		{"oversize name", long, ok},
		{"invalid UTF-8 name", "res\xff", ok},
		{"empty owner", "res", coord.AcquireArgs{TTLMs: 60000}},
		{"oversize owner", "res", coord.AcquireArgs{Owner: long, TTLMs: 60000}},
		{"oversize request id", "res", coord.AcquireArgs{Owner: "a", TTLMs: 60000, RequestID: long}},
		{"zero ttl", "res", coord.AcquireArgs{Owner: "a"}},
		{"huge ttl", "res", coord.AcquireArgs{Owner: "a", TTLMs: coord.MaxTTL + 1}},
		{"negative wait", "res", coord.AcquireArgs{Owner: "a", TTLMs: 60000, WaitMs: -1}},
	} {
		_, err := locks.Acquire(ctx, c.name, c.a)
		wantCode(t, "Locks.Acquire, "+c.what, err, cairn.Invalid)
	}
	for _, name := range []string{"", long, "res\xff"} {
		_, err := locks.Renew(ctx, name, coord.RenewArgs{Owner: "a", Token: 1, TTLMs: 1000})
		wantCode(t, fmt.Sprintf("Locks.Renew of %q", name), err, cairn.Invalid)
		_, err = locks.Release(ctx, name, coord.ReleaseArgs{Owner: "a", Token: 1})
		wantCode(t, fmt.Sprintf("Locks.Release of %q", name), err, cairn.Invalid)
		_, err = locks.Cancel(ctx, name, coord.CancelArgs{Owner: "a", RequestID: "r"})
		wantCode(t, fmt.Sprintf("Locks.Cancel of %q", name), err, cairn.Invalid)
		_, err = locks.Inspect(ctx, name)
		wantCode(t, fmt.Sprintf("Locks.Inspect of %q", name), err, cairn.Invalid)
	}
	_, err := locks.Cancel(ctx, "res", coord.CancelArgs{Owner: "a"})
	wantCode(t, "Locks.Cancel without request id or seq", err, cairn.Invalid)

	// The shards' RPC methods, each called on the shard of the name.
	for _, c := range []struct {
		what, method, name string
		arg                any
	}{
		{"no name", "Acquire", "", coord.TableAcquireArgs{AcquireArgs: ok}},
		{"oversize name", "Acquire", long, coord.TableAcquireArgs{Name: long, AcquireArgs: ok}},
		{"no owner", "Acquire", "res", coord.TableAcquireArgs{Name: "res", AcquireArgs: coord.AcquireArgs{TTLMs: 60000}}},
		{"negative ttl", "Acquire", "res", json.RawMessage(`{"name":"res","owner":"a","ttl_ms":-3}`)},
		{"malformed", "Acquire", "res", json.RawMessage(`{"name":1,"owner":"a","ttl_ms":10}`)},
		{"renew, oversize name", "Renew", long, coord.TableRenewArgs{Name: long, RenewArgs: coord.RenewArgs{Owner: "a", Token: 1, TTLMs: 10}}},
		{"release, no name", "Release", "", coord.TableReleaseArgs{ReleaseArgs: coord.ReleaseArgs{Owner: "a", Token: 1}}},
		{"cancel, no name", "Cancel", "", coord.TableCancelArgs{CancelArgs: coord.CancelArgs{Owner: "a", RequestID: "r"}}},
		{"inspect, oversize name", "Inspect", long, coord.TableInspectArgs{Name: long}},
	} {
		err := shardOf(t, rt, c.name).Call(ctx, c.method, c.arg, nil)
		wantCode(t, "RPC "+c.method+", "+c.what, err, cairn.Invalid)
	}

	// HTTP.
	base := srv.url + "/v1/locks/"
	for _, c := range []struct {
		what, method, path string
		body               any
		status             int
		code               string
	}{
		{"malformed JSON", "POST", "res/acquire", `{"owner":`, 400, "invalid"},
		{"unknown field", "POST", "res/acquire", `{"owner":"a","ttl_ms":10,"tll":1}`, 400, "invalid"},
		{"trailing data", "POST", "res/acquire", `{"owner":"a","ttl_ms":10} {}`, 400, "invalid"},
		{"a name in the body", "POST", "res/acquire", `{"name":"other","owner":"a","ttl_ms":10}`, 400, "invalid"},
		{"empty owner", "POST", "res/acquire", coord.AcquireArgs{TTLMs: 60000}, 400, "invalid"},
		{"oversize owner", "POST", "res/acquire", coord.AcquireArgs{Owner: long, TTLMs: 60000}, 400, "invalid"},
		{"zero ttl", "POST", "res/acquire", coord.AcquireArgs{Owner: "a"}, 400, "invalid"},
		{"oversize name", "POST", long + "/acquire", ok, 400, "invalid"},
		{"invalid UTF-8 name", "POST", "res%FF/acquire", ok, 400, "invalid"},
		{"renew, oversize name", "POST", long + "/renew", coord.RenewArgs{Owner: "a", Token: 1, TTLMs: 10}, 400, "invalid"},
		{"release, invalid UTF-8 name", "POST", "res%FF/release", coord.ReleaseArgs{Owner: "a", Token: 1}, 400, "invalid"},
		{"cancel without request id", "POST", "res/cancel", coord.CancelArgs{Owner: "a"}, 400, "invalid"},
		{"inspect, oversize name", "GET", long, nil, 400, "invalid"},
		{"inspect, invalid UTF-8 name", "GET", "res%FF", nil, 400, "invalid"},
		{"unknown operation", "POST", "res/steal", `{}`, 404, "not_found"},
		{"unknown operation, GET", "GET", "res/steal", nil, 404, "not_found"},
		{"GET acquire", "GET", "res/acquire", nil, 405, "method_not_allowed"},
		{"GET release", "GET", "res/release", nil, 405, "method_not_allowed"},
		{"POST inspect", "POST", "res", ok, 405, "method_not_allowed"},
		{"POST inspect, by name", "POST", "res/inspect", ok, 405, "method_not_allowed"},
	} {
		var r httpResult
		var err error
		if c.method == "POST" {
			r, err = post(ctx, base+c.path, c.body)
		} else {
			req, _ := http.NewRequest(c.method, base+c.path, nil)
			r, err = send(req)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if r.status != c.status || r.code != c.code {
			t.Errorf("%s: %s %s: got %d %q (%s), want %d %q", c.what, c.method, c.path, r.status, r.code, r.body, c.status, c.code)
		}
	}

	untouched(t, rt, "after bad input", touched...)
	if info, err := locks.Inspect(ctx, "res"); err != nil || info.Holder != nil || info.LastToken != 0 || len(info.Waiters) != 0 {
		t.Fatalf("res after bad input: %+v %v, want free with last_token 0", info, err)
	}

	// The bound is inclusive: a name of 256 bytes is a lock.
	name := strings.Repeat("y", coord.MaxIDBytes)
	g := mustPost[coord.AcquireResult](t, base+name+"/acquire", ok)
	if info, err := locks.Inspect(ctx, name); err != nil || info.Holder == nil || info.Holder.Token != g.Token || g.Token != 1 {
		t.Fatalf("a name of %d bytes: grant %+v, inspect %+v %v", len(name), g, info, err)
	}
}

// TestLockTableShardRefusesForeignLock proves that a shard object refuses,
// with code invalid and without writing anything, each RPC method on a
// lock that LockShard puts in another object: a client that computed the
// wrong shard cannot take, release or cancel a lock there, and the lock
// (free, then held) is unaffected in its own shard.
func TestLockTableShardRefusesForeignLock(t *testing.T) {
	rt := newRuntime(t)
	locks := newLocks(t, rt)
	ctx := context.Background()
	const name = "res"
	foreign := "shard-999"
	if coord.LockShard(name) == foreign {
		foreign = "shard-998"
	}
	fs := stub(t, rt, "locks", foreign)
	ops := []struct {
		method string
		arg    any
	}{
		{"Acquire", coord.TableAcquireArgs{Name: name, AcquireArgs: coord.AcquireArgs{Owner: "a", TTLMs: 60000, RequestID: "r"}}},
		{"Acquire", coord.TableAcquireArgs{Name: name, AcquireArgs: coord.AcquireArgs{Owner: "b", TTLMs: 60000, WaitMs: 100}}},
		{"Renew", coord.TableRenewArgs{Name: name, RenewArgs: coord.RenewArgs{Owner: "a", Token: 1, TTLMs: 1000}}},
		{"Release", coord.TableReleaseArgs{Name: name, ReleaseArgs: coord.ReleaseArgs{Owner: "a", Token: 1}}},
		{"Cancel", coord.TableCancelArgs{Name: name, CancelArgs: coord.CancelArgs{Owner: "a", RequestID: "r"}}},
		{"Inspect", coord.TableInspectArgs{Name: name}},
	}
	refused := func(when string) {
		t.Helper()
		for _, op := range ops {
			err := fs.Call(ctx, op.method, op.arg, nil)
			wantCode(t, fmt.Sprintf("%s: %s of %q on %s (its shard is %s)", when, op.method, name, foreign, coord.LockShard(name)), err, cairn.Invalid)
		}
		if rows := rawRows(t, fs, `SELECT name FROM leases WHERE name != '' UNION ALL SELECT name FROM lease_waiters UNION ALL SELECT name FROM lease_results`); len(rows) != 0 {
			t.Fatalf("%s: %s wrote rows for %q: %q", when, foreign, name, rows)
		}
	}

	refused("a lock never taken")
	if info, err := locks.Inspect(ctx, name); err != nil || info.Holder != nil || info.LastToken != 0 {
		t.Fatalf("after the refusals: %+v %v, want free with last_token 0", info, err)
	}
	untouched(t, rt, "after the refusals", name)

	g, err := locks.Acquire(ctx, name, coord.AcquireArgs{Owner: "a", TTLMs: 60000, RequestID: "r"})
	if err != nil || g.Token != 1 {
		t.Fatalf("acquire in its own shard: %+v %v, want token 1", g, err)
	}
	refused("a lock held by a with token 1")
	info := call[coord.LockInfo](t, shardOf(t, rt, name), "Inspect", coord.TableInspectArgs{Name: name})
	if info.Holder == nil || info.Holder.Owner != "a" || info.Holder.Token != g.Token || info.LastToken != 1 {
		t.Fatalf("after the refusals: %+v (holder %+v), want a holding token 1", info, info.Holder)
	}
}

// rawHolders reads the holders of a shard's locks without going through
// its class (no lazy expiry): what the alarm alone did. A free lock's
// owner is "".
func rawHolders(tb testing.TB, s *cairn.Stub) map[string]coord.Holder {
	tb.Helper()
	hs := make(map[string]coord.Holder)
	for _, v := range rawRows(tb, s, `SELECT name, owner, token FROM leases WHERE name != ''`) {
		var h coord.Holder
		h.Owner, _ = v[1].(string)
		h.Token, _ = v[2].(int64)
		hs[v[0].(string)] = h
	}
	return hs
}

// TestLockTableExpiryByAlarm proves that the locks of one shard lapse by
// the shard's alarm, with no call touching them, each within its TTL plus
// the slack of docs/coordination.md (Timing guarantees; the tests allow
// expirySlack): with several TTLs taken longest first, each shorter lease
// moves the alarm earlier and the alarm, once fired, is set again for the
// earliest expiry left; a waiter in line for a lapsing lock is granted it
// by the alarm; a lock whose holder renews stays held while another lock
// of its shard lapses; and an evicted shard is loaded by its alarm.
func TestLockTableExpiryByAlarm(t *testing.T) {
	ctx := context.Background()
	t.Run("several TTLs", func(t *testing.T) {
		rt := newRuntime(t)
		locks := newLocks(t, rt)
		names := oneShard(t, "exp-", 3)
		sh := shardOf(t, rt, names[0])
		ttls := []time.Duration{900 * time.Millisecond, 600 * time.Millisecond, 300 * time.Millisecond}
		starts := make([]time.Time, len(ttls))
		grants := make([]coord.AcquireResult, len(ttls))
		for i, ttl := range ttls {
			starts[i] = time.Now()
			g, err := locks.Acquire(ctx, names[i], coord.AcquireArgs{Owner: "holder", TTLMs: ttl.Milliseconds()})
			if err != nil || g.Token != 1 {
				t.Fatalf("acquire %s: %+v %v", names[i], g, err)
			}
			grants[i] = g
			// Each shorter lease moved the alarm to its expiry (unless the
			// machine was so slow that it already lapsed, and the alarm
			// moved on).
			exp := time.UnixMilli(g.ExpiresAt)
			if at, ok := objectAlarm(t, sh); (!ok || at.After(exp)) && time.Now().Before(exp) {
				t.Fatalf("after the grant of %s (TTL %v): alarm %v (set: %v), want by its expiry %v", names[i], ttl, at, ok, exp)
			}
		}
		// A waiter in line for the 600 ms lock. Its acquire touches the
		// lock once, now; then it waits for the grant, which only the
		// alarm can make before its 10 s wait runs out.
		waiter := goAcquire(goTableAPI(locks), names[1], coord.AcquireArgs{Owner: "waiter", TTLMs: 60000, WaitMs: 10000})
		waitFor(t, "the waiter in line", func() bool {
			return len(rawRows(t, sh, `SELECT seq FROM lease_waiters WHERE name = '`+names[1]+`'`)) == 1
		})

		lapsed := make([]time.Time, len(ttls))
		waitFor(t, "every lease to lapse", func() bool {
			hs := rawHolders(t, sh)
			done := true
			for i, n := range names {
				if h := hs[n]; lapsed[i].IsZero() && (h.Owner != "holder" || h.Token != grants[i].Token) {
					lapsed[i] = time.Now()
				}
				done = done && !lapsed[i].IsZero()
			}
			return done
		})
		for i, at := range lapsed {
			d := at.Sub(starts[i])
			if d < ttls[i] || d > ttls[i]+expirySlack {
				t.Errorf("%s lapsed %v after its acquire, want within [%v, %v]", names[i], d, ttls[i], ttls[i]+expirySlack)
			}
			t.Logf("%s lapsed %v after its acquire (TTL %v), %v after its expiry", names[i], d, ttls[i], at.Sub(time.UnixMilli(grants[i].ExpiresAt)))
		}
		w := await(t, waiter, "the waiter")
		if w.err != nil || w.res.Owner != "waiter" || w.res.Token != grants[1].Token+1 {
			t.Fatalf("the waiter: %+v %v, want a grant with token %d", w.res, w.err, grants[1].Token+1)
		}
		if d := time.Since(starts[1]); d > ttls[1]+expirySlack {
			t.Errorf("the waiter was granted %v after the holder's acquire, want within TTL + %v", d, expirySlack)
		}
		hs := rawHolders(t, sh)
		for i, n := range names {
			want := coord.Holder{}
			if i == 1 {
				want = coord.Holder{Owner: "waiter", Token: w.res.Token}
			}
			if h := hs[n]; h != want {
				t.Errorf("%s after the lapses: stored holder %+v, want %+v", n, h, want)
			}
		}
		// The alarm was set again, for the one lease left.
		if at, ok := objectAlarm(t, sh); !ok || at.After(time.UnixMilli(w.res.ExpiresAt)) || !at.After(time.Now()) {
			t.Errorf("alarm after the lapses: %v (set: %v), want by the waiter's expiry %v", at, ok, time.UnixMilli(w.res.ExpiresAt))
		}
		// The lapsed holders are fenced off.
		for i, n := range []string{names[0], names[2]} {
			_, err := locks.Release(ctx, n, coord.ReleaseArgs{Owner: "holder", Token: grants[2*i].Token})
			wantCode(t, "release of a lapsed lease", err, cairn.Conflict)
			if info, err := locks.Inspect(ctx, n); err != nil || info.Holder != nil || info.LastToken != 1 {
				t.Errorf("%s: %+v %v, want free with last_token 1", n, info, err)
			}
		}
	})

	t.Run("renewed lock stays", func(t *testing.T) {
		rt := newRuntime(t)
		locks := newLocks(t, rt)
		names := oneShard(t, "keep-", 2)
		kept, idle := names[0], names[1]
		sh := shardOf(t, rt, kept)
		const keptTTL, ttl = 400 * time.Millisecond, 300 * time.Millisecond
		gk, err := locks.Acquire(ctx, kept, coord.AcquireArgs{Owner: "keeper", TTLMs: keptTTL.Milliseconds()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		gi, err := locks.Acquire(ctx, idle, coord.AcquireArgs{Owner: "idler", TTLMs: ttl.Milliseconds()})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		renewed := make(chan error, 1)
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					renewed <- nil
					return
				case <-tick.C:
				}
				if _, err := locks.Renew(ctx, kept, coord.RenewArgs{Owner: "keeper", Token: gk.Token, TTLMs: keptTTL.Milliseconds()}); err != nil {
					renewed <- err
					return
				}
			}
		}()
		// Until the idle lock lapses, and as long again after: longer
		// than the kept lock's TTL, which only its renewals outlast.
		var lapsed time.Duration
		waitFor(t, "the idle lock to lapse, and then some", func() bool {
			hs := rawHolders(t, sh)
			if h := hs[kept]; h.Owner != "keeper" || h.Token != gk.Token {
				t.Fatalf("the renewed lock lost its holder: %+v", h)
			}
			if h := hs[idle]; lapsed == 0 && (h.Owner != "idler" || h.Token != gi.Token) {
				lapsed = time.Since(start)
			}
			return lapsed != 0 && time.Since(start) > 2*lapsed && time.Since(start) > 2*keptTTL
		})
		close(stop)
		if err := <-renewed; err != nil {
			t.Fatalf("renew of the kept lock: %v", err)
		}
		if lapsed < ttl || lapsed > ttl+expirySlack {
			t.Errorf("the idle lock lapsed %v after its acquire, want within [%v, %v]", lapsed, ttl, ttl+expirySlack)
		}
		if info, err := locks.Inspect(ctx, kept); err != nil || info.Holder == nil || info.Holder.Owner != "keeper" || info.Holder.Token != gk.Token || info.LastToken != gk.Token {
			t.Fatalf("the renewed lock: %+v %v, want keeper holding token %d", info, err, gk.Token)
		}
		if info, err := locks.Inspect(ctx, idle); err != nil || info.Holder != nil {
			t.Fatalf("the idle lock: %+v %v, want free", info, err)
		}
		t.Logf("the idle lock lapsed %v after its acquire (TTL %v); the renewed one stayed", lapsed, ttl)
	})

	t.Run("evicted shard", func(t *testing.T) {
		const ttl = time.Second
		rt := newEvictingRuntime(t)
		locks := newLocks(t, rt)
		sh := shardOf(t, rt, "res")
		start := time.Now()
		g, err := locks.Acquire(ctx, "res", coord.AcquireArgs{Owner: "a", TTLMs: ttl.Milliseconds()})
		if err != nil {
			t.Fatal(err)
		}
		expiresWhileEvicted(t, rt, sh, start, ttl)
		waitFor(t, "the lease cleared", func() bool { owner, _ := rawLeaseNamed(t, sh, "res"); return owner == "" })
		_, err = locks.Release(ctx, "res", coord.ReleaseArgs{Owner: "a", Token: g.Token})
		wantCode(t, "release of the expired grant", err, cairn.Conflict)
	})
}

// TestLockTableDisconnectLeavesQueue proves that an HTTP client waiting for
// a lock of the table that goes away leaves the line (the lock goes to the
// one behind it), and that a grant made to a waiter as its caller leaves
// is either received or given back, never left held until its TTL.
func TestLockTableDisconnectLeavesQueue(t *testing.T) {
	srv := newServer(t, cairn.Process)
	base := srv.url + "/v1/locks/res"
	locks := newLocks(t, srv.runtime())
	api := goTableAPI(locks)
	waiters := func(n int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%d waiters", n), func() bool {
			info, err := locks.Inspect(context.Background(), "res")
			return err == nil && len(info.Waiters) == n
		})
	}
	g := mustPost[coord.AcquireResult](t, base+"/acquire", coord.AcquireArgs{Owner: "a", TTLMs: 60000})

	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := post(ctx, base+"/acquire", coord.AcquireArgs{Owner: "b", TTLMs: 60000, WaitMs: 30000})
		gone <- err
	}()
	waiters(1)
	next := goAcquire(api, "res", coord.AcquireArgs{Owner: "c", TTLMs: 60000, WaitMs: 30000})
	waiters(2)
	cancel()
	<-gone
	waiters(1)
	if info, _ := locks.Inspect(context.Background(), "res"); info.Waiters[0].Owner != "c" {
		t.Fatalf("left in line: %+v, want c", info.Waiters)
	}
	mustPost[coord.ReleaseResult](t, base+"/release", coord.ReleaseArgs{Owner: "a", Token: g.Token})
	r := await(t, next, "c's acquire")
	if r.err != nil || r.res.Owner != "c" {
		t.Fatalf("after b left: %+v %v, want c to get the lock", r.res, r.err)
	}

	// Race a release against the departure of a waiter (a Go caller whose
	// context ends): either it got the lock and its call says so, or the
	// grant it could not receive is given back. (Over HTTP the answer may
	// be lost with the connection after the grant: the client cannot tell
	// then, as the docs say for a client that gives up.)
	prev := coord.ReleaseArgs{Owner: "c", Token: r.res.Token}
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		answered := make(chan tableAcquired, 1)
		go func() {
			r, err := locks.Acquire(ctx, "res", coord.AcquireArgs{Owner: "d", TTLMs: 60000, WaitMs: 30000})
			answered <- tableAcquired{r, err}
		}()
		waiters(1)
		rel := make(chan error, 1)
		go func() {
			_, err := locks.Release(context.Background(), "res", prev)
			rel <- err
		}()
		// Spread the departure over the release's turn, so that some
		// rounds grant the lock to d as it leaves.
		time.Sleep(time.Duration(i%10) * 100 * time.Microsecond)
		cancel()
		if err := <-rel; err != nil {
			t.Fatal(err)
		}
		if r := await(t, answered, "d"); r.err == nil {
			if _, err := locks.Release(context.Background(), "res", coord.ReleaseArgs{Owner: "d", Token: r.res.Token}); err != nil {
				t.Fatalf("release by d, whose call said it got token %d: %v", r.res.Token, err)
			}
		}
		waitFor(t, "the lock free", func() bool {
			info, err := locks.Inspect(context.Background(), "res")
			return err == nil && info.Holder == nil && len(info.Waiters) == 0
		})
		g, err := locks.Acquire(context.Background(), "res", coord.AcquireArgs{Owner: "c", TTLMs: 60000})
		if err != nil {
			t.Fatal(err)
		}
		prev = coord.ReleaseArgs{Owner: "c", Token: g.Token}
	}
}

// TestLockTableList proves that the table lists its locks by name, over
// Locks.List and GET /v1/locks alike: every name ever acquired, in order,
// with its holder (none once the lease lapsed, although nothing cleared
// it), its last token and its waiters; pages follow each other without a
// gap or a repeat; bad paging arguments are refused.
func TestLockTableList(t *testing.T) {
	srv := newServer(t, cairn.Process)
	locks := newLocks(t, srv.runtime())
	ctx := context.Background()
	acquire := func(name, owner string, ttl int64) coord.AcquireResult {
		t.Helper()
		g, err := locks.Acquire(ctx, name, coord.AcquireArgs{Owner: owner, TTLMs: ttl})
		if err != nil {
			t.Fatalf("acquire %s: %v", name, err)
		}
		return g
	}
	g := acquire("b", "o1", 60000)
	if _, err := locks.Release(ctx, "b", coord.ReleaseArgs{Owner: "o1", Token: g.Token}); err != nil {
		t.Fatal(err)
	}
	acquire("b", "o2", 60000)
	acquire("a", "o1", 60000)
	acquire("d", "o1", 1) // lapses at once (cleared by the alarm, or shown free: TestLockTableListLapsed)
	gc := acquire("c", "o3", 60000)
	waiting := goAcquire(goTableAPI(locks), "c", coord.AcquireArgs{Owner: "o4", TTLMs: 60000, WaitMs: 30000})
	waitFor(t, "a waiter on c", func() bool {
		info, err := locks.Inspect(ctx, "c")
		return err == nil && len(info.Waiters) == 1
	})
	time.Sleep(5 * time.Millisecond) // d's lease has lapsed

	type want struct {
		name, owner string
		last        int64
		waiters     int
	}
	check := func(how string, got []coord.TableLock, w []want) {
		t.Helper()
		if len(got) != len(w) {
			t.Fatalf("%s: %d locks %+v, want %d", how, len(got), got, len(w))
		}
		for i, l := range got {
			owner := ""
			if l.Holder != nil {
				owner = l.Holder.Owner
				if l.Holder.Token != l.LastToken {
					t.Errorf("%s: %s held with token %d, last token %d", how, l.Name, l.Holder.Token, l.LastToken)
				}
			}
			if l.Name != w[i].name || owner != w[i].owner || l.LastToken != w[i].last || l.Waiters != w[i].waiters {
				t.Errorf("%s: lock %d is %s held by %q (last %d, %d waiting), want %+v", how, i, l.Name, owner, l.LastToken, l.Waiters, w[i])
			}
		}
	}
	all := []want{{"a", "o1", 1, 0}, {"b", "o2", 2, 0}, {"c", "o3", 1, 1}, {"d", "", 1, 0}}
	res, err := locks.List(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	check("Locks.List", res.Locks, all)
	if res.Next != "" {
		t.Errorf("one page holds everything, yet next is %q", res.Next)
	}
	got := mustGet[coord.TableListResult](t, srv.url+"/v1/locks")
	check("GET /v1/locks", got.Locks, all)

	// Pages of two, over HTTP: a, b, then c, d, and no third.
	p1 := mustGet[coord.TableListResult](t, srv.url+"/v1/locks?limit=2")
	check("page 1", p1.Locks, all[:2])
	if p1.Next != "b" {
		t.Fatalf("page 1: next %q, want \"b\"", p1.Next)
	}
	p2 := mustGet[coord.TableListResult](t, srv.url+"/v1/locks?limit=2&after="+url.QueryEscape(p1.Next))
	check("page 2", p2.Locks, all[2:])
	if p2.Next != "" {
		p3 := mustGet[coord.TableListResult](t, srv.url+"/v1/locks?limit=2&after="+url.QueryEscape(p2.Next))
		check("page 3", p3.Locks, nil)
	}

	for _, q := range []string{"limit=0", "limit=-1", "limit=1001", "limit=x", "after=" + strings.Repeat("n", 257)} {
		req, _ := http.NewRequest(http.MethodGet, srv.url+"/v1/locks?"+q, nil)
		r, err := send(req)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"invalid"`) {
			t.Errorf("GET /v1/locks?%s: %d %s, want 400 invalid", q, r.status, r.body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.url+"/v1/locks", nil)
	if r, err := send(req); err != nil || r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/locks: %v %d, want 405", err, r.status)
	}
	// The waiter gets c once o3 lets it go.
	if _, err := locks.Release(ctx, "c", coord.ReleaseArgs{Owner: "o3", Token: gc.Token}); err != nil {
		t.Fatal(err)
	}
	if r := await(t, waiting, "the waiter on c"); r.err != nil {
		t.Errorf("the waiter on c: %v, want the grant", r.err)
	}
}

// TestLockTableListLapsed proves that a listing shows a lock whose lease
// lapsed as free even before anything cleared it: the lease's expiry is
// moved into the past by hand, so that the shard's alarm (still set for
// the original expiry, a minute away) has not cleared it.
func TestLockTableListLapsed(t *testing.T) {
	rt := newRuntime(t)
	locks := newLocks(t, rt)
	ctx := context.Background()
	for _, name := range []string{"long", "short"} {
		if _, err := locks.Acquire(ctx, name, coord.AcquireArgs{Owner: "o", TTLMs: 60_000}); err != nil {
			t.Fatal(err)
		}
	}
	shard := stub(t, rt, "locks", coord.LockShard("short"))
	if err := shard.Run(ctx, func(ctx context.Context, st *cairn.State) error {
		_, err := st.Exec(`UPDATE leases SET expires_at = ? WHERE name = 'short'`, time.Now().Add(-time.Second).UnixMilli())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	res, err := locks.List(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if raw := rawRows(t, shard, `SELECT owner FROM leases WHERE name = 'short'`); len(raw) != 1 || raw[0][0] != "o" {
		t.Fatalf("short's row after the listing: %v, want still held by o (the listing reads only)", raw)
	}
	if len(res.Locks) != 2 || res.Locks[0].Name != "long" || res.Locks[0].Holder == nil || res.Locks[1].Name != "short" || res.Locks[1].Holder != nil {
		b, _ := json.Marshal(res)
		t.Fatalf("listing %s, want long held and short free", b)
	}
}
