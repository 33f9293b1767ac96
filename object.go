package cairn

import (
	"container/list"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// object is the in-memory shell of one object. Its instance (store and user
// value) is created by the first turn and dropped on eviction or reset.
//
// The turn is a FIFO token (G3): a goroutine runs an event's handler once
// it holds the token. Everything under "owned by the token holder" is
// touched only by the goroutine holding it; the token's hand-over through
// o.mu gives the happens-before edges.
//
// Lock order: Runtime.mu, then object.mu, then object.syncMu. None is held
// across I/O.
type object struct {
	rt  *Runtime
	ns  *Namespace
	ref ObjectRef

	refs     atomic.Int32  // events in progress; incremented only under rt.mu
	lastUsed atomic.Int64  // unix nanoseconds of the last event's end
	lru      *list.Element // guarded by rt.mu

	usageDirty                      atomic.Bool
	requests, rowsRead, rowsWritten atomic.Int64
	bytes                           atomic.Int64

	mu      sync.Mutex // guards held and waiters
	held    bool
	waiters []*waiter

	// Owned by the token holder.
	inst         *instance
	gen          uint64 // incremented each time the instance is dropped
	open         *group // group collecting turns, not yet committed
	last         *group // newest group, open or committed; written under mu
	groupTurns   int
	alarmTouched bool      // a turn of the open group wrote the alarm
	hintAt       time.Time // what the catalog's alarm index holds for us

	// The sync pipeline: committed groups waiting to be durable.
	syncMu   sync.Mutex
	syncQ    []syncItem
	syncing  bool
	syncIdle chan struct{} // closed when the syncer stops; nil if none ran
	syncErr  error         // sticky: the store must be dropped
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

// instance is an activated object: its open store and user value.
type instance struct {
	store Store
	value any
	st    *State
	name  string // the object's name, if known
}

// group is a set of turns whose writes share one commit. Their outputs are
// released together when it is durable (G5).
type group struct {
	done  chan struct{}
	err   error
	turns int
	start time.Time
}

func newGroup() *group { return &group{done: make(chan struct{})} }

// completedGroup is the group a turn waits on when nothing was ever written.
var completedGroup = func() *group { g := newGroup(); close(g.done); return g }()

func (g *group) finish(err error) {
	g.err = err
	close(g.done)
}

// wait blocks until g is durable or ctx ends.
func (g *group) wait(ctx context.Context) error {
	select {
	case <-g.done:
		return g.err
	default:
	}
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type syncItem struct {
	g    *group
	info CommitInfo
	ok   bool // false: nothing to sync, complete in order
}

// acquire takes the turn token, waiting in FIFO order.
func (o *object) acquire(ctx context.Context) error {
	o.mu.Lock()
	if !o.held {
		o.held = true
		o.mu.Unlock()
		return nil
	}
	w := &waiter{ch: make(chan struct{})}
	o.waiters = append(o.waiters, w)
	o.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
	}
	o.mu.Lock()
	if w.granted {
		o.mu.Unlock()
		o.unlock() // we were handed the token as we gave up: pass it on
		return ctx.Err()
	}
	for i, x := range o.waiters {
		if x == w {
			copy(o.waiters[i:], o.waiters[i+1:])
			o.waiters[len(o.waiters)-1] = nil
			o.waiters = o.waiters[:len(o.waiters)-1]
			break
		}
	}
	o.mu.Unlock()
	return ctx.Err()
}

// unlock gives up the token. If nobody waits (or the group is full) it
// first commits the open group, so that no output stays parked with nobody
// left to commit it.
func (o *object) unlock() {
	yielded := false
	for {
		o.mu.Lock()
		if o.open != nil && len(o.waiters) == 0 && !yielded && o.groupTurns < o.rt.MaxGroupTurns && o.refs.Load() > 1 {
			// About to commit a group alone. Callers that are on their way
			// (their goroutines runnable but not yet queued) would each
			// need a commit of their own: let them queue first, once.
			// On 2 cores this takes groups from ~4 turns to ~50. Only if
			// there are such callers, events that entered the object
			// besides this one: a yield waits behind every runnable
			// goroutine of the process, which a turn alone on its object
			// (a lock among many) would pay for nothing (on 1,000 locks at
			// process durability: 9,000-9,600 round trips/s with the
			// yield, 11,000-13,000 without).
			o.mu.Unlock()
			yielded = true
			runtime.Gosched()
			continue
		}
		if o.open == nil || (len(o.waiters) > 0 && o.groupTurns < o.rt.MaxGroupTurns) {
			if len(o.waiters) > 0 {
				w := o.waiters[0]
				copy(o.waiters, o.waiters[1:])
				o.waiters[len(o.waiters)-1] = nil
				o.waiters = o.waiters[:len(o.waiters)-1]
				w.granted = true
				close(w.ch)
			} else {
				o.held = false
			}
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		o.commit()
	}
}

// joinGroup returns the group the current turn's output waits on: the open
// group if the store has uncommitted writes, else the newest group.
func (o *object) joinGroup() *group {
	if o.inst != nil && o.inst.store.Dirty() {
		if o.open == nil {
			o.open = newGroup()
			o.mu.Lock()
			o.last = o.open
			o.mu.Unlock()
		}
		o.groupTurns++
		o.open.turns++
		return o.open
	}
	if o.last == nil {
		return completedGroup
	}
	return o.last
}

// commit commits the open group locally and hands it to the sync pipeline.
// Token holder only.
func (o *object) commit() {
	g := o.open
	if g == nil {
		return
	}
	o.open = nil
	o.groupTurns = 0
	inst := o.inst
	if inst == nil {
		g.finish(errReset)
		return
	}
	g.start = time.Now()
	if err := o.syncAlarmHintBefore(); err != nil {
		o.rt.Logger.Error("commit failed", "object", o.ref.ID.String(), "err", err)
		g.finish(errCommit)
		o.reset(true)
		return
	}
	info, ok, err := inst.store.Commit()
	if err != nil {
		if ErrorCode(err) == Internal {
			o.rt.Logger.Error("commit failed", "object", o.ref.ID.String(), "err", err)
			err = errCommit
		}
		g.finish(err)
		o.reset(true)
		return
	}
	o.syncAlarmHintAfter()
	o.bytes.Store(inst.store.Bytes())
	o.rt.metrics.commits.Add(1)
	o.rt.metrics.commitTurns.Add(int64(g.turns))
	o.enqueueSync(syncItem{g: g, info: info, ok: ok})
}

func (o *object) enqueueSync(it syncItem) {
	o.syncMu.Lock()
	if o.syncErr != nil {
		err := o.syncErr
		o.syncMu.Unlock()
		it.g.finish(err)
		return
	}
	if o.rt.fastCommit && !o.syncing && len(o.syncQ) == 0 {
		o.syncMu.Unlock()
		o.rt.observeCommit(it.g, time.Now())
		it.g.finish(nil)
		return
	}
	o.syncQ = append(o.syncQ, it)
	if !o.syncing {
		o.syncing = true
		o.syncIdle = make(chan struct{})
		go o.syncLoop(o.inst.store)
	}
	o.syncMu.Unlock()
}

// syncLoop makes queued commits durable, oldest first, one Committer call
// covering every commit queued so far (group commit across groups).
func (o *object) syncLoop(s Store) {
	for {
		o.syncMu.Lock()
		batch := o.syncQ
		o.syncQ = nil
		if len(batch) == 0 {
			o.syncing = false
			close(o.syncIdle)
			o.syncMu.Unlock()
			return
		}
		err := o.syncErr
		o.syncMu.Unlock()

		var last CommitInfo
		var any bool
		for _, it := range batch {
			if it.ok {
				last, any = it.info, true
			}
		}
		if err == nil && any {
			if derr := o.rt.Committer.Durable(context.Background(), o.ref, s, last); derr != nil {
				o.rt.Logger.Error("commit not durable", "object", o.ref.ID.String(), "err", derr)
				err = errCommit
				o.syncMu.Lock()
				o.syncErr = err
				o.syncMu.Unlock()
			}
		}
		now := time.Now()
		for _, it := range batch {
			o.rt.observeCommit(it.g, now)
			it.g.finish(err)
		}
	}
}

// syncBusy reports whether commits wait to be durable.
func (o *object) syncBusy() bool {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	return o.syncing
}

// waitSync waits until the sync pipeline is idle.
func (o *object) waitSync() {
	o.syncMu.Lock()
	ch := o.syncIdle
	o.syncMu.Unlock()
	if ch != nil {
		<-ch
	}
}

// reset drops the instance; the next event activates a fresh one from
// storage (G5). Token holder only. The open group, if any, fails.
func (o *object) reset(failure bool) {
	if o.open != nil {
		o.open.finish(errReset)
		o.open = nil
		o.groupTurns = 0
	}
	if o.inst != nil {
		o.waitSync()
		if err := o.inst.store.Close(); err != nil {
			o.rt.Logger.Error("close store", "object", o.ref.ID.String(), "err", err)
		}
		o.inst.st.cur = nil
		o.inst = nil
	}
	o.syncMu.Lock()
	o.syncErr = nil
	o.syncMu.Unlock()
	o.mu.Lock()
	o.last = nil // every earlier group is finished: waitSync above
	o.mu.Unlock()
	o.gen++
	o.alarmTouched = false
	o.hintAt = time.Time{}
	if failure {
		o.rt.metrics.resets.Add(1)
	}
}

// close closes an evicted object. Nobody holds a reference.
func (o *object) close() {
	o.waitSync()
	if o.inst != nil {
		if err := o.inst.store.Close(); err != nil {
			o.rt.Logger.Error("close store", "object", o.ref.ID.String(), "err", err)
		}
		o.inst = nil
	}
}

// done drops a reference taken by Runtime.get.
func (o *object) done() {
	o.lastUsed.Store(o.rt.Now().UnixNano())
	o.usageDirty.Store(true)
	o.refs.Add(-1)
	o.rt.drain.Done()
}

// syncAlarmHintBefore makes sure, before a commit that sets or advances the
// alarm, that the catalog's index points at this object early enough.
func (o *object) syncAlarmHintBefore() error {
	if !o.alarmTouched {
		return nil
	}
	a, ok, err := o.inst.store.Alarm()
	if err != nil {
		return err
	}
	if ok && (o.hintAt.IsZero() || a.At.Before(o.hintAt)) {
		if err := o.rt.engine.HintAlarm(o.ref, a.At); err != nil {
			return err
		}
		o.hintAt = a.At
		o.rt.pokeAlarms()
	}
	return nil
}

// syncAlarmHintAfter moves the hint later or clears it once the commit that
// did so is in.
//
// A hint that is still in the future stays where it is when the alarm
// moves later: an early hint costs at most one look by the alarm loop
// (which then moves it, deliverAlarm), while moving it here would write the
// catalog on every commit that pushes an alarm out, as a lease's acquire
// and renew do. A deleted alarm's hint is cleared, as is a hint that is
// due: the loop would look at once.
func (o *object) syncAlarmHintAfter() {
	if !o.alarmTouched {
		return
	}
	o.alarmTouched = false
	a, ok, err := o.inst.store.Alarm()
	if err != nil {
		return // the hint stays early: a spurious check fixes it
	}
	var at time.Time
	if ok {
		at = a.At
	}
	if at.Equal(o.hintAt) {
		return
	}
	if ok && !o.hintAt.IsZero() && o.hintAt.Before(at) && o.hintAt.After(o.rt.Now()) {
		return
	}
	if err := o.rt.engine.ClearAlarm(o.ref.ID, at); err != nil {
		o.rt.Logger.Warn("alarm index", "object", o.ref.ID.String(), "err", err)
		return
	}
	o.hintAt = at
}

// turn is one event being handled.
type turn struct {
	o       *object
	parent  *turn // the turn that made this call, if an object called us
	ctx     context.Context
	gen     uint64
	holding bool // holds the token
	stale   bool // the instance was dropped while the turn was released
	txDepth int
	reset   bool // drop the instance after this turn
	failed  bool // ... because it failed (panic, storage error), not DeleteAll
	rows    Counters
	outbox  []func()    // outputs held by the gate until the turn is durable
	accept  *acceptance // a WebSocket accepted by this turn
}

// flushOutbox releases the outputs held for the turn.
func (t *turn) flushOutbox() {
	out := t.outbox
	t.outbox = nil
	for _, f := range out {
		f()
	}
}

// activate creates the instance: opens the store, runs migrations and the
// class constructor, inside the current turn.
func (o *object) activate(t *turn) (err error) {
	store, err := o.rt.engine.OpenStore(t.ctx, o.ref, StoreOptions{
		MaxBytes:      o.rt.Limits.MaxObjectBytes,
		MaxSQLLen:     o.rt.Limits.MaxSQLBytes,
		MaxValueBytes: o.rt.Limits.MaxValueBytes,
	})
	if err != nil {
		return fmt.Errorf("activate %s: %w", o.ref.ID, err)
	}
	inst := &instance{store: store, name: o.ref.Name}
	if inst.name == "" && !o.ref.ID.Unique() {
		// Addressed by ID: the catalog knows the name, if it was stored.
		if info, err := o.rt.engine.Object(t.ctx, o.ref.Namespace, o.ref.ID); err == nil {
			inst.name = info.Name
		}
	}
	inst.st = &State{o: o, inst: inst, cur: t}
	o.inst = inst
	store.BeginTurn()
	fail := func(err error) error {
		store.EndTurn(false)
		store.Close()
		o.inst = nil
		return fmt.Errorf("activate %s: %w", o.ref.ID, err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fail(panicError(p))
		}
	}()
	if ms := o.ns.class.Migrations; len(ms) > 0 {
		v, err := store.SchemaVersion()
		if err != nil {
			return fail(err)
		}
		if v > len(ms) {
			return fail(Errorf(Internal, "object schema version %d is newer than the class's %d migrations", v, len(ms)))
		}
		for i := v; i < len(ms); i++ {
			m := ms[i]
			if m.SQL != "" {
				if _, err := inst.st.Exec(m.SQL); err != nil {
					return fail(fmt.Errorf("migration %d: %w", i+1, err))
				}
			}
			if m.Func != nil {
				if err := m.Func(t.ctx, inst.st); err != nil {
					return fail(fmt.Errorf("migration %d: %w", i+1, err))
				}
			}
		}
		if v < len(ms) {
			if err := store.SetSchemaVersion(len(ms)); err != nil {
				return fail(err)
			}
		}
	}
	value, err := o.ns.class.New(inst.st)
	if err != nil {
		return fail(err)
	}
	if value == nil {
		return fail(Errorf(Internal, "class of namespace %q: New returned nil", o.ns.name))
	}
	inst.value = value
	if err := store.EndTurn(true); err != nil {
		store.Close()
		o.inst = nil
		return fmt.Errorf("activate %s: %w", o.ref.ID, err)
	}
	// Heal the alarm index: the object's own alarm is the truth.
	if a, ok, err := store.Alarm(); err == nil && ok {
		if err := o.rt.engine.HintAlarm(o.ref, a.At); err == nil {
			o.hintAt = a.At
			o.rt.pokeAlarms()
		}
	}
	o.bytes.Store(store.Bytes())
	o.rt.metrics.activations.Add(1)
	return nil
}

// panicError turns a recovered panic into an error for the caller; the stack
// goes to the log, not to the caller.
type panicErr struct {
	val   any
	stack []byte
}

func (p *panicErr) Error() string { return fmt.Sprintf("handler panicked: %v", p.val) }

func panicError(p any) error { return &panicErr{val: p, stack: debug.Stack()} }

// run delivers one event: it takes the turn, activates the instance if
// needed, calls fn inside a savepoint, ends the turn and waits for the
// output gate. fn's error rolls back the turn's writes.
func (o *object) run(ctx context.Context, fn func(t *turn, inst *instance) error) (err error) {
	if err := o.acquire(ctx); err != nil {
		return err
	}
	start := time.Now()
	o.requests.Add(1)
	t := &turn{o: o, holding: true}
	t.parent, _ = ctx.Value(turnKey{}).(*turn)
	t.ctx = context.WithValue(ctx, turnKey{}, t)
	o.syncMu.Lock()
	broken := o.syncErr != nil
	o.syncMu.Unlock()
	if broken {
		o.reset(true)
	}
	if o.inst == nil {
		if err := o.activate(t); err != nil {
			o.rt.Logger.Error("activate", "namespace", o.ref.Namespace, "object", o.ref.ID.String(), "err", err)
			o.unlock()
			o.rt.metrics.turnsFailed.Add(1)
			return err
		}
	}
	t.gen = o.gen
	inst := o.inst
	inst.st.cur = t
	inst.store.BeginTurn()

	herr := callHandler(func() error { return fn(t, inst) })
	if pe, ok := herr.(*panicErr); ok {
		o.rt.Logger.Error("handler panicked; object reset", "namespace", o.ref.Namespace, "object", o.ref.ID.String(), "panic", fmt.Sprint(pe.val), "stack", string(pe.stack))
		t.reset, t.failed = true, true
	}
	var g *group
	if t.holding {
		if !t.stale {
			for t.txDepth > 0 { // a panic inside Transaction left it open
				inst.store.EndTx(false)
				t.txDepth--
			}
			if eerr := inst.store.EndTurn(herr == nil || isKept(herr)); eerr != nil {
				if herr == nil {
					herr = eerr
				}
				t.reset, t.failed = true, true
			}
			inst.st.cur = nil
		}
		g = o.joinGroup()
		if t.reset && o.gen == t.gen {
			o.commit()
			o.reset(t.failed)
		}
		o.unlock()
	} else {
		g = o.lastGroup()
	}
	o.addRows(t.rows)
	d := time.Since(start)
	o.rt.metrics.turns.Add(1)
	o.rt.metrics.turnNanos.Add(int64(d))
	if h := o.rt.Hooks.Turn; h != nil {
		h(o.ref.Namespace, d, herr)
	}
	gerr := g.wait(ctx)
	if herr != nil {
		o.rt.metrics.turnsFailed.Add(1)
		return herr // its outputs are dropped with its writes
	}
	if gerr == nil {
		t.flushOutbox()
	}
	return gerr
}

// lastGroup reads o.last without holding the token.
func (o *object) lastGroup() *group {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		return completedGroup
	}
	return o.last
}

func (o *object) addRows(c Counters) {
	if c.RowsRead != 0 {
		o.rowsRead.Add(c.RowsRead)
	}
	if c.RowsWritten != 0 {
		o.rowsWritten.Add(c.RowsWritten)
	}
}

func callHandler(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p)
		}
	}()
	return fn()
}

// turnKey marks a context as belonging to a turn (its value is the *turn),
// so that a call to another object made inside a turn first opens the
// output gate.
type turnKey struct{}

// commitPoint makes the turn's writes so far durable while keeping the
// token: outputs sent after it may depend on them. Used by Flush and by calls
// to other objects.
func (t *turn) commitPoint() error {
	o := t.o
	if !t.holding || t.stale {
		return nil
	}
	if t.txDepth > 0 {
		return Errorf(Invalid, "output inside an explicit transaction")
	}
	inst := o.inst
	if err := inst.store.EndTurn(true); err != nil {
		return err
	}
	g := o.joinGroup()
	o.commit()
	err := g.wait(t.ctx)
	if o.inst != inst || o.gen != t.gen {
		t.stale = true
		return errReset
	}
	if err == nil {
		t.flushOutbox()
	}
	inst.store.BeginTurn()
	return err
}

// release gives up the token around fn (G3): the turn's writes so far are
// committed and durable first; fn runs while other events may run; then the
// turn queues again for the token.
func (t *turn) release(fn func(ctx context.Context) error) error {
	o := t.o
	if !t.holding {
		return Errorf(Invalid, "turn is already released")
	}
	if t.stale {
		return errReset
	}
	if t.txDepth > 0 {
		return Errorf(Invalid, "cannot release the turn inside an explicit transaction")
	}
	inst := o.inst
	if err := inst.store.EndTurn(true); err != nil {
		return err
	}
	inst.st.cur = nil
	g := o.joinGroup()
	o.commit()
	t.holding = false
	o.unlock()
	o.rt.metrics.released.Add(1)

	err := g.wait(t.ctx)
	if err == nil {
		t.flushOutbox()
		err = callHandler(func() error { return fn(t.ctx) })
	}
	// Queue for the turn even if the caller gave up: the handler gets its
	// turn back to clean up, and knows it holds it.
	o.acquire(context.WithoutCancel(t.ctx))
	t.holding = true
	if o.inst != inst || o.gen != t.gen {
		t.stale = true
		if err == nil {
			err = errReset
		}
		return err
	}
	inst.st.cur = t
	inst.store.BeginTurn()
	return err
}
