package cairn

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Limits bound what one object may store and send (G9). Exceeding one gives a
// *Error with code TooLarge or Invalid and writes nothing.
type Limits struct {
	MaxKeyBytes    int   // default 2 KiB
	MaxValueBytes  int   // default 2 MiB
	MaxObjectBytes int64 // default 10 GB
	MaxBatch       int   // keys per batch get/put/delete; default 128
	MaxSQLBytes    int   // length of one SQL text; default 100 KB
}

// DefaultLimits are at least as generous as Cloudflare's SQLite-backed
// Durable Objects.
var DefaultLimits = Limits{
	MaxKeyBytes:    2 << 10,
	MaxValueBytes:  2 << 20,
	MaxObjectBytes: 10 << 30,
	MaxBatch:       128,
	MaxSQLBytes:    100 << 10,
}

// Runtime hosts objects: it activates them on demand, runs their turns one at
// a time, commits and gates their outputs, fires their alarms and evicts them
// when idle.
//
// Create one with NewRuntime, set its exported fields, Register classes, then
// Open. Fields must not change after Open.
type Runtime struct {
	// Durability is the level a commit reaches before its outputs are
	// released. Default Disk.
	Durability Durability
	// Committer makes commits durable; default LocalCommitter{Durability}.
	Committer Committer
	// IdleTimeout evicts an object that had no event for this long.
	// Default 60 s.
	IdleTimeout time.Duration
	// MaxActive caps objects in memory; the least recently used idle one is
	// evicted beyond it. Default 10,000.
	MaxActive int
	// MaxGroupTurns bounds how many turns share one commit. Default 256.
	MaxGroupTurns int
	// Limits are per-object limits.
	Limits Limits
	// AlarmRetries is how many times a failing alarm is retried;
	// AlarmBackoff is the first retry delay, doubled each time. Defaults 6
	// and 2 s.
	AlarmRetries int
	AlarmBackoff time.Duration
	// AlarmTimeout bounds one alarm delivery. Default 15 min.
	AlarmTimeout time.Duration
	// AlarmConcurrency bounds alarm deliveries in flight. Default 64.
	AlarmConcurrency int
	// UsageInterval is how often usage counters reach the catalog.
	// Default 1 s.
	UsageInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives operational events. Default slog.Default().
	Logger *slog.Logger
	// Hooks observe the runtime, for metrics.
	Hooks Hooks

	engine Engine

	mu         sync.Mutex
	namespaces map[string]*Namespace
	objects    map[ID]*object
	evicting   map[ID]chan struct{} // closed when the object's eviction is done
	lru        *list.List           // of *object, most recent at front
	opened     bool
	closing    bool

	sockets    socketTable
	fastCommit bool // committer is local at Process: no sync goroutine needed
	active     atomic.Int64
	metrics    runtimeCounters

	alarmPoke chan struct{}
	closingCh chan struct{} // closed when Close begins
	alarmMu   sync.Mutex
	alarmBusy map[ID]bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
	drain  sync.WaitGroup // events in progress
}

// NewRuntime returns a runtime storing objects in engine, with defaults set.
func NewRuntime(engine Engine) *Runtime {
	return &Runtime{
		Durability:       Disk,
		IdleTimeout:      60 * time.Second,
		MaxActive:        10000,
		MaxGroupTurns:    256,
		Limits:           DefaultLimits,
		AlarmRetries:     6,
		AlarmBackoff:     2 * time.Second,
		AlarmTimeout:     15 * time.Minute,
		AlarmConcurrency: 64,
		UsageInterval:    time.Second,
		Now:              time.Now,
		Logger:           slog.Default(),
		engine:           engine,
		namespaces:       make(map[string]*Namespace),
		objects:          make(map[ID]*object),
		lru:              list.New(),
		alarmPoke:        make(chan struct{}, 1),
		closingCh:        make(chan struct{}),
		alarmBusy:        make(map[ID]bool),
	}
}

// Engine returns the runtime's storage engine.
func (rt *Runtime) Engine() Engine { return rt.engine }

// Register declares namespace name with its class. Names are 1-128 bytes of
// ASCII letters, digits, '.', '_' and '-', starting with a letter or digit.
// Register before Open.
func (rt *Runtime) Register(name string, class Class) (*Namespace, error) {
	if err := validNamespace(name); err != nil {
		return nil, err
	}
	if class.New == nil {
		return nil, Errorf(Invalid, "class of namespace %q has no New", name)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.opened {
		return nil, Errorf(Invalid, "register %q after Open", name)
	}
	if _, ok := rt.namespaces[name]; ok {
		return nil, Errorf(Conflict, "namespace %q is already registered", name)
	}
	ns := &Namespace{rt: rt, name: name, class: class}
	rt.namespaces[name] = ns
	return ns, nil
}

// Namespace returns a registered namespace, or a NotFound error.
func (rt *Runtime) Namespace(name string) (*Namespace, error) {
	rt.mu.Lock()
	ns := rt.namespaces[name]
	rt.mu.Unlock()
	if ns == nil {
		if err := validNamespace(name); err != nil {
			return nil, err
		}
		return nil, Errorf(NotFound, "no namespace %q", name)
	}
	return ns, nil
}

// Namespaces returns the names of the registered namespaces.
func (rt *Runtime) Namespaces() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	names := make([]string, 0, len(rt.namespaces))
	for n := range rt.namespaces {
		names = append(names, n)
	}
	return names
}

func validNamespace(name string) error {
	if len(name) == 0 || len(name) > MaxNamespaceLen {
		return Errorf(Invalid, "namespace name must be 1 to %d bytes", MaxNamespaceLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return Errorf(Invalid, "namespace name must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// validName checks an object name: 1 to MaxNameLen bytes of valid UTF-8
// without NUL. Names are never used as paths, so '/' and ".." are fine.
func validName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return Errorf(Invalid, "object name must be 1 to %d bytes", MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return Errorf(Invalid, "object name must be valid UTF-8")
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return Errorf(Invalid, "object name must not contain NUL")
		}
	}
	return nil
}

// Open validates the configuration and starts the runtime's goroutines:
// eviction, usage flushing and alarm delivery.
func (rt *Runtime) Open() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.opened {
		return Errorf(Invalid, "runtime already open")
	}
	if rt.engine == nil {
		return Errorf(Invalid, "runtime has no engine")
	}
	if rt.Durability != Process && rt.Durability != Disk {
		return Errorf(Invalid, "unknown durability %d", rt.Durability)
	}
	if rt.Committer == nil {
		rt.Committer = LocalCommitter{Level: rt.Durability}
	}
	if lc, ok := rt.Committer.(LocalCommitter); ok && lc.Level == Process {
		rt.fastCommit = true
	}
	if rt.IdleTimeout <= 0 || rt.MaxActive <= 0 || rt.MaxGroupTurns <= 0 || rt.AlarmConcurrency <= 0 || rt.UsageInterval <= 0 {
		return Errorf(Invalid, "IdleTimeout, MaxActive, MaxGroupTurns, AlarmConcurrency and UsageInterval must be positive")
	}
	l := rt.Limits
	if l.MaxKeyBytes <= 0 || l.MaxValueBytes <= 0 || l.MaxObjectBytes <= 0 || l.MaxBatch <= 0 || l.MaxSQLBytes <= 0 {
		return Errorf(Invalid, "all limits must be positive")
	}
	if rt.Now == nil {
		rt.Now = time.Now
	}
	if rt.Logger == nil {
		rt.Logger = slog.Default()
	}
	rt.opened = true
	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	rt.wg.Add(3)
	go rt.evictLoop(ctx)
	go rt.usageLoop(ctx)
	go rt.alarmLoop(ctx)
	return nil
}

// Close stops accepting events, waits for events in progress to finish (or
// ctx to end), commits, and closes every object and the engine.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.mu.Lock()
	if !rt.opened || rt.closing {
		rt.mu.Unlock()
		return nil
	}
	rt.closing = true
	close(rt.closingCh)
	rt.mu.Unlock()
	var socks sync.WaitGroup
	for _, ws := range rt.sockets.all() {
		socks.Add(1)
		go func() {
			defer socks.Done()
			ws.close(1001, "server shutting down")
		}()
	}
	socks.Wait()

	drained := make(chan struct{})
	go func() { rt.drain.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("close: events still running: %w", ctx.Err())
	}
	rt.cancel()
	rt.wg.Wait()

	rt.mu.Lock()
	objs := make([]*object, 0, len(rt.objects))
	for _, o := range rt.objects {
		if o.refs.Load() == 0 {
			objs = append(objs, o)
			rt.unlinkLocked(o)
		}
	}
	left := len(rt.objects)
	rt.mu.Unlock()
	for _, o := range objs {
		o.close()
	}
	rt.flushUsage(objs)
	if left > 0 {
		// Events still hold objects: their stores stay open, and so must
		// the engine.
		return err
	}
	return errors.Join(err, rt.engine.Close())
}

// Namespace is a registered class of objects.
type Namespace struct {
	rt    *Runtime
	name  string
	class Class

	methodsOnce sync.Once
}

// Name returns the namespace's name.
func (ns *Namespace) Name() string { return ns.name }

// IDFromName returns the deterministic ID of the object called name (G1).
func (ns *Namespace) IDFromName(name string) (ID, error) {
	if err := validName(name); err != nil {
		return ID{}, err
	}
	return nameID(ns.name, name), nil
}

// NewUniqueID returns a new random ID.
func (ns *Namespace) NewUniqueID() ID { return uniqueID(ns.name) }

// ParseID parses an ID string of this namespace. It rejects malformed IDs and
// IDs of other namespaces with an Invalid error.
func (ns *Namespace) ParseID(s string) (ID, error) { return parseID(ns.name, s) }

// Get returns a stub for the object with the given ID.
func (ns *Namespace) Get(id ID) *Stub {
	return &Stub{ref: ObjectRef{Namespace: ns.name, ID: id}, ns: ns}
}

// GetByName returns a stub for the object called name.
func (ns *Namespace) GetByName(name string) (*Stub, error) {
	id, err := ns.IDFromName(name)
	if err != nil {
		return nil, err
	}
	return &Stub{ref: ObjectRef{Namespace: ns.name, ID: id, Name: name}, ns: ns}, nil
}

// Objects lists the namespace's objects from the catalog, without
// activating them. See Engine.Objects.
func (ns *Namespace) Objects(ctx context.Context, after string, limit int) ([]ObjectInfo, error) {
	return ns.rt.engine.Objects(ctx, ns.name, after, limit)
}

// get returns the live object for ref, creating its in-memory shell if
// needed, with a reference held. The caller must call o.done().
func (rt *Runtime) get(ns *Namespace, ref ObjectRef) (*object, error) {
	rt.mu.Lock()
	if rt.closing || !rt.opened {
		rt.mu.Unlock()
		if !rt.opened {
			return nil, Errorf(Unavailable, "runtime is not open")
		}
		return nil, errClosed
	}
	for {
		// An object being evicted is closed before it can live again: two
		// instances must never share the files (G2).
		ch, ok := rt.evicting[ref.ID]
		if !ok {
			break
		}
		rt.mu.Unlock()
		<-ch
		rt.mu.Lock()
		if rt.closing {
			rt.mu.Unlock()
			return nil, errClosed
		}
	}
	o := rt.objects[ref.ID]
	if o == nil {
		o = &object{rt: rt, ns: ns, ref: ref}
		rt.objects[ref.ID] = o
		o.lru = rt.lru.PushFront(o)
		rt.active.Add(1)
	} else {
		rt.lru.MoveToFront(o.lru)
	}
	o.refs.Add(1)
	rt.drain.Add(1)
	over := len(rt.objects) > rt.MaxActive
	rt.mu.Unlock()
	if over {
		rt.evictLRU()
	}
	return o, nil
}

// unlinkLocked removes o from the index. rt.mu is held and o has no refs.
func (rt *Runtime) unlinkLocked(o *object) {
	delete(rt.objects, o.ref.ID)
	rt.lru.Remove(o.lru)
	rt.active.Add(-1)
}

// evictableLocked reports whether o may be evicted now: no event holds it
// and no commit of it is still becoming durable (a caller that gave up
// waiting dropped its reference, not its commit). rt.mu is held.
func (rt *Runtime) evictableLocked(o *object) bool {
	return o.refs.Load() == 0 && !o.syncBusy()
}

// unlinkForEvictLocked unlinks o and marks it as being evicted until
// rt.evicted(o). rt.mu is held.
func (rt *Runtime) unlinkForEvictLocked(o *object) {
	rt.unlinkLocked(o)
	if rt.evicting == nil {
		rt.evicting = make(map[ID]chan struct{})
	}
	rt.evicting[o.ref.ID] = make(chan struct{})
}

// evictLRU evicts least recently used idle objects until under MaxActive.
func (rt *Runtime) evictLRU() {
	var victims []*object
	rt.mu.Lock()
	for e := rt.lru.Back(); e != nil && len(rt.objects) > rt.MaxActive; {
		o := e.Value.(*object)
		prev := e.Prev()
		if rt.evictableLocked(o) {
			rt.unlinkForEvictLocked(o)
			victims = append(victims, o)
		}
		e = prev
	}
	rt.mu.Unlock()
	rt.evict(victims)
}

func (rt *Runtime) evict(victims []*object) {
	if len(victims) == 0 {
		return
	}
	for _, o := range victims {
		o.close()
		rt.metrics.evictions.Add(1)
		rt.mu.Lock()
		close(rt.evicting[o.ref.ID])
		delete(rt.evicting, o.ref.ID)
		rt.mu.Unlock()
	}
	rt.flushUsage(victims)
}

func (rt *Runtime) evictLoop(ctx context.Context) {
	defer rt.wg.Done()
	tick := rt.IdleTimeout / 4
	if tick > 5*time.Second {
		tick = 5 * time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rt.EvictIdle()
	}
}

// EvictIdle evicts every object idle for longer than IdleTimeout. The runtime
// calls it periodically; tests call it after moving the clock.
func (rt *Runtime) EvictIdle() int {
	cutoff := rt.Now().Add(-rt.IdleTimeout).UnixNano()
	var victims []*object
	rt.mu.Lock()
	for e := rt.lru.Back(); e != nil; {
		o := e.Value.(*object)
		prev := e.Prev()
		if o.lastUsed.Load() <= cutoff && rt.evictableLocked(o) {
			rt.unlinkForEvictLocked(o)
			victims = append(victims, o)
		}
		e = prev
	}
	rt.mu.Unlock()
	rt.evict(victims)
	return len(victims)
}

// Sockets returns the number of open WebSockets.
func (rt *Runtime) Sockets() int { return rt.sockets.count() }

// Active returns the number of objects in memory.
func (rt *Runtime) Active() int { return int(rt.active.Load()) }

// IsActive reports whether the object is in memory.
func (rt *Runtime) IsActive(id ID) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.objects[id] != nil
}

func (rt *Runtime) usageLoop(ctx context.Context) {
	defer rt.wg.Done()
	t := time.NewTicker(rt.UsageInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rt.mu.Lock()
		objs := make([]*object, 0, len(rt.objects))
		for _, o := range rt.objects {
			if o.usageDirty.Load() {
				objs = append(objs, o)
			}
		}
		rt.mu.Unlock()
		rt.flushUsage(objs)
	}
}

// FlushUsage writes pending usage counters of active objects to the catalog.
func (rt *Runtime) FlushUsage() error {
	rt.mu.Lock()
	objs := make([]*object, 0, len(rt.objects))
	for _, o := range rt.objects {
		objs = append(objs, o)
	}
	rt.mu.Unlock()
	return rt.flushUsage(objs)
}

func (rt *Runtime) flushUsage(objs []*object) error {
	var us []Usage
	for _, o := range objs {
		if !o.usageDirty.Swap(false) {
			continue
		}
		u := Usage{Ref: o.ref, Bytes: o.bytes.Load(), LastActive: time.Unix(0, o.lastUsed.Load())}
		u.Delta.Requests = o.requests.Swap(0)
		u.Delta.RowsRead = o.rowsRead.Swap(0)
		u.Delta.RowsWritten = o.rowsWritten.Swap(0)
		us = append(us, u)
	}
	if len(us) == 0 {
		return nil
	}
	if err := rt.engine.RecordUsage(us); err != nil {
		rt.Logger.Error("record usage", "err", err)
		return err
	}
	return nil
}

// Hooks are called by the runtime as things happen. They must be fast and
// must not call back into the runtime. Nil hooks are skipped.
type Hooks struct {
	// Turn is called when a turn's handler finished, before its output
	// gate opens: d is the time from taking the turn to its end.
	Turn func(namespace string, d time.Duration, err error)
	// Commit is called when a group's commit is durable: d is the time
	// from the local commit's start to durability, turns the group's size.
	Commit func(turns int, d time.Duration)
}

func (rt *Runtime) observeCommit(g *group, now time.Time) {
	d := now.Sub(g.start)
	rt.metrics.commitNanos.Add(int64(d))
	if h := rt.Hooks.Commit; h != nil {
		h(g.turns, d)
	}
}

// Stats are figures of the runtime, for metrics.
type Stats struct {
	Active        int64
	Turns         int64
	Commits       int64
	CommitTurns   int64 // turns covered by those commits
	CommitNanos   int64 // total time from local commit to durable
	Evictions     int64
	AlarmsFired   int64
	AlarmsFailed  int64
	Activations   int64
	Resets        int64
	TurnNanos     int64
	TurnsFailed   int64
	TurnsReleased int64
}

type runtimeCounters struct {
	turns, turnsFailed, turnNanos, released atomic.Int64
	commits, commitTurns, commitNanos       atomic.Int64
	evictions, activations, resets          atomic.Int64
	alarmsFired, alarmsFailed               atomic.Int64
}

// Stats returns the runtime's counters.
func (rt *Runtime) Stats() Stats {
	m := &rt.metrics
	return Stats{
		Active: rt.active.Load(), Turns: m.turns.Load(), TurnsFailed: m.turnsFailed.Load(),
		TurnNanos: m.turnNanos.Load(), TurnsReleased: m.released.Load(),
		Commits: m.commits.Load(), CommitTurns: m.commitTurns.Load(), CommitNanos: m.commitNanos.Load(),
		Evictions: m.evictions.Load(), Activations: m.activations.Load(), Resets: m.resets.Load(),
		AlarmsFired: m.alarmsFired.Load(), AlarmsFailed: m.alarmsFailed.Load(),
	}
}
