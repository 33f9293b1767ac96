package coord

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/cairn-dev/cairn"
)

// LeaderClass is the leader namespace: one object per election group. The
// leader holds a lease; its term strictly increases. See
// docs/coordination.md.
//
// HTTP, under /v1/objects/leader/{group}/ (JSON bodies):
//
//	POST /campaign  CampaignArgs -> CampaignResult
//	POST /renew     LeaderRenewArgs -> CampaignResult
//	POST /resign    ResignArgs -> ResignResult
//	POST /cancel    CancelArgs -> CancelResult
//	GET  /          LeaderInfo
//	GET  /observe   Server-Sent Events; with Upgrade: websocket, a WebSocket
//
// and the same as RPC: POST /v1/objects/leader/{group}/rpc/Campaign, ...
var LeaderClass = cairn.Class{
	New: func(st *cairn.State) (any, error) {
		l, err := newLease(st)
		if err != nil {
			return nil, err
		}
		x := &Leader{l: l, f: newFeed(st)}
		l.notify = x.notify
		return x, nil
	},
	Migrations: []cairn.Migration{leaseMigrations[0], feedMigration, leaseMigrations[1]},
}

// Leader is an instance of the leader class.
type Leader struct {
	l *lease
	f *feed
}

// LeaderEvent is a change of leadership, as streamed to observers.
type LeaderEvent struct {
	Seq       int64  `json:"seq"`
	Type      string `json:"type"` // "elected", "resigned", "expired"
	Leader    string `json:"leader"`
	Term      int64  `json:"term"`
	ExpiresAt int64  `json:"expires_at,omitempty"`
}

func (x *Leader) notify(ctx context.Context, ev leaseEvent) error {
	typ := map[string]string{"acquired": "elected", "released": "resigned", "expired": "expired"}[ev.Kind]
	m := map[string]any{"type": typ, "leader": ev.Holder.Owner, "term": ev.Holder.Token}
	if typ == "elected" {
		m["expires_at"] = ev.Holder.ExpiresAt
	}
	return x.f.publish(ctx, m)
}

// done ends an operation: see lease.finish.
func (x *Leader) done(err error) error { return x.l.finish(err) }

// CampaignArgs runs for leader.
type CampaignArgs struct {
	Candidate string `json:"candidate"`            // 1 to 256 bytes; unique per process
	TTLMs     int64  `json:"ttl_ms"`               // lease length
	WaitMs    int64  `json:"wait_ms,omitempty"`    // wait in line this long to be elected
	RequestID string `json:"request_id,omitempty"` // makes a retry return the same answer
}

// CampaignResult is the outcome of a campaign.
type CampaignResult struct {
	Elected   bool   `json:"elected"`
	Leader    string `json:"leader"` // "" if there is none
	Term      int64  `json:"term"`   // the leader's term: strictly increasing per group
	ExpiresAt int64  `json:"expires_at,omitempty"`
}

// Campaign makes a.Candidate leader if there is none, or once the leader
// resigns or its lease lapses, waiting up to a.WaitMs in FIFO order with
// other candidates. A candidate that already leads has its lease renewed.
// If it is not elected, the result says who leads (Elected false).
//
// If the client times out, it may or may not have been elected: retry with
// the same request id, or Cancel with it to withdraw.
func (x *Leader) Campaign(ctx context.Context, a CampaignArgs) (CampaignResult, error) {
	res, err := x.campaign(ctx, a)
	return res, x.done(err)
}

func (x *Leader) campaign(ctx context.Context, a CampaignArgs) (CampaignResult, error) {
	if err := checkID("candidate", a.Candidate, true); err != nil {
		return CampaignResult{}, err
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return CampaignResult{}, err
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return CampaignResult{}, err
	}
	if err := checkWait(a.WaitMs); err != nil {
		return CampaignResult{}, err
	}
	s, err := x.l.expire(ctx, x.l.now())
	if err != nil {
		return CampaignResult{}, err
	}
	if s.holder != nil && s.holder.Owner == a.Candidate {
		h, err := x.l.renew(ctx, a.Candidate, s.holder.Token, a.TTLMs)
		if err != nil {
			return CampaignResult{}, err
		}
		return elected(h), nil
	}
	h, err := x.l.acquire(ctx, acquireReq{owner: a.Candidate, requestID: a.RequestID, ttl: a.TTLMs, wait: a.WaitMs})
	switch cairn.ErrorCode(err) {
	case "":
		return elected(h), nil
	case cairn.Conflict, cairn.Timeout:
		if ctx.Err() != nil {
			return CampaignResult{}, err
		}
		info, ierr := x.inspect(ctx)
		if ierr != nil {
			return CampaignResult{}, ierr
		}
		return info.CampaignResult, nil
	}
	return CampaignResult{}, err
}

func elected(h Holder) CampaignResult {
	return CampaignResult{Elected: true, Leader: h.Owner, Term: h.Token, ExpiresAt: h.ExpiresAt}
}

// LeaderRenewArgs extends the leader's lease.
type LeaderRenewArgs struct {
	Candidate string `json:"candidate"`
	Term      int64  `json:"term"`
	TTLMs     int64  `json:"ttl_ms"`
}

// Renew extends the lease of the leader of a.Term. Conflict if a.Term is
// not the current term (the lease lapsed or the leader resigned): the
// caller is no longer leader and must stop acting as one. Safe to retry.
func (x *Leader) Renew(ctx context.Context, a LeaderRenewArgs) (CampaignResult, error) {
	if err := checkID("candidate", a.Candidate, true); err != nil {
		return CampaignResult{}, err
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return CampaignResult{}, err
	}
	h, err := x.l.renew(ctx, a.Candidate, a.Term, a.TTLMs)
	if err != nil {
		return CampaignResult{}, x.done(err)
	}
	return elected(h), x.done(nil)
}

// ResignArgs gives leadership up.
type ResignArgs struct {
	Candidate string `json:"candidate"`
	Term      int64  `json:"term"`
	RequestID string `json:"request_id,omitempty"`
}

// ResignResult confirms a resignation.
type ResignResult struct {
	Resigned bool `json:"resigned"`
}

// Resign ends the term a.Term of a.Candidate; the next waiting candidate
// is elected with a new term. Conflict if a.Term is not current. Retry as
// Lock.Release.
func (x *Leader) Resign(ctx context.Context, a ResignArgs) (ResignResult, error) {
	if err := checkID("candidate", a.Candidate, true); err != nil {
		return ResignResult{}, err
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return ResignResult{}, err
	}
	if err := x.l.release(ctx, a.Candidate, a.Term, a.RequestID); err != nil {
		return ResignResult{}, x.done(err)
	}
	return ResignResult{Resigned: true}, x.done(nil)
}

// Cancel withdraws a waiting campaign (Owner is the candidate), as
// Lock.Cancel.
func (x *Leader) Cancel(ctx context.Context, a CancelArgs) (CancelResult, error) {
	if err := a.check(); err != nil {
		return CancelResult{}, err
	}
	res, err := x.l.withdraw(ctx, a.Owner, a.RequestID, a.Seq)
	return res, x.done(err)
}

// LeaderInfo is the state of an election group: the current leader and
// the candidates waiting.
type LeaderInfo struct {
	CampaignResult
	Candidates []Waiter `json:"candidates"`
}

// Get returns the current leader: Leader is "" if there is none, and Term
// is then the last term there was. Elected is always false here.
func (x *Leader) Get(ctx context.Context) (CampaignResult, error) {
	info, err := x.inspect(ctx)
	return info.CampaignResult, x.done(err)
}

// Inspect returns the leader and the waiting candidates.
func (x *Leader) Inspect(ctx context.Context) (LeaderInfo, error) {
	info, err := x.inspect(ctx)
	return info, x.done(err)
}

func (x *Leader) inspect(ctx context.Context) (LeaderInfo, error) {
	s, ws, err := x.l.info(ctx)
	if err != nil {
		return LeaderInfo{}, err
	}
	info := LeaderInfo{CampaignResult: CampaignResult{Term: s.lastToken}, Candidates: ws}
	if s.holder != nil {
		info.CampaignResult = elected(*s.holder)
		info.Elected = false
	}
	return info, nil
}

// Alarm implements cairn.AlarmHandler: a lapsed lease ends the term and
// the next waiting candidate is elected.
func (x *Leader) Alarm(ctx context.Context, _ cairn.AlarmInfo) error {
	return x.l.alarmDone(x.l.alarm(ctx))
}

// Invalidate implements cairn.Invalidator: the lease row is read again.
func (x *Leader) Invalidate() { x.l.forgetAll() }

// WebSocketMessage implements cairn.WebSocketHandler: any message is
// answered with the current state.
func (x *Leader) WebSocketMessage(ctx context.Context, ws *cairn.WebSocket, m cairn.Message) error {
	info, err := x.Inspect(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"type": "state", "state": info})
	return ws.Send(ctx, cairn.Message{Text: true, Data: b})
}

// WebSocketClose implements cairn.WebSocketHandler.
func (x *Leader) WebSocketClose(ctx context.Context, ws *cairn.WebSocket, code int, reason string) error {
	return nil
}

// ServeHTTP implements http.Handler.
func (x *Leader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	snapshot := func() (any, error) { return x.Inspect(ctx) }
	switch r.URL.Path {
	case "/campaign":
		post(w, r, func(a CampaignArgs) (CampaignResult, error) { return x.Campaign(ctx, a) })
	case "/renew":
		post(w, r, func(a LeaderRenewArgs) (CampaignResult, error) { return x.Renew(ctx, a) })
	case "/resign":
		post(w, r, func(a ResignArgs) (ResignResult, error) { return x.Resign(ctx, a) })
	case "/cancel":
		post(w, r, func(a CancelArgs) (CancelResult, error) { return x.Cancel(ctx, a) })
	case "/", "/inspect":
		get(w, r, func() (LeaderInfo, error) { return x.Inspect(ctx) })
	case "/observe":
		if isWebSocket(r) {
			if _, err := x.f.acceptObserver(r, snapshot); err != nil {
				writeError(w, err)
			}
			return
		}
		x.f.serveSSE(w, r, snapshot)
	default:
		notFound(w, r)
	}
}
