package coord

import (
	"context"
	"hash/fnv"
	"net/http"
	"strconv"

	"github.com/cairn-dev/cairn"
)

// LockShards is how many objects of the locks namespace hold the lock
// table. A lock's shard is fixed by its name (LockShard), so this number
// is part of the storage format: changing it would move locks to shards
// where their fencing tokens start again.
const LockShards = 1

// LockShard returns the name of the object of the locks namespace that
// holds the lock named name: "shard-N", where N is the 32-bit FNV-1a hash
// of the name's bytes modulo LockShards. Clients that call the shards'
// RPC methods themselves (over GET /v1/rpc) address the lock this way.
func LockShard(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return "shard-" + strconv.FormatUint(uint64(h.Sum32()%LockShards), 10)
}

// LockTableClass is the locks namespace: the lock table, locks by name
// held LockShards to an object, each lock a row of its shard's database.
// Each lock behaves as a Lock object does (the same lease, tokens, FIFO
// waiters, expiry by alarm and retries); what differs is that the locks
// of a shard share its turns and its commits. 1,000 locks cost 8 objects
// instead of 1,000, and the commits of concurrent requests to a shard are
// made durable together. A Lock object of its own is for a lock that
// should not wait behind others' turns. See docs/coordination.md.
//
// HTTP (Locks.ServeHTTP, mounted by `cairn serve`):
//
//	POST /v1/locks/{name}/acquire  AcquireArgs  -> AcquireResult
//	POST /v1/locks/{name}/renew    RenewArgs    -> AcquireResult
//	POST /v1/locks/{name}/release  ReleaseArgs  -> ReleaseResult
//	POST /v1/locks/{name}/cancel   CancelArgs   -> CancelResult
//	GET  /v1/locks/{name}          LockInfo
//
// RPC, on object LockShard(name): Acquire (TableAcquireArgs), Renew
// (TableRenewArgs), Release (TableReleaseArgs), Cancel (TableCancelArgs),
// Inspect (TableInspectArgs). A shard refuses a lock that is not its own.
var LockTableClass = cairn.Class{
	New: func(st *cairn.State) (any, error) {
		t, err := newLeases(st)
		if err != nil {
			return nil, err
		}
		return &LockTable{t: t, st: st}, nil
	},
	Migrations: leaseMigrations,
}

// LockTable is an instance of the locks namespace: one shard.
type LockTable struct {
	t  *leases
	st *cairn.State
}

// TableAcquireArgs are AcquireArgs for the lock named Name.
type TableAcquireArgs struct {
	Name string `json:"name"`
	AcquireArgs
}

// TableRenewArgs are RenewArgs for the lock named Name.
type TableRenewArgs struct {
	Name string `json:"name"`
	RenewArgs
}

// TableReleaseArgs are ReleaseArgs for the lock named Name.
type TableReleaseArgs struct {
	Name string `json:"name"`
	ReleaseArgs
}

// TableCancelArgs are CancelArgs for the lock named Name.
type TableCancelArgs struct {
	Name string `json:"name"`
	CancelArgs
}

// TableInspectArgs name the lock to inspect.
type TableInspectArgs struct {
	Name string `json:"name"`
}

// lease returns the lease of the lock named name, if it is this shard's.
func (x *LockTable) lease(name string) (*lease, error) {
	if err := checkID("name", name, true); err != nil {
		return nil, err
	}
	if want, self := LockShard(name), x.st.Name(); want != self {
		return nil, cairn.Errorf(cairn.Invalid, "lock %q is held by object %q of the locks namespace, not %q", name, want, self)
	}
	return x.t.get(name), nil
}

// Acquire is Lock.Acquire on the lock a.Name.
func (x *LockTable) Acquire(ctx context.Context, a TableAcquireArgs) (AcquireResult, error) {
	l, err := x.lease(a.Name)
	if err != nil {
		return AcquireResult{}, err
	}
	return lockAcquire(ctx, l, a.AcquireArgs)
}

// Renew is Lock.Renew on the lock a.Name.
func (x *LockTable) Renew(ctx context.Context, a TableRenewArgs) (AcquireResult, error) {
	l, err := x.lease(a.Name)
	if err != nil {
		return AcquireResult{}, err
	}
	return lockRenew(ctx, l, a.RenewArgs)
}

// Release is Lock.Release on the lock a.Name.
func (x *LockTable) Release(ctx context.Context, a TableReleaseArgs) (ReleaseResult, error) {
	l, err := x.lease(a.Name)
	if err != nil {
		return ReleaseResult{}, err
	}
	return lockRelease(ctx, l, a.ReleaseArgs)
}

// Cancel is Lock.Cancel on the lock a.Name.
func (x *LockTable) Cancel(ctx context.Context, a TableCancelArgs) (CancelResult, error) {
	l, err := x.lease(a.Name)
	if err != nil {
		return CancelResult{}, err
	}
	return lockCancel(ctx, l, a.CancelArgs)
}

// Inspect is Lock.Inspect on the lock a.Name. A lock never acquired is
// free with last_token 0.
func (x *LockTable) Inspect(ctx context.Context, a TableInspectArgs) (LockInfo, error) {
	l, err := x.lease(a.Name)
	if err != nil {
		return LockInfo{}, err
	}
	return lockInspect(ctx, l)
}

// Alarm implements cairn.AlarmHandler: every lease of the shard that
// lapsed is cleared and its lock granted to the next waiter.
func (x *LockTable) Alarm(ctx context.Context, _ cairn.AlarmInfo) error {
	return x.t.alarmDone(x.t.alarm(ctx))
}

// Invalidate implements cairn.Invalidator: lease rows are read again.
func (x *LockTable) Invalidate() { x.t.forgetAll() }

// Locks calls the lock table of a runtime: the lock named name is in object
// LockShard(name) of namespace "locks". It is the Go API of the lock table
// and, as an http.Handler, its HTTP API.
type Locks struct {
	ns *cairn.Namespace
}

// NewLocks returns the lock table of rt, whose namespace "locks" must be
// registered with LockTableClass (Classes does).
func NewLocks(rt *cairn.Runtime) (*Locks, error) {
	ns, err := rt.Namespace("locks")
	if err != nil {
		return nil, err
	}
	return &Locks{ns: ns}, nil
}

func (l *Locks) call(ctx context.Context, name, method string, arg, res any) error {
	if err := checkID("name", name, true); err != nil {
		return err
	}
	stub, err := l.ns.GetByName(LockShard(name))
	if err != nil {
		return err
	}
	return stub.Call(ctx, method, arg, res)
}

// Acquire takes the lock named name: see Lock.Acquire.
func (l *Locks) Acquire(ctx context.Context, name string, a AcquireArgs) (AcquireResult, error) {
	var res AcquireResult
	err := l.call(ctx, name, "Acquire", TableAcquireArgs{Name: name, AcquireArgs: a}, &res)
	return res, err
}

// Renew extends the lease on the lock named name: see Lock.Renew.
func (l *Locks) Renew(ctx context.Context, name string, a RenewArgs) (AcquireResult, error) {
	var res AcquireResult
	err := l.call(ctx, name, "Renew", TableRenewArgs{Name: name, RenewArgs: a}, &res)
	return res, err
}

// Release gives the lock named name up: see Lock.Release.
func (l *Locks) Release(ctx context.Context, name string, a ReleaseArgs) (ReleaseResult, error) {
	var res ReleaseResult
	err := l.call(ctx, name, "Release", TableReleaseArgs{Name: name, ReleaseArgs: a}, &res)
	return res, err
}

// Cancel withdraws an acquire of the lock named name: see Lock.Cancel.
func (l *Locks) Cancel(ctx context.Context, name string, a CancelArgs) (CancelResult, error) {
	var res CancelResult
	err := l.call(ctx, name, "Cancel", TableCancelArgs{Name: name, CancelArgs: a}, &res)
	return res, err
}

// Inspect returns the holder and waiters of the lock named name.
func (l *Locks) Inspect(ctx context.Context, name string) (LockInfo, error) {
	var res LockInfo
	err := l.call(ctx, name, "Inspect", TableInspectArgs{Name: name}, &res)
	return res, err
}

// LocksRoutes are the patterns Locks serves, relative to the server root.
var LocksRoutes = []string{"/v1/locks/{name}", "/v1/locks/{name}/{op}"}

// ServeHTTP serves the lock table's HTTP API (LocksRoutes): the lock's
// name is the path segment after /v1/locks/.
func (l *Locks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	switch r.PathValue("op") {
	case "acquire":
		post(w, r, func(a AcquireArgs) (AcquireResult, error) { return l.Acquire(ctx, name, a) })
	case "renew":
		post(w, r, func(a RenewArgs) (AcquireResult, error) { return l.Renew(ctx, name, a) })
	case "release":
		post(w, r, func(a ReleaseArgs) (ReleaseResult, error) { return l.Release(ctx, name, a) })
	case "cancel":
		post(w, r, func(a CancelArgs) (CancelResult, error) { return l.Cancel(ctx, name, a) })
	case "", "inspect":
		get(w, r, func() (LockInfo, error) { return l.Inspect(ctx, name) })
	default:
		notFound(w, r)
	}
}
