package coord

import (
	"context"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cairn-dev/cairn"
)

// LockShards is how many objects of the locks namespace hold the lock
// table. A lock's shard is fixed by its name (LockShard), so this number
// is part of the storage format: changing it would move locks to shards
// where their fencing tokens start again. One: with 16 clients on 2 cores,
// 1,000 locks in one shard made 5,600-6,700 durable round trips/s, in 2
// or 8 shards 4,100-4,200, as many as a Lock object each (requests spread
// over shards no longer share commits); docs/coordination.md.
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
// of a shard share its turns and its commits: 1,000 locks cost LockShards
// objects instead of 1,000, and the commits of concurrent requests to a
// shard are made durable together. A Lock object of its own is for a lock that
// should not wait behind others' turns. See docs/coordination.md.
//
// HTTP (Locks.ServeHTTP, mounted by `cairn serve`):
//
//	POST /v1/locks/{name}/acquire  AcquireArgs  -> AcquireResult
//	POST /v1/locks/{name}/renew    RenewArgs    -> AcquireResult
//	POST /v1/locks/{name}/release  ReleaseArgs  -> ReleaseResult
//	POST /v1/locks/{name}/cancel   CancelArgs   -> CancelResult
//	GET  /v1/locks/{name}          LockInfo
//	GET  /v1/locks?after=&limit=   TableListResult: the locks by name
//
// RPC, on object LockShard(name): Acquire (TableAcquireArgs), Renew
// (TableRenewArgs), Release (TableReleaseArgs), Cancel (TableCancelArgs),
// Inspect (TableInspectArgs), List (TableListArgs: that shard's locks). A
// shard refuses a lock that is not its own.
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

// TableListArgs page through a shard's locks, by name.
type TableListArgs struct {
	After string `json:"after,omitempty"` // names after this one
	Limit int    `json:"limit,omitempty"` // 1 to MaxListLimit; 0 for DefaultListLimit
}

// TableLock is one lock in a listing.
type TableLock struct {
	Name      string  `json:"name"`
	Holder    *Holder `json:"holder"`     // null if free (or its lease lapsed)
	LastToken int64   `json:"last_token"` // the highest token ever granted
	Waiters   int     `json:"waiters"`    // requests waiting in line
}

// TableListResult is a page of locks; Next, if not empty, is the After of
// the next page.
type TableListResult struct {
	Locks []TableLock `json:"locks"`
	Next  string      `json:"next,omitempty"`
}

// Listing bounds.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

func (a *TableListArgs) check() error {
	if err := checkID("after", a.After, false); err != nil {
		return err
	}
	switch {
	case a.Limit == 0:
		a.Limit = DefaultListLimit
	case a.Limit < 0 || a.Limit > MaxListLimit:
		return cairn.Errorf(cairn.Invalid, "limit must be 1 to %d", MaxListLimit)
	}
	return nil
}

// List returns the shard's locks with names after a.After, in name order:
// every name ever acquired or waited for. It reads only: a lease that
// lapsed shows as free, as Inspect would show it, without being cleared.
func (x *LockTable) List(ctx context.Context, a TableListArgs) (TableListResult, error) {
	if err := a.check(); err != nil {
		return TableListResult{}, err
	}
	now := x.st.Now().UnixMilli()
	rows, err := x.st.Query(`SELECT l.name, l.last_token, l.owner, l.token, l.expires_at, l.acquired_at,
		(SELECT COUNT(*) FROM lease_waiters w WHERE w.name = l.name AND w.granted IS NULL)
		FROM leases l WHERE l.name > ? ORDER BY l.name LIMIT ?`, a.After, a.Limit+1)
	if err != nil {
		return TableListResult{}, err
	}
	res := TableListResult{Locks: make([]TableLock, 0, min(len(rows.Values), a.Limit))}
	for i, v := range rows.Values {
		if i == a.Limit {
			res.Next = res.Locks[i-1].Name
			break
		}
		l := TableLock{Name: str(v[0]), LastToken: i64(v[1]), Waiters: int(i64(v[6]))}
		if v[2] != nil && i64(v[4]) > now {
			l.Holder = &Holder{Owner: str(v[2]), Token: i64(v[3]), ExpiresAt: i64(v[4]), AcquiredAt: i64(v[5])}
		}
		res.Locks = append(res.Locks, l)
	}
	return res, nil
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

// List returns the locks of the table with names after after, in name
// order, limit at most (0: DefaultListLimit): every shard's page, merged.
func (l *Locks) List(ctx context.Context, after string, limit int) (TableListResult, error) {
	a := TableListArgs{After: after, Limit: limit}
	if err := a.check(); err != nil {
		return TableListResult{}, err
	}
	var all []TableLock
	more := false
	for i := range LockShards {
		stub, err := l.ns.GetByName("shard-" + strconv.Itoa(i))
		if err != nil {
			return TableListResult{}, err
		}
		var page TableListResult
		if err := stub.Call(ctx, "List", a, &page); err != nil {
			return TableListResult{}, err
		}
		all = append(all, page.Locks...)
		more = more || page.Next != ""
	}
	slices.SortFunc(all, func(x, y TableLock) int { return strings.Compare(x.Name, y.Name) })
	res := TableListResult{Locks: all}
	if len(all) > a.Limit {
		res.Locks, more = all[:a.Limit], true
	}
	if more && len(res.Locks) > 0 {
		// Each shard's page holds its first Limit names after After, so
		// the first Limit of all of them are the table's.
		res.Next = res.Locks[len(res.Locks)-1].Name
	}
	return res, nil
}

// LocksRoutes are the patterns Locks serves, relative to the server root.
var LocksRoutes = []string{"/v1/locks", "/v1/locks/{name}", "/v1/locks/{name}/{op}"}

// ServeHTTP serves the lock table's HTTP API (LocksRoutes): the lock's
// name is the path segment after /v1/locks/.
func (l *Locks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.URL.Path == "/v1/locks" {
		get(w, r, func() (TableListResult, error) {
			q := r.URL.Query()
			limit := 0
			if s := q.Get("limit"); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil {
					return TableListResult{}, cairn.Errorf(cairn.Invalid, "limit must be a number")
				}
				if limit = n; limit == 0 {
					limit = -1 // an explicit 0 is out of range, not the default
				}
			}
			return l.List(ctx, q.Get("after"), limit)
		})
		return
	}
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
