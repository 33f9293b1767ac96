package cairn

import (
	"context"
	"time"
)

// State is an object's handle on its identity and storage. The runtime
// passes it to Class.New; the instance keeps it.
//
// A State may be used only by the goroutine handling the current event,
// while it holds the turn: from a handler, an alarm, a migration or New.
// Using it at any other time (from a goroutine of the instance's own, or
// from inside the function given to Release) is a bug; the runtime detects
// it when no other event holds the turn (the call returns Invalid), but
// cannot while another event does.
//
// All writes of a turn, KV and SQL alike, form one transaction (G4): they
// are committed together when the turn ends, and rolled back together if the
// handler returns an error or panics.
type State struct {
	o    *object
	inst *instance
	cur  *turn
}

// ID returns the object's ID.
func (st *State) ID() ID { return st.o.ref.ID }

// Name returns the object's name, or "" for an object with a unique ID (or
// addressed by an ID whose name the catalog does not know).
func (st *State) Name() string { return st.inst.name }

// Namespace returns the name of the object's namespace.
func (st *State) Namespace() string { return st.o.ref.Namespace }

// Runtime returns the runtime hosting the object, to reach other objects.
func (st *State) Runtime() *Runtime { return st.o.rt }

// Closing returns a channel closed when the runtime begins to close: a
// handler that runs long (a stream, inside Release) should end then, so
// that shutdown is not held up.
func (st *State) Closing() <-chan struct{} { return st.o.rt.closingCh }

// Now returns the runtime clock's time.
func (st *State) Now() time.Time { return st.o.rt.Now() }

// Bytes returns the size of the object's storage on disk as of a recent
// commit (what the catalog and usage report for it). It needs no turn.
func (st *State) Bytes() int64 { return st.o.bytes.Load() }

// check returns the turn if the caller may use storage now.
func (st *State) check() (*turn, error) {
	t := st.cur
	if t == nil || !t.holding || st.o.inst != st.inst {
		return nil, Errorf(Invalid, "storage used outside the object's turn")
	}
	if t.stale {
		return nil, errReset
	}
	return t, nil
}

func (st *State) checkKey(key string) error {
	if len(key) == 0 {
		return Errorf(Invalid, "key must not be empty")
	}
	if len(key) > st.o.rt.Limits.MaxKeyBytes {
		return Errorf(TooLarge, "key is %d bytes; the limit is %d", len(key), st.o.rt.Limits.MaxKeyBytes)
	}
	return nil
}

func (st *State) checkBatch(n int) error {
	if n > st.o.rt.Limits.MaxBatch {
		return Errorf(TooLarge, "batch of %d keys; the limit is %d", n, st.o.rt.Limits.MaxBatch)
	}
	return nil
}

// Get returns the value stored under key, and whether it exists.
func (st *State) Get(key string) ([]byte, bool, error) {
	m, err := st.GetMany([]string{key})
	if err != nil {
		return nil, false, err
	}
	v, ok := m[key]
	return v, ok, nil
}

// GetMany returns the values of the keys that exist (at most MaxBatch keys).
func (st *State) GetMany(keys []string) (map[string][]byte, error) {
	t, err := st.check()
	if err != nil {
		return nil, err
	}
	if err := st.checkBatch(len(keys)); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := st.checkKey(k); err != nil {
			return nil, err
		}
	}
	m, err := st.inst.store.Get(keys)
	t.rows.RowsRead += int64(len(m))
	return m, err
}

// Put stores value under key.
func (st *State) Put(key string, value []byte) error {
	return st.PutMany([]Entry{{Key: key, Value: value}})
}

// PutMany stores entries atomically (at most MaxBatch of them).
func (st *State) PutMany(entries []Entry) error {
	t, err := st.check()
	if err != nil {
		return err
	}
	if err := st.checkBatch(len(entries)); err != nil {
		return err
	}
	for _, e := range entries {
		if err := st.checkKey(e.Key); err != nil {
			return err
		}
		if len(e.Value) > st.o.rt.Limits.MaxValueBytes {
			return Errorf(TooLarge, "value of %d bytes; the limit is %d", len(e.Value), st.o.rt.Limits.MaxValueBytes)
		}
	}
	if err := st.inst.store.Put(entries); err != nil {
		return err
	}
	t.rows.RowsWritten += int64(len(entries))
	return nil
}

// Delete deletes key and reports whether it existed.
func (st *State) Delete(key string) (bool, error) {
	n, err := st.DeleteMany([]string{key})
	return n > 0, err
}

// DeleteMany deletes keys (at most MaxBatch) and returns how many existed.
func (st *State) DeleteMany(keys []string) (int, error) {
	t, err := st.check()
	if err != nil {
		return 0, err
	}
	if err := st.checkBatch(len(keys)); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := st.checkKey(k); err != nil {
			return 0, err
		}
	}
	n, err := st.inst.store.Delete(keys)
	t.rows.RowsWritten += int64(n)
	return n, err
}

// List returns entries in key order (byte order), or reverse order,
// selected by opts.
func (st *State) List(opts ListOptions) ([]Entry, error) {
	t, err := st.check()
	if err != nil {
		return nil, err
	}
	if opts.Limit < 0 {
		return nil, Errorf(Invalid, "limit must not be negative")
	}
	es, err := st.inst.store.List(opts)
	t.rows.RowsRead += int64(len(es))
	return es, err
}

// Exec runs user SQL (one or more statements) with bound arguments: nil,
// integers, floats, bool, string, []byte or time.Time (stored as Unix
// milliseconds). User SQL cannot touch the reserved `_cairn_` tables, attach
// databases, or run BEGIN, COMMIT, ROLLBACK or SAVEPOINT: use Transaction.
func (st *State) Exec(query string, args ...any) (Result, error) {
	t, err := st.check()
	if err != nil {
		return Result{}, err
	}
	if len(query) > st.o.rt.Limits.MaxSQLBytes {
		return Result{}, Errorf(TooLarge, "SQL text of %d bytes; the limit is %d", len(query), st.o.rt.Limits.MaxSQLBytes)
	}
	r, err := st.inst.store.Exec(query, args...)
	t.rows.RowsRead += r.RowsRead
	t.rows.RowsWritten += r.RowsWritten
	return r, err
}

// Query runs one statement of user SQL and returns all its rows.
func (st *State) Query(query string, args ...any) (*Rows, error) {
	t, err := st.check()
	if err != nil {
		return nil, err
	}
	if len(query) > st.o.rt.Limits.MaxSQLBytes {
		return nil, Errorf(TooLarge, "SQL text of %d bytes; the limit is %d", len(query), st.o.rt.Limits.MaxSQLBytes)
	}
	rows, err := st.inst.store.Query(query, args...)
	if rows != nil {
		t.rows.RowsRead += rows.RowsRead
		t.rows.RowsWritten += rows.RowsWritten
	}
	return rows, err
}

// Transaction runs fn in an explicit transaction nested in the turn's: if fn
// returns an error or panics, fn's writes are rolled back and the rest of
// the turn's stay. Transactions nest.
func (st *State) Transaction(fn func() error) (err error) {
	t, err := st.check()
	if err != nil {
		return err
	}
	if err := st.inst.store.BeginTx(); err != nil {
		return err
	}
	t.txDepth++
	keep := false
	defer func() {
		p := recover()
		if t.holding && !t.stale && t.txDepth > 0 {
			t.txDepth--
			if eerr := st.inst.store.EndTx(keep && p == nil); eerr != nil && err == nil {
				err = eerr
			}
		}
		if p != nil {
			panic(p)
		}
	}()
	err = fn()
	keep = err == nil
	return err
}

// Alarm returns the time the object's alarm is set for, if any.
func (st *State) Alarm() (time.Time, bool, error) {
	if _, err := st.check(); err != nil {
		return time.Time{}, false, err
	}
	a, ok, err := st.inst.store.Alarm()
	return a.At, ok, err
}

// SetAlarm sets the object's one alarm to fire at at (G7), replacing any
// other. A time in the past fires as soon as possible.
func (st *State) SetAlarm(at time.Time) error {
	if _, err := st.check(); err != nil {
		return err
	}
	if at.IsZero() {
		return Errorf(Invalid, "alarm time must be set")
	}
	if err := st.inst.store.SetAlarm(Alarm{At: at}); err != nil {
		return err
	}
	st.o.alarmTouched = true
	return nil
}

// DeleteAlarm removes the object's alarm.
func (st *State) DeleteAlarm() error {
	if _, err := st.check(); err != nil {
		return err
	}
	if err := st.inst.store.DeleteAlarm(); err != nil {
		return err
	}
	st.o.alarmTouched = true
	return nil
}

// DeleteAll deletes all of the object's storage (KV, user tables, alarm,
// migration record) in the current turn. When the turn ends the instance is
// discarded: the next event finds the object as if new, and runs its
// migrations again. An object left with no data at all has its files removed
// when it is evicted.
func (st *State) DeleteAll() error {
	t, err := st.check()
	if err != nil {
		return err
	}
	if t.txDepth > 0 {
		return Errorf(Invalid, "DeleteAll inside an explicit transaction")
	}
	if err := st.inst.store.DeleteAll(); err != nil {
		return err
	}
	st.o.alarmTouched = true
	t.reset = true
	return nil
}

// Release gives up the turn while fn runs, for slow external work such as an
// LLM call (G3). The turn's writes so far are committed and durable before fn
// starts, so fn may send output that depends on them. While fn runs, other
// events may be delivered; fn must not use the State. When fn returns the
// turn queues again for the object (even if the event's context ended, so
// that the handler can clean up) and Release returns fn's error. If the
// object was reset meanwhile, Release returns an Unavailable error and the
// rest of the handler must not touch storage.
//
// The turn is thus two transactions: what came before Release and what
// comes after.
func (st *State) Release(fn func(ctx context.Context) error) error {
	t, err := st.check()
	if err != nil {
		return err
	}
	return t.release(fn)
}
