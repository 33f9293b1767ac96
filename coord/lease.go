package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
)

// The lease is the core that Lock, LockTable and Leader share: one holder
// at a time with a TTL, a token (the lock's fencing token, the leader's
// term) that strictly increases for the life of the object's storage, FIFO
// waiters, expiry by alarm and idempotent retries by request id.
//
// An object holds its leases by name: Lock and Leader one (named ""), a
// LockTable shard any number, one per lock it was asked for.
//
// Everything durable is in the object's SQLite. In memory are the set of
// waiting requests (a channel each), which exists only while their handlers
// run, so a fresh instance deletes any waiter rows it finds: their handlers
// are gone (an instance is built anew only on activation or after a reset,
// and an object is never evicted while a handler runs); and a copy of the
// lease row, as the instance last wrote or read it, forgotten when an
// operation fails (its turn rolls back) or the runtime says storage changed
// under it (cairn.Invalidator).

var leaseMigrations = []cairn.Migration{{SQL: `
CREATE TABLE lease (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	last_token INTEGER NOT NULL,
	next_seq INTEGER NOT NULL,
	owner TEXT,
	token INTEGER,
	expires_at INTEGER,
	acquired_at INTEGER
);
INSERT INTO lease (id, last_token, next_seq) VALUES (1, 0, 1);
CREATE TABLE lease_waiters (
	seq INTEGER PRIMARY KEY,
	owner TEXT NOT NULL,
	request_id TEXT NOT NULL,
	ttl_ms INTEGER NOT NULL,
	deadline INTEGER NOT NULL,
	enqueued_at INTEGER NOT NULL,
	granted INTEGER
);
CREATE INDEX lease_waiters_request ON lease_waiters (owner, request_id);
CREATE TABLE lease_requests (
	owner TEXT NOT NULL,
	request_id TEXT NOT NULL,
	op TEXT NOT NULL,
	token INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	at INTEGER NOT NULL,
	PRIMARY KEY (owner, request_id, op)
);
CREATE INDEX lease_requests_at ON lease_requests (at);
`}, {SQL: `
CREATE TABLE leases (
	name TEXT PRIMARY KEY,
	last_token INTEGER NOT NULL,
	next_seq INTEGER NOT NULL,
	owner TEXT,
	token INTEGER,
	expires_at INTEGER,
	acquired_at INTEGER
);
INSERT INTO leases (name, last_token, next_seq, owner, token, expires_at, acquired_at)
	SELECT '', last_token, next_seq, owner, token, expires_at, acquired_at FROM lease;
DROP TABLE lease;
CREATE INDEX leases_expires ON leases (expires_at) WHERE owner IS NOT NULL;
DROP TABLE lease_waiters;
CREATE TABLE lease_waiters (
	name TEXT NOT NULL,
	seq INTEGER NOT NULL,
	owner TEXT NOT NULL,
	request_id TEXT NOT NULL,
	ttl_ms INTEGER NOT NULL,
	deadline INTEGER NOT NULL,
	enqueued_at INTEGER NOT NULL,
	granted INTEGER,
	PRIMARY KEY (name, seq)
);
CREATE INDEX lease_waiters_request ON lease_waiters (name, owner, request_id);
CREATE TABLE lease_results (
	name TEXT NOT NULL,
	owner TEXT NOT NULL,
	request_id TEXT NOT NULL,
	op TEXT NOT NULL,
	token INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	at INTEGER NOT NULL,
	PRIMARY KEY (name, owner, request_id, op)
);
INSERT INTO lease_results SELECT '', owner, request_id, op, token, expires_at, at FROM lease_requests;
DROP TABLE lease_requests;
CREATE INDEX lease_results_at ON lease_results (at);
`}}

// Holder is the current holder of a lock or leadership.
type Holder struct {
	Owner      string `json:"owner"`
	Token      int64  `json:"token"`
	ExpiresAt  int64  `json:"expires_at"`  // Unix milliseconds
	AcquiredAt int64  `json:"acquired_at"` // Unix milliseconds
}

// Waiter is a request waiting for a lock or leadership, in FIFO order.
type Waiter struct {
	Seq        int64  `json:"seq"`
	Owner      string `json:"owner"`
	RequestID  string `json:"request_id"`
	Deadline   int64  `json:"deadline"`    // Unix milliseconds
	EnqueuedAt int64  `json:"enqueued_at"` // Unix milliseconds
}

type leaseState struct {
	lastToken int64
	nextSeq   int64
	holder    *Holder
}

// leaseEvent is a change of holder: "acquired", "released", "expired".
type leaseEvent struct {
	Kind   string
	Holder Holder
}

// leases are an object's leases, by name.
type leases struct {
	st     *cairn.State
	notify func(ctx context.Context, ev leaseEvent) error // in the turn; may be nil

	dirty   bool // the current operation wrote: see finish
	records int  // request records written by this instance, to prune now and then

	mu      sync.Mutex // guards every lease's waiters: touched by handlers inside Release
	byName  map[string]*lease
	pruneAt int // the size of byName at which get drops idle leases next (at least maxIdleLeases)
}

// lease is one lease of an object.
type lease struct {
	*leases
	name string

	// The lease row as storage holds it in the current turn, or nil: read
	// it again. Touched only by the turn's holder.
	cached *leaseState

	waiters map[int64]*leaseWaiter // guarded by leases.mu
}

type leaseWaiter struct {
	poke chan struct{} // 1-buffered: look at storage again
	gone bool          // the handler gave up; do not grant to it
}

// newLeases returns the leases of the object of st, in its constructor.
func newLeases(st *cairn.State) (*leases, error) {
	// Waiter rows of an earlier instance have no handler left.
	if _, err := st.Exec(`DELETE FROM lease_waiters`); err != nil {
		return nil, err
	}
	return &leases{st: st, byName: make(map[string]*lease)}, nil
}

// newLease returns the one lease (named "") of a Lock or Leader object.
func newLease(st *cairn.State) (*lease, error) {
	t, err := newLeases(st)
	if err != nil {
		return nil, err
	}
	return t.get(""), nil
}

// maxIdleLeases bounds the leases a LockTable keeps in memory with nobody
// waiting for them: past it, they are dropped (and read again when asked
// for), so that memory does not grow with every lock name ever used. A
// variable for tests.
var maxIdleLeases = 4096

// get returns the lease named name, creating its memory if needed. Turn
// holder only.
func (t *leases) get(name string) *lease {
	if l := t.byName[name]; l != nil {
		return l
	}
	if len(t.byName) >= max(t.pruneAt, maxIdleLeases) {
		t.mu.Lock()
		for n, l := range t.byName {
			if len(l.waiters) == 0 {
				delete(t.byName, n)
			}
		}
		t.mu.Unlock()
		// Leases with waiters stay: if they are many, look again only
		// once as many more were added, not on every call.
		t.pruneAt = 2 * len(t.byName)
	}
	l := &lease{leases: t, name: name, waiters: make(map[int64]*leaseWaiter)}
	t.byName[name] = l
	return l
}

// forgetAll drops every lease's copy of its row: storage changed under
// them, or the turn that wrote them rolls back.
func (t *leases) forgetAll() {
	for _, l := range t.byName {
		l.cached = nil
	}
}

func (l *lease) now() int64 { return l.st.Now().UnixMilli() }

// releasedError marks an error returned by a handler that lost its turn
// (its context ended while it was released): the instance is off limits.
type releasedError struct{ err error }

func (e *releasedError) Error() string { return e.err.Error() }
func (e *releasedError) Unwrap() error { return e.err }

// clone returns a copy of s that shares nothing with it.
func (s leaseState) clone() leaseState {
	if s.holder != nil {
		h := *s.holder
		s.holder = &h
	}
	return s
}

// remember keeps a copy of s, which the operation has just written.
func (l *lease) remember(s *leaseState) {
	c := s.clone()
	l.cached = &c
}

// exec runs a write, noting that the operation wrote.
func (l *leases) exec(query string, args ...any) (cairn.Result, error) {
	l.dirty = true
	return l.st.Exec(query, args...)
}

// finish ends an operation. A turn that returns an error is rolled back,
// but an operation that expired a lease or removed a waiter before finding
// that it must answer Conflict or Timeout (or that its client left) must
// keep those writes: they are committed first, by releasing the turn.
func (l *leases) finish(err error) error {
	var re *releasedError
	if errors.As(err, &re) {
		return re.err // the handler does not hold the turn: touch nothing
	}
	dirty := l.dirty
	l.dirty = false
	if err == nil || !dirty {
		// No lease row written since the turn began (or since Release
		// committed what came before): the copy is still storage's.
		return err
	}
	var ce *cairn.Error
	expected := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ce) && (ce.Code == cairn.Conflict || ce.Code == cairn.Timeout)
	if expected {
		return cairn.Keep(err) // an answer, not a failure: keep the housekeeping
	}
	l.forgetAll() // the turn rolls back
	return err
}

// alarmDone ends an alarm's turn: an error rolls it back (and the runtime
// retries the alarm).
func (l *leases) alarmDone(err error) error {
	l.dirty = false
	if err != nil {
		l.forgetAll()
	}
	return err
}

func i64(v any) int64 {
	n, _ := v.(int64)
	return n
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func (l *lease) load() (leaseState, error) {
	if l.cached != nil {
		return l.cached.clone(), nil
	}
	rows, err := l.st.Query(`SELECT last_token, next_seq, owner, token, expires_at, acquired_at FROM leases WHERE name = ?`, l.name)
	if err != nil {
		return leaseState{}, err
	}
	if len(rows.Values) == 0 {
		// Never granted: the row is written with the first change.
		s := leaseState{nextSeq: 1}
		l.remember(&s)
		return s, nil
	}
	v := rows.Values[0]
	s := leaseState{lastToken: i64(v[0]), nextSeq: i64(v[1])}
	if v[2] != nil {
		s.holder = &Holder{Owner: str(v[2]), Token: i64(v[3]), ExpiresAt: i64(v[4]), AcquiredAt: i64(v[5])}
	}
	l.remember(&s)
	return s, nil
}

// expire clears a holder whose lease has lapsed and grants the lock to the
// next waiter. Every operation calls it first, so expiry does not depend on
// the alarm's punctuality; the alarm makes it happen with no traffic.
func (l *lease) expire(ctx context.Context, now int64) (leaseState, error) {
	s, err := l.load()
	if err != nil {
		return s, err
	}
	if s.holder != nil && s.holder.ExpiresAt <= now {
		if err := l.clear(ctx, &s, "expired"); err != nil {
			return s, err
		}
		if err := l.grantNext(ctx, now, &s); err != nil {
			return s, err
		}
	}
	return s, nil
}

// clear removes the holder.
func (l *lease) clear(ctx context.Context, s *leaseState, kind string) error {
	if _, err := l.exec(`UPDATE leases SET owner = NULL, token = NULL, expires_at = NULL, acquired_at = NULL WHERE name = ?`, l.name); err != nil {
		return err
	}
	h := *s.holder
	s.holder = nil
	l.remember(s)
	if l.notify != nil {
		return l.notify(ctx, leaseEvent{Kind: kind, Holder: h})
	}
	return nil
}

// grant makes owner the holder with the next token.
func (l *lease) grant(ctx context.Context, s *leaseState, owner, requestID string, ttl, now int64) (Holder, error) {
	h := Holder{Owner: owner, Token: s.lastToken + 1, ExpiresAt: now + ttl, AcquiredAt: now}
	if _, err := l.exec(`INSERT INTO leases (name, last_token, next_seq, owner, token, expires_at, acquired_at) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET last_token = excluded.last_token, owner = excluded.owner, token = excluded.token,
			expires_at = excluded.expires_at, acquired_at = excluded.acquired_at`,
		l.name, h.Token, s.nextSeq, h.Owner, h.Token, h.ExpiresAt, h.AcquiredAt); err != nil {
		return h, err
	}
	s.lastToken = h.Token
	s.holder = &h
	l.remember(s)
	if requestID != "" {
		if err := l.record(owner, requestID, "acquire", h.Token, h.ExpiresAt, now); err != nil {
			return h, err
		}
	}
	if l.notify != nil {
		return h, l.notify(ctx, leaseEvent{Kind: "acquired", Holder: h})
	}
	return h, nil
}

// grantNext grants a free lease to the first live waiter, in FIFO order.
func (l *lease) grantNext(ctx context.Context, now int64, s *leaseState) error {
	if s.holder != nil {
		return nil
	}
	l.mu.Lock()
	none := len(l.waiters) == 0
	l.mu.Unlock()
	if none {
		// No handler of this instance waits. Rows of waiters that left
		// are removed by their handlers (or by withdraw, or the next
		// instance), so there is nobody to grant to.
		return nil
	}
	rows, err := l.st.Query(`SELECT seq, owner, request_id, ttl_ms, deadline FROM lease_waiters WHERE name = ? AND granted IS NULL ORDER BY seq`, l.name)
	if err != nil {
		return err
	}
	for _, v := range rows.Values {
		seq := i64(v[0])
		l.mu.Lock()
		w := l.waiters[seq]
		alive := w != nil && !w.gone
		l.mu.Unlock()
		if !alive {
			if _, err := l.exec(`DELETE FROM lease_waiters WHERE name = ? AND seq = ?`, l.name, seq); err != nil {
				return err
			}
			continue
		}
		if i64(v[4]) <= now {
			continue // its handler is about to time out and remove it
		}
		if _, err := l.grant(ctx, s, str(v[1]), str(v[2]), i64(v[3]), now); err != nil {
			return err
		}
		if _, err := l.exec(`UPDATE lease_waiters SET granted = ? WHERE name = ? AND seq = ?`, s.holder.Token, l.name, seq); err != nil {
			return err
		}
		// Waking it early is harmless: it reads its grant from storage in
		// a turn after this one, and waits again if this turn rolled back.
		poke(w)
		return nil
	}
	return nil
}

func poke(w *leaseWaiter) {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// record remembers the result of a request for retries.
func (l *lease) record(owner, requestID, op string, token, expiresAt, now int64) error {
	if _, err := l.exec(`INSERT OR REPLACE INTO lease_results (name, owner, request_id, op, token, expires_at, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		l.name, owner, requestID, op, token, expiresAt, now); err != nil {
		return err
	}
	if _, err := l.exec(`DELETE FROM lease_results WHERE at < ?`, now-requestWindow); err != nil {
		return err
	}
	l.records++
	if l.records%256 == 0 {
		if _, err := l.exec(`DELETE FROM lease_results WHERE rowid IN (SELECT rowid FROM lease_results ORDER BY at DESC LIMIT -1 OFFSET ?)`, requestCap); err != nil {
			return err
		}
	}
	return nil
}

// recorded returns the token and expiry a request got, if it is remembered.
func (l *lease) recorded(owner, requestID, op string) (token, expiresAt int64, ok bool, err error) {
	rows, err := l.st.Query(`SELECT token, expires_at FROM lease_results WHERE name = ? AND owner = ? AND request_id = ? AND op = ?`, l.name, owner, requestID, op)
	if err != nil || len(rows.Values) == 0 {
		return 0, 0, false, err
	}
	return i64(rows.Values[0][0]), i64(rows.Values[0][1]), true, nil
}

// setAlarm makes sure the object's alarm fires by the holder's expiry.
// Waiters need none: each waiting handler keeps its own deadline, and
// waiter rows without a handler are removed by the next instance or the
// next grant to a waiter.
//
// An alarm already set no later than the expiry is left alone: it fires
// early (or, if it is due, about now), and the alarm handler sets it again
// for the earliest expiry then (alarm). So the object's alarm is never
// later than any of its leases' expiries, with one lease or many. Moving it on every grant and
// renew would write a page to the object's WAL on each; this way an object
// acquired and released all the time writes its alarm about once per TTL.
// With no holder the alarm is left as it is too: it fires once for nothing.
// Deleting it would make the next grant set an alarm on an object without
// one, which costs a durable write to the runtime's alarm index (an fsync
// at Disk) on every acquire.
func (l *lease) setAlarm(s leaseState) error {
	if s.holder == nil {
		return nil
	}
	cur, ok, err := l.st.Alarm()
	if err != nil {
		return err
	}
	at := time.UnixMilli(s.holder.ExpiresAt)
	if ok && !cur.After(at) {
		return nil
	}
	return l.st.SetAlarm(at)
}

type acquireReq struct {
	owner, requestID string
	ttl, wait        int64
}

// acquire grants the lease to a.owner, waiting up to a.wait milliseconds
// in FIFO order if it is held.
func (l *lease) acquire(ctx context.Context, a acquireReq) (Holder, error) {
	now := l.now()
	s, err := l.expire(ctx, now)
	if err != nil {
		return Holder{}, err
	}
	if a.requestID != "" {
		tok, exp, ok, err := l.recorded(a.owner, a.requestID, "acquire")
		if err != nil {
			return Holder{}, err
		}
		if ok {
			// A retry: the same answer. Its earlier handler, if still
			// waiting to deliver the grant, must not release it.
			if _, err := l.exec(`DELETE FROM lease_waiters WHERE name = ? AND owner = ? AND request_id = ? AND granted = ?`, l.name, a.owner, a.requestID, tok); err != nil {
				return Holder{}, err
			}
			if s.holder != nil && s.holder.Token == tok {
				return *s.holder, l.setAlarm(s)
			}
			return Holder{Owner: a.owner, Token: tok, ExpiresAt: exp}, l.setAlarm(s)
		}
	}
	if s.holder == nil {
		h, err := l.grant(ctx, &s, a.owner, a.requestID, a.ttl, now)
		if err != nil {
			return h, err
		}
		return h, l.setAlarm(s)
	}
	if err := l.setAlarm(s); err != nil {
		return Holder{}, err
	}
	if s.holder.Owner == a.owner {
		return Holder{}, cairn.Errorf(cairn.Conflict, "already held by %q with token %d: renew or release it", a.owner, s.holder.Token)
	}
	if a.wait == 0 {
		return Holder{}, cairn.Errorf(cairn.Conflict, "held by %q with token %d until %s", s.holder.Owner, s.holder.Token, time.UnixMilli(s.holder.ExpiresAt).UTC().Format(time.RFC3339Nano))
	}

	// Wait in line.
	seq := s.nextSeq
	if a.requestID == "" {
		a.requestID = "auto-" + strconv.FormatInt(seq, 10) + "-" + randomHex(4)
	}
	deadline := now + a.wait
	if _, err := l.exec(`INSERT INTO leases (name, last_token, next_seq) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET next_seq = excluded.next_seq`, l.name, s.lastToken, seq+1); err != nil {
		return Holder{}, err
	}
	s.nextSeq = seq + 1
	l.remember(&s)
	if _, err := l.exec(`INSERT INTO lease_waiters (name, seq, owner, request_id, ttl_ms, deadline, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		l.name, seq, a.owner, a.requestID, a.ttl, deadline, now); err != nil {
		return Holder{}, err
	}
	w := &leaseWaiter{poke: make(chan struct{}, 1)}
	l.mu.Lock()
	l.waiters[seq] = w
	l.mu.Unlock()
	unregister := func() {
		l.mu.Lock()
		delete(l.waiters, seq)
		l.mu.Unlock()
	}
	for {
		wait := time.Duration(deadline-l.now()) * time.Millisecond
		err := l.st.Release(func(rctx context.Context) error {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-w.poke:
			case <-rctx.Done():
			case <-t.C:
			}
			return nil // never an error: a nil return from Release means we hold the turn
		})
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			// The instance was reset while we waited: its successor drops
			// the waiter rows it finds, and storage is off limits here.
			// (Otherwise Release returned holding the turn, and a client
			// that left is handled below.)
			l.mu.Lock()
			w.gone = true
			delete(l.waiters, seq)
			l.mu.Unlock()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return Holder{}, &releasedError{err}
		}
		l.dirty = false // Release committed what came before
		now := l.now()
		s, err := l.expire(ctx, now)
		if err != nil {
			unregister()
			return Holder{}, err
		}
		rows, err := l.st.Query(`SELECT granted FROM lease_waiters WHERE name = ? AND seq = ?`, l.name, seq)
		if err != nil {
			unregister()
			return Holder{}, err
		}
		if len(rows.Values) == 0 {
			unregister()
			if ctx.Err() != nil {
				return Holder{}, ctx.Err()
			}
			return Holder{}, cairn.Errorf(cairn.Conflict, "the acquire was canceled")
		}
		granted, isGranted := rows.Values[0][0].(int64)
		if ctx.Err() != nil || (!isGranted && now >= deadline) {
			// The client left, or its deadline passed: leave the line, and
			// give back a grant it will never see.
			unregister()
			if _, err := l.exec(`DELETE FROM lease_waiters WHERE name = ? AND seq = ?`, l.name, seq); err != nil {
				return Holder{}, err
			}
			if isGranted && s.holder != nil && s.holder.Token == granted {
				if err := l.clear(ctx, &s, "released"); err != nil {
					return Holder{}, err
				}
				if _, err := l.exec(`DELETE FROM lease_results WHERE name = ? AND owner = ? AND request_id = ? AND op = 'acquire'`, l.name, a.owner, a.requestID); err != nil {
					return Holder{}, err
				}
				if err := l.grantNext(ctx, now, &s); err != nil {
					return Holder{}, err
				}
			}
			if err := l.setAlarm(s); err != nil {
				return Holder{}, err
			}
			if ctx.Err() != nil {
				return Holder{}, ctx.Err()
			}
			return Holder{}, cairn.Errorf(cairn.Timeout, "not acquired within wait_ms=%d: held by %q", a.wait, holderName(s))
		}
		if isGranted {
			unregister()
			if _, err := l.exec(`DELETE FROM lease_waiters WHERE name = ? AND seq = ?`, l.name, seq); err != nil {
				return Holder{}, err
			}
			if s.holder != nil && s.holder.Token == granted {
				return *s.holder, nil
			}
			return Holder{}, cairn.Errorf(cairn.Conflict, "granted token %d lapsed before it could be delivered", granted)
		}
	}
}

func holderName(s leaseState) string {
	if s.holder == nil {
		return ""
	}
	return s.holder.Owner
}

// renew extends the holder's lease.
func (l *lease) renew(ctx context.Context, owner string, token, ttl int64) (Holder, error) {
	now := l.now()
	s, err := l.expire(ctx, now)
	if err != nil {
		return Holder{}, err
	}
	if s.holder == nil || s.holder.Owner != owner || s.holder.Token != token {
		return Holder{}, notHolder(s, owner, token)
	}
	s.holder.ExpiresAt = now + ttl
	if _, err := l.exec(`UPDATE leases SET expires_at = ? WHERE name = ?`, s.holder.ExpiresAt, l.name); err != nil {
		return Holder{}, err
	}
	l.remember(&s)
	return *s.holder, l.setAlarm(s)
}

func notHolder(s leaseState, owner string, token int64) error {
	if s.holder == nil {
		return cairn.Errorf(cairn.Conflict, "token %d of %q is not current: the lease expired or was released", token, owner)
	}
	return cairn.Errorf(cairn.Conflict, "token %d of %q is not current: held by %q with token %d", token, owner, s.holder.Owner, s.holder.Token)
}

// release gives the lease up, if owner holds it with token.
func (l *lease) release(ctx context.Context, owner string, token int64, requestID string) error {
	now := l.now()
	s, err := l.expire(ctx, now)
	if err != nil {
		return err
	}
	if s.holder != nil && s.holder.Owner == owner && s.holder.Token == token {
		if err := l.clear(ctx, &s, "released"); err != nil {
			return err
		}
		if requestID != "" {
			if err := l.record(owner, requestID, "release", token, now, now); err != nil {
				return err
			}
		}
		if err := l.grantNext(ctx, now, &s); err != nil {
			return err
		}
		return l.setAlarm(s)
	}
	if requestID != "" {
		tok, _, ok, err := l.recorded(owner, requestID, "release")
		if err != nil {
			return err
		}
		if ok && tok == token {
			return nil // a retry of a release that succeeded
		}
	}
	return notHolder(s, owner, token)
}

// withdraw removes waiting requests and releases a grant they produced
// that is still held. With seq, only that waiter (an abandoned handler's);
// otherwise every waiter of (owner, requestID) and the grant recorded for
// it.
func (l *lease) withdraw(ctx context.Context, owner, requestID string, seq int64) (CancelResult, error) {
	var res CancelResult
	now := l.now()
	s, err := l.expire(ctx, now)
	if err != nil {
		return res, err
	}
	var rows *cairn.Rows
	if seq != 0 {
		rows, err = l.st.Query(`SELECT seq, granted FROM lease_waiters WHERE name = ? AND seq = ? AND owner = ?`, l.name, seq, owner)
	} else {
		rows, err = l.st.Query(`SELECT seq, granted FROM lease_waiters WHERE name = ? AND owner = ? AND request_id = ?`, l.name, owner, requestID)
	}
	if err != nil {
		return res, err
	}
	release := func(tok int64) error {
		if s.holder == nil || s.holder.Token != tok || s.holder.Owner != owner {
			return nil
		}
		res.Released = true
		if err := l.clear(ctx, &s, "released"); err != nil {
			return err
		}
		_, err := l.exec(`DELETE FROM lease_results WHERE name = ? AND owner = ? AND request_id = ? AND op = 'acquire'`, l.name, owner, requestID)
		return err
	}
	for _, v := range rows.Values {
		ws := i64(v[0])
		if _, err := l.exec(`DELETE FROM lease_waiters WHERE name = ? AND seq = ?`, l.name, ws); err != nil {
			return res, err
		}
		res.Canceled++
		l.mu.Lock()
		if w := l.waiters[ws]; w != nil {
			poke(w) // it finds its row gone and answers "canceled"
		}
		l.mu.Unlock()
		if tok, ok := v[1].(int64); ok {
			if err := release(tok); err != nil {
				return res, err
			}
		}
	}
	if seq == 0 && requestID != "" {
		tok, _, ok, err := l.recorded(owner, requestID, "acquire")
		if err != nil {
			return res, err
		}
		if ok {
			if err := release(tok); err != nil {
				return res, err
			}
		}
	}
	if err := l.grantNext(ctx, now, &s); err != nil {
		return res, err
	}
	return res, l.setAlarm(s)
}

// info returns the holder and the waiters.
func (l *lease) info(ctx context.Context) (leaseState, []Waiter, error) {
	s, err := l.expire(ctx, l.now())
	if err != nil {
		return s, nil, err
	}
	if err := l.setAlarm(s); err != nil {
		return s, nil, err
	}
	rows, err := l.st.Query(`SELECT seq, owner, request_id, deadline, enqueued_at FROM lease_waiters WHERE name = ? AND granted IS NULL ORDER BY seq`, l.name)
	if err != nil {
		return s, nil, err
	}
	ws := make([]Waiter, 0, len(rows.Values))
	for _, v := range rows.Values {
		ws = append(ws, Waiter{Seq: i64(v[0]), Owner: str(v[1]), RequestID: str(v[2]), Deadline: i64(v[3]), EnqueuedAt: i64(v[4])})
	}
	return s, ws, nil
}

// alarm expires every lease that lapsed and sets the alarm for the
// earliest expiry left.
func (t *leases) alarm(ctx context.Context) error {
	now := t.st.Now().UnixMilli()
	rows, err := t.st.Query(`SELECT name FROM leases WHERE owner IS NOT NULL AND expires_at <= ?`, now)
	if err != nil {
		return err
	}
	for _, v := range rows.Values {
		if _, err := t.get(str(v[0])).expire(ctx, now); err != nil {
			return err
		}
	}
	rows, err = t.st.Query(`SELECT MIN(expires_at) FROM leases WHERE owner IS NOT NULL`)
	if err != nil {
		return err
	}
	if len(rows.Values) == 1 && rows.Values[0][0] != nil {
		return t.st.SetAlarm(time.UnixMilli(i64(rows.Values[0][0])))
	}
	return nil
}

// CancelArgs withdraws a waiting request (see Lock.Cancel).
type CancelArgs struct {
	Owner     string `json:"owner"`
	RequestID string `json:"request_id,omitempty"`
	Seq       int64  `json:"seq,omitempty"` // one waiter, as Inspect lists it
}

// CancelResult says what Cancel did.
type CancelResult struct {
	Canceled int  `json:"canceled"` // waiting requests removed
	Released bool `json:"released"` // a grant of the request was released
}

func (a CancelArgs) check() error {
	if err := checkID("owner", a.Owner, true); err != nil {
		return err
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return err
	}
	if a.RequestID == "" && a.Seq == 0 {
		return cairn.Errorf(cairn.Invalid, "request_id or seq is required")
	}
	if a.Seq < 0 {
		return cairn.Errorf(cairn.Invalid, "seq must not be negative")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
