package coord

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
)

// openOn opens a runtime on dir with class registered as namespace ns.
func openOn(tb testing.TB, dir, ns string, class cairn.Class) *cairn.Runtime {
	tb.Helper()
	eng, err := sqlite.Open(dir, cairn.Disk)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Disk
	if _, err := rt.Register(ns, class); err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	return rt
}

func closeOn(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Fatalf("close runtime: %v", err)
	}
}

// oldLease is an object of the schema before leases had names: it only
// holds the tables its migrations made.
type oldLease struct{}

// writeOldLease makes the object name of rt's namespace ns hold, in the
// first migration's tables, a lease of "old" with token 41 for an hour,
// granted for request "req-41", and a waiter row left by a dead handler;
// it returns the lease's expiry.
func writeOldLease(tb testing.TB, rt *cairn.Runtime, ns, name string) int64 {
	tb.Helper()
	s := stubOf(tb, rt, ns, name)
	now := time.Now().UnixMilli()
	exp := now + time.Hour.Milliseconds()
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`UPDATE lease SET last_token = 41, next_seq = 7, owner = 'old', token = 41, expires_at = ?, acquired_at = ? WHERE id = 1`, []any{exp, now}},
			{`INSERT INTO lease_requests (owner, request_id, op, token, expires_at, at) VALUES ('old', 'req-41', 'acquire', 41, ?, ?)`, []any{exp, now}},
			{`INSERT INTO lease_waiters (seq, owner, request_id, ttl_ms, deadline, enqueued_at) VALUES (6, 'w', 'rw', 60000, ?, ?)`, []any{exp, now}},
		} {
			if _, err := st.Exec(q.sql, q.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return exp
}

// TestLeaseMigrationKeepsOldLeases proves that migration 2 (leases keyed
// by name) keeps what an object made under migration 1 alone held: a lock
// object's and a leader's holder, token and expiry, and the result of the
// request that granted it (a retry answers the same grant); the waiter row
// of a handler long gone is dropped; and the next grant after release is
// token 42, not 1.
func TestLeaseMigrationKeepsOldLeases(t *testing.T) {
	old := func(st *cairn.State) (any, error) { return oldLease{}, nil }
	ctx := context.Background()

	t.Run("lock", func(t *testing.T) {
		dir := t.TempDir()
		rt := openOn(t, dir, "oldlock", cairn.Class{New: old, Migrations: leaseMigrations[:1]})
		exp := writeOldLease(t, rt, "oldlock", "res")
		closeOn(t, rt)

		rt = openOn(t, dir, "oldlock", LockClass)
		defer closeOn(t, rt)
		s := stubOf(t, rt, "oldlock", "res")
		var info LockInfo
		if err := s.Call(ctx, "Inspect", nil, &info); err != nil {
			t.Fatal(err)
		}
		if h := info.Holder; h == nil || h.Owner != "old" || h.Token != 41 || h.ExpiresAt != exp || info.LastToken != 41 {
			t.Fatalf("after the upgrade: %+v (holder %+v), want old holding token 41 until %d, last_token 41", info, info.Holder, exp)
		}
		if len(info.Waiters) != 0 {
			t.Fatalf("waiters after the upgrade: %+v, want none (their handlers are gone)", info.Waiters)
		}
		var g AcquireResult
		if err := s.Call(ctx, "Acquire", AcquireArgs{Owner: "old", TTLMs: 60000, RequestID: "req-41"}, &g); err != nil || g.Token != 41 || g.ExpiresAt != exp {
			t.Fatalf("retry of the old grant's request: %+v %v, want token 41 until %d", g, err, exp)
		}
		err := s.Call(ctx, "Acquire", AcquireArgs{Owner: "new", TTLMs: 60000}, nil)
		if cairn.ErrorCode(err) != cairn.Conflict {
			t.Fatalf("acquire of the lock held since before the upgrade: %v, want conflict", err)
		}
		if err := s.Call(ctx, "Release", ReleaseArgs{Owner: "old", Token: 41}, nil); err != nil {
			t.Fatalf("release by the old holder: %v", err)
		}
		if err := s.Call(ctx, "Acquire", AcquireArgs{Owner: "new", TTLMs: 60000}, &g); err != nil || g.Token != 42 {
			t.Fatalf("acquire after the release: %+v %v, want token 42", g, err)
		}
	})

	t.Run("leader", func(t *testing.T) {
		dir := t.TempDir()
		rt := openOn(t, dir, "oldleader", cairn.Class{New: old, Migrations: []cairn.Migration{leaseMigrations[0], feedMigration}})
		exp := writeOldLease(t, rt, "oldleader", "group")
		closeOn(t, rt)

		rt = openOn(t, dir, "oldleader", LeaderClass)
		defer closeOn(t, rt)
		s := stubOf(t, rt, "oldleader", "group")
		var info LeaderInfo
		if err := s.Call(ctx, "Inspect", nil, &info); err != nil {
			t.Fatal(err)
		}
		if info.Leader != "old" || info.Term != 41 || info.ExpiresAt != exp || len(info.Candidates) != 0 {
			t.Fatalf("after the upgrade: %+v, want old leading in term 41 until %d, no candidates", info, exp)
		}
		if err := s.Call(ctx, "Resign", ResignArgs{Candidate: "old", Term: 41}, nil); err != nil {
			t.Fatalf("resign of the old leader: %v", err)
		}
		var c CampaignResult
		if err := s.Call(ctx, "Campaign", CampaignArgs{Candidate: "new", TTLMs: 60000}, &c); err != nil || !c.Elected || c.Term != 42 {
			t.Fatalf("campaign after the resignation: %+v %v, want elected in term 42", c, err)
		}
	})
}

func stubOf(tb testing.TB, rt *cairn.Runtime, ns, name string) *cairn.Stub {
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

// TestLockTableDropsIdleLeases proves that a shard's memory of leases stays
// bounded (maxIdleLeases) as locks of ever new names come and go, and that
// a lease whose memory was dropped is read again intact: its next token
// follows its last. It also shows that leases with waiters are kept.
func TestLockTableDropsIdleLeases(t *testing.T) {
	defer func(n int) { maxIdleLeases = n }(maxIdleLeases)
	maxIdleLeases = 64
	var shard *LockTable
	class := LockTableClass
	class.New = func(st *cairn.State) (any, error) {
		v, err := LockTableClass.New(st)
		if err == nil {
			shard = v.(*LockTable)
		}
		return v, err
	}
	eng, err := sqlite.Open(t.TempDir(), cairn.Process)
	if err != nil {
		t.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	if _, err := rt.Register("locks", class); err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		t.Fatal(err)
	}
	defer closeOn(t, rt)
	locks, err := NewLocks(rt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cycle := func(name string) int64 {
		t.Helper()
		g, err := locks.Acquire(ctx, name, AcquireArgs{Owner: "o", TTLMs: 60000})
		if err != nil {
			t.Fatalf("acquire %s: %v", name, err)
		}
		if _, err := locks.Release(ctx, name, ReleaseArgs{Owner: "o", Token: g.Token}); err != nil {
			t.Fatalf("release %s: %v", name, err)
		}
		return g.Token
	}
	cycle("first")
	cycle("first")
	// A lease with a waiter: held by "h", waited for by "w".
	held, err := locks.Acquire(ctx, "held", AcquireArgs{Owner: "h", TTLMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := locks.Acquire(ctx, "held", AcquireArgs{Owner: "w", TTLMs: 60000, WaitMs: 60000})
		waited <- err
	}()
	for {
		info, err := locks.Inspect(ctx, "held")
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Waiters) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := range maxIdleLeases + 100 {
		cycle("n" + strconv.Itoa(i))
	}
	var n int
	var waiterKept bool
	if err := stubOf(t, rt, "locks", LockShard("first")).Run(ctx, func(ctx context.Context, st *cairn.State) error {
		n = len(shard.t.byName)
		waiterKept = shard.t.byName["held"] != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n >= maxIdleLeases {
		t.Errorf("%d leases in memory after %d names, want fewer than %d", n, maxIdleLeases+103, maxIdleLeases)
	}
	if !waiterKept {
		t.Error("the lease with a waiter was dropped from memory")
	}
	if tok := cycle("first"); tok != 3 {
		t.Errorf("token of \"first\" after its memory was dropped: %d, want 3", tok)
	}
	if _, err := locks.Release(ctx, "held", ReleaseArgs{Owner: "h", Token: held.Token}); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Errorf("the waiter of \"held\": %v, want the grant", err)
	}
}
