package coord

import (
	"context"
	"net/http"

	"github.com/cairn-dev/cairn"
)

// LockClass is the lock namespace: one object per resource name, a lease
// with a fencing token. See docs/coordination.md.
//
// HTTP, under /v1/objects/lock/{resource}/ (JSON bodies):
//
//	POST /acquire  AcquireArgs  -> AcquireResult
//	POST /renew    RenewArgs    -> AcquireResult
//	POST /release  ReleaseArgs  -> ReleaseResult
//	POST /cancel   CancelArgs   -> CancelResult
//	GET  /         LockInfo
//
// and the same as RPC: POST /v1/objects/lock/{resource}/rpc/Acquire, ...
var LockClass = cairn.Class{
	New: func(st *cairn.State) (any, error) {
		l, err := newLease(st)
		if err != nil {
			return nil, err
		}
		return &Lock{l: l}, nil
	},
	Migrations: leaseMigrations,
}

// Lock is an instance of the lock class.
type Lock struct{ l *lease }

// AcquireArgs asks for a lock.
type AcquireArgs struct {
	Owner     string `json:"owner"`                // who asks: 1 to 256 bytes; unique per client
	TTLMs     int64  `json:"ttl_ms"`               // lease length, 1 ms to 24 h
	WaitMs    int64  `json:"wait_ms,omitempty"`    // how long to wait in line if held; 0: fail at once
	RequestID string `json:"request_id,omitempty"` // makes a retry return the same grant
}

// AcquireResult is a grant (also the result of Renew).
type AcquireResult struct {
	Owner     string `json:"owner"`
	Token     int64  `json:"token"`      // fencing token: strictly increasing per lock
	ExpiresAt int64  `json:"expires_at"` // Unix milliseconds
}

func grantResult(h Holder) AcquireResult {
	return AcquireResult{Owner: h.Owner, Token: h.Token, ExpiresAt: h.ExpiresAt}
}

// Acquire takes the lock for a.Owner for a.TTLMs, waiting in FIFO order up
// to a.WaitMs if another owner holds it. Errors: Conflict if it is held
// and a.WaitMs is 0 (or the owner already holds it: Renew instead),
// Timeout if the wait ran out, Invalid for bad arguments.
//
// If the client gives up first (a client-side timeout, a lost
// connection), the outcome is unknown: retry with the same request id
// within 15 minutes to get the same answer (the grant, if there was one),
// or Cancel with it to be sure not to hold the lock. A waiting HTTP client
// that disconnects leaves the line, and a grant it could not receive is
// released.
func (x *Lock) Acquire(ctx context.Context, a AcquireArgs) (AcquireResult, error) {
	return lockAcquire(ctx, x.l, a)
}

// lockAcquire, lockRenew, lockRelease, lockCancel and lockInspect are the
// operations of a lock, for Lock and LockTable alike.
func lockAcquire(ctx context.Context, l *lease, a AcquireArgs) (AcquireResult, error) {
	if err := checkID("owner", a.Owner, true); err != nil {
		return AcquireResult{}, err
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return AcquireResult{}, err
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return AcquireResult{}, err
	}
	if err := checkWait(a.WaitMs); err != nil {
		return AcquireResult{}, err
	}
	h, err := l.acquire(ctx, acquireReq{owner: a.Owner, requestID: a.RequestID, ttl: a.TTLMs, wait: a.WaitMs})
	if err := l.finish(err); err != nil {
		return AcquireResult{}, err
	}
	return grantResult(h), nil
}

// RenewArgs extends a held lock's lease.
type RenewArgs struct {
	Owner string `json:"owner"`
	Token int64  `json:"token"`
	TTLMs int64  `json:"ttl_ms"` // the new lease runs this long from now
}

// Renew extends the lease of the holder with its token. Conflict if the
// token is not current (the lease expired, or was released). A renew that
// timed out on the client may be retried as is.
func (x *Lock) Renew(ctx context.Context, a RenewArgs) (AcquireResult, error) {
	return lockRenew(ctx, x.l, a)
}

func lockRenew(ctx context.Context, l *lease, a RenewArgs) (AcquireResult, error) {
	if err := checkID("owner", a.Owner, true); err != nil {
		return AcquireResult{}, err
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return AcquireResult{}, err
	}
	h, err := l.renew(ctx, a.Owner, a.Token, a.TTLMs)
	if err := l.finish(err); err != nil {
		return AcquireResult{}, err
	}
	return grantResult(h), nil
}

// ReleaseArgs gives a lock back.
type ReleaseArgs struct {
	Owner     string `json:"owner"`
	Token     int64  `json:"token"`
	RequestID string `json:"request_id,omitempty"` // makes a retry succeed again
}

// ReleaseResult confirms a release.
type ReleaseResult struct {
	Released bool `json:"released"`
}

// Release gives the lock up if a.Owner holds it with a.Token, and grants
// it to the next waiter. Conflict otherwise (a stale token: the lease
// expired or was released). A release that timed out on the client may be
// retried: with the same request id it succeeds again; without, a Conflict
// on the retry means the lock is no longer held with that token, which is
// what the release wanted.
func (x *Lock) Release(ctx context.Context, a ReleaseArgs) (ReleaseResult, error) {
	return lockRelease(ctx, x.l, a)
}

func lockRelease(ctx context.Context, l *lease, a ReleaseArgs) (ReleaseResult, error) {
	if err := checkID("owner", a.Owner, true); err != nil {
		return ReleaseResult{}, err
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return ReleaseResult{}, err
	}
	if err := l.finish(l.release(ctx, a.Owner, a.Token, a.RequestID)); err != nil {
		return ReleaseResult{}, err
	}
	return ReleaseResult{Released: true}, nil
}

// Cancel withdraws the Acquire a.RequestID of a.Owner: it leaves the line
// if it waits, and if it was granted and the grant is still held, the lock
// is released. For a client that gave up on an Acquire and must not hold
// the lock. Idempotent.
func (x *Lock) Cancel(ctx context.Context, a CancelArgs) (CancelResult, error) {
	return lockCancel(ctx, x.l, a)
}

func lockCancel(ctx context.Context, l *lease, a CancelArgs) (CancelResult, error) {
	if err := a.check(); err != nil {
		return CancelResult{}, err
	}
	res, err := l.withdraw(ctx, a.Owner, a.RequestID, a.Seq)
	return res, l.finish(err)
}

// LockInfo is the state of a lock.
type LockInfo struct {
	Holder    *Holder  `json:"holder"`     // null if free
	LastToken int64    `json:"last_token"` // the highest token ever granted
	Waiters   []Waiter `json:"waiters"`    // in the order they will be served
}

// Inspect returns the holder and the waiters.
func (x *Lock) Inspect(ctx context.Context) (LockInfo, error) {
	return lockInspect(ctx, x.l)
}

func lockInspect(ctx context.Context, l *lease) (LockInfo, error) {
	s, ws, err := l.info(ctx)
	if err := l.finish(err); err != nil {
		return LockInfo{}, err
	}
	return LockInfo{Holder: s.holder, LastToken: s.lastToken, Waiters: ws}, nil
}

// Alarm implements cairn.AlarmHandler: a lease that lapsed is cleared and
// the lock granted to the next waiter.
func (x *Lock) Alarm(ctx context.Context, _ cairn.AlarmInfo) error {
	return x.l.alarmDone(x.l.alarm(ctx))
}

// Invalidate implements cairn.Invalidator: the lease row is read again.
func (x *Lock) Invalidate() { x.l.forgetAll() }

// ServeHTTP implements http.Handler.
func (x *Lock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	switch r.URL.Path {
	case "/acquire":
		post(w, r, func(a AcquireArgs) (AcquireResult, error) { return x.Acquire(ctx, a) })
	case "/renew":
		post(w, r, func(a RenewArgs) (AcquireResult, error) { return x.Renew(ctx, a) })
	case "/release":
		post(w, r, func(a ReleaseArgs) (ReleaseResult, error) { return x.Release(ctx, a) })
	case "/cancel":
		post(w, r, func(a CancelArgs) (CancelResult, error) { return x.Cancel(ctx, a) })
	case "/", "/inspect":
		get(w, r, func() (LockInfo, error) { return x.Inspect(ctx) })
	default:
		notFound(w, r)
	}
}
