package coord_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
)

// Linearizability: many clients run lock (and queue) operations over real
// HTTP, some with client timeouts so short that the outcome is unknown,
// while the server restarts in the middle; porcupine checks the history
// against a sequential model. An operation whose outcome is unknown (no
// answer, or 503) may have taken effect at any time after its call: it
// "returns" at infinity and the model lets it either apply or not.

// infinity is the return time of an operation with an unknown outcome.
const infinity = int64(1) << 62

// recorder collects a history.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

// skip reports whether an answer came from the restart stand-in: such an
// operation reached no runtime and had no effect, so it is left out of the
// history (as if never invoked).
func skip(r httpResult, err error) bool { return err == nil && r.down }

func (r *recorder) add(client int, in any, call int64, out any, unknown bool) {
	ret := r.now()
	if unknown {
		ret = infinity
	}
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

// clientCtx returns the context of one request: usually generous, but one
// time in twelve a timeout of 1 to 15 ms, often too short for an answer.
func clientCtx(rng *rand.Rand) (context.Context, context.CancelFunc) {
	if rng.IntN(12) == 0 {
		return context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(15))*time.Millisecond)
	}
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// outcome classifies an HTTP answer: definite (200 or a 4xx/504 error
// from the object) or unknown (no answer, 503, 500).
func outcome(r httpResult, err error) (known bool) {
	if err != nil {
		return false
	}
	return r.status == http.StatusOK || r.status == http.StatusConflict || r.status == http.StatusGatewayTimeout
}

// linSeed returns the workload's seed: CAIRN_LIN_SEED, or the time.
func linSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAIRN_LIN_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (set CAIRN_LIN_SEED to repeat the client schedule)", seed)
	return seed
}

// Lock model.

type lockIn struct {
	Op    string // acquire, release, cancel
	Owner string
	Req   string
	Token int64
}

type lockOut struct {
	OK       bool  // acquire granted; release done; cancel released a grant
	Token    int64 // acquire
	Unknown  bool
	Conflict bool
}

type lockState struct {
	Holder string // request id of the grant, "" if free
	Owner  string
	Token  int64
	Last   int64 // highest token granted
}

// lockModel is the sequential specification of a lock: one holder at a
// time, tokens strictly increasing, release and cancel by the holder only.
// Unknown outcomes branch.
var lockModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{lockState{}} },
	Step: func(st, in, out any) []any {
		s, i, o := st.(lockState), in.(lockIn), out.(lockOut)
		var next []any
		switch i.Op {
		case "acquire":
			if o.Unknown {
				next = append(next, s)
				if s.Holder == "" {
					// Granted with some new token (and perhaps given back by
					// the server when the client left: then a cancel or
					// release frees it, or the unknown op stays pending).
					next = append(next, lockState{Holder: i.Req, Owner: i.Owner, Token: s.Last + 1, Last: s.Last + 1})
				}
				return next
			}
			if o.OK {
				if s.Holder == "" && o.Token > s.Last {
					return []any{lockState{Holder: i.Req, Owner: i.Owner, Token: o.Token, Last: o.Token}}
				}
				return nil
			}
			if s.Holder != "" {
				return []any{s}
			}
			return nil
		case "release":
			holds := s.Holder != "" && s.Owner == i.Owner && s.Token == i.Token
			freed := lockState{Last: s.Last}
			if o.Unknown {
				if holds {
					return []any{s, freed}
				}
				return []any{s}
			}
			if o.OK {
				if holds {
					return []any{freed}
				}
				if i.Token <= s.Last && s.Token != i.Token {
					return []any{s} // a retry of a release that took effect
				}
				return nil
			}
			if !holds {
				return []any{s}
			}
			return nil
		case "cancel":
			holds := s.Holder == i.Req
			freed := lockState{Last: s.Last}
			if o.Unknown {
				if holds {
					return []any{s, freed}
				}
				return []any{s}
			}
			if o.OK == holds {
				if holds {
					return []any{freed}
				}
				return []any{s}
			}
			return nil
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(lockState) == b.(lockState) },
	DescribeOperation: func(in, out any) string {
		i, o := in.(lockIn), out.(lockOut)
		return fmt.Sprintf("%s(%s %s t%d) -> %+v", i.Op, i.Owner, i.Req, i.Token, o)
	},
	DescribeState: func(st any) string { return fmt.Sprintf("%+v", st.(lockState)) },
}

// runLockClients records the histories of locks driven at once, one per
// path (relative to the server: "/v1/objects/lock/{name}" for a lock
// object, "/v1/locks/{name}" for a lock of the lock table), client c
// driving paths[c % len(paths)]: each client acquires (waiting up to 0 to
// 200 ms), releases, and withdraws acquires whose outcome it does not know.
// The server restarts once, half way through all the clients' rounds.
func runLockClients(t *testing.T, srv *server, paths []string, clients, rounds int, seed uint64) [][]porcupine.Operation {
	start := time.Now()
	recs := make([]*recorder, len(paths))
	for i := range recs {
		recs[i] = &recorder{start: start}
	}
	var done atomic.Int64
	restarted := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base, rec := srv.url+paths[c%len(paths)], recs[c%len(paths)]
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			owner := fmt.Sprintf("c%d", c)
			for round := 0; round < rounds; round++ {
				if done.Add(1) == int64(clients*rounds/2) {
					srv.restart(srv.level)
					close(restarted)
				}
				req := fmt.Sprintf("%s-%d", owner, round)
				in := lockIn{Op: "acquire", Owner: owner, Req: req}
				ctx, cancel := clientCtx(rng)
				call := rec.now()
				r, err := post(ctx, base+"/acquire", coord.AcquireArgs{Owner: owner, TTLMs: 60000, WaitMs: int64(rng.IntN(200)), RequestID: req})
				cancel()
				if skip(r, err) {
					continue
				}
				var out lockOut
				if !outcome(r, err) {
					rec.add(c, in, call, lockOut{Unknown: true}, true)
					// Make sure: withdraw it, until the answer is known.
					for {
						in := lockIn{Op: "cancel", Owner: owner, Req: req}
						ctx, cancel := clientCtx(rng)
						call := rec.now()
						r, err := post(ctx, base+"/cancel", coord.CancelArgs{Owner: owner, RequestID: req})
						cancel()
						if skip(r, err) {
							continue
						}
						if outcome(r, err) && r.status == http.StatusOK {
							var res coord.CancelResult
							json.Unmarshal(r.body, &res)
							rec.add(c, in, call, lockOut{OK: res.Released}, false)
							break
						}
						rec.add(c, in, call, lockOut{Unknown: true}, true)
					}
					continue
				}
				if r.status != http.StatusOK {
					out.Conflict = true
					rec.add(c, in, call, out, false)
					continue
				}
				var g coord.AcquireResult
				json.Unmarshal(r.body, &g)
				rec.add(c, in, call, lockOut{OK: true, Token: g.Token}, false)
				// Release, retrying with the same request id until known.
				rel := req + "-rel"
				for {
					in := lockIn{Op: "release", Owner: owner, Token: g.Token}
					ctx, cancel := clientCtx(rng)
					call := rec.now()
					r, err := post(ctx, base+"/release", coord.ReleaseArgs{Owner: owner, Token: g.Token, RequestID: rel})
					cancel()
					if skip(r, err) {
						continue
					}
					if outcome(r, err) {
						rec.add(c, in, call, lockOut{OK: r.status == http.StatusOK, Conflict: r.status != http.StatusOK}, false)
						break
					}
					rec.add(c, in, call, lockOut{Unknown: true}, true)
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-restarted:
	default:
		t.Fatal("the server did not restart during the run")
	}
	hs := make([][]porcupine.Operation, len(recs))
	for i, rec := range recs {
		hs[i] = rec.ops
	}
	return hs
}

// checkHistory checks ops against model. On an unexpected failure the
// visualization is kept in the system's temp directory.
func checkHistory(t *testing.T, model porcupine.Model, ops []porcupine.Operation, expectOK bool) porcupine.CheckResult {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(model, ops, 20*time.Second)
	if res != porcupine.Ok && expectOK {
		f, err := os.CreateTemp("", "cairn-porcupine-*.html")
		if err == nil {
			porcupine.Visualize(model, info, f)
			f.Close()
			t.Logf("history of %d operations: %s; visualization in %s", len(ops), res, f.Name())
		}
	}
	return res
}

func summarize(ops []porcupine.Operation) (unknown int) {
	for _, op := range ops {
		if op.Return == infinity {
			unknown++
		}
	}
	return unknown
}

// The lock's history is checked at both durability levels: at Disk every
// commit goes through the engine's sync stage, shared by the objects.
func TestLockLinearizable(t *testing.T) {
	for _, level := range []cairn.Durability{cairn.Process, cairn.Disk} {
		t.Run(level.String(), func(t *testing.T) {
			srv := newServer(t, level)
			seed := linSeed(t)
			start := time.Now()
			ops := runLockClients(t, srv, []string{"/v1/objects/lock/lin"}, 6, 40, seed)
			checkLockHistory(t, ops[0], start)
		})
	}
}

// TestLockTableLinearizable proves that the locks of the lock table are
// linearizable over HTTP, across a restart, at both durability levels:
// two locks of one shard, driven at once by clients of their own (their
// requests share the shard's turns and commits), each have a history that
// the lock model accepts, and that the broken model and a corrupted copy
// of it are refused (checkLockHistory).
func TestLockTableLinearizable(t *testing.T) {
	for _, level := range []cairn.Durability{cairn.Process, cairn.Disk} {
		t.Run(level.String(), func(t *testing.T) {
			srv := newServer(t, level)
			seed := linSeed(t)
			names := oneShard(t, "lin-", 2)
			paths := []string{"/v1/locks/" + names[0], "/v1/locks/" + names[1]}
			start := time.Now()
			hs := runLockClients(t, srv, paths, 8, 40, seed)
			for i, ops := range hs {
				t.Run(names[i], func(t *testing.T) { checkLockHistory(t, ops, start) })
			}
		})
	}
}

// checkLockHistory checks the history of one lock, recorded since start,
// against lockModel, and that the check can fail: a model that forgets
// releases, and the same history with one grant's token made a repeat of
// an earlier one, are both refused.
func checkLockHistory(t *testing.T, ops []porcupine.Operation, start time.Time) {
	granted := 0
	for _, op := range ops {
		if o := op.Output.(lockOut); o.OK && op.Input.(lockIn).Op == "acquire" {
			granted++
		}
	}
	t.Logf("%d operations (%d grants, %d unknown outcomes) in %v", len(ops), granted, summarize(ops), time.Since(start).Round(time.Millisecond))
	if granted < 20 {
		t.Fatalf("only %d grants: the workload did not exercise the lock", granted)
	}
	model := lockModel.ToModel()
	checkStart := time.Now()
	if res := checkHistory(t, model, ops, true); res != porcupine.Ok {
		t.Fatalf("lock history is not linearizable: %s", res)
	}
	t.Logf("checked in %v", time.Since(checkStart).Round(time.Millisecond))

	t.Run("broken model", func(t *testing.T) {
		broken := lockModel
		broken.Step = func(st, in, out any) []any {
			if in.(lockIn).Op == "release" && out.(lockOut).OK {
				return []any{st} // the lock stays held
			}
			return lockModel.Step(st, in, out)
		}
		if res := checkHistory(t, broken.ToModel(), ops, false); res != porcupine.Illegal {
			t.Fatalf("a model that never frees the lock: got %s, want Illegal", res)
		}
	})
	t.Run("corrupted history", func(t *testing.T) {
		bad := slices.Clone(ops)
		var grants []int
		for i, op := range bad {
			if o := op.Output.(lockOut); o.OK && op.Input.(lockIn).Op == "acquire" {
				grants = append(grants, i)
			}
		}
		// Early in the history, so that the search fails fast.
		slices.SortFunc(grants, func(a, b int) int { return int(bad[a].Call - bad[b].Call) })
		o := bad[grants[1]].Output.(lockOut)
		o.Token = bad[grants[0]].Output.(lockOut).Token // a fencing token handed out again
		bad[grants[1]].Output = o
		if res := checkHistory(t, model, bad, false); res != porcupine.Illegal {
			t.Fatalf("a repeated token: got %s, want Illegal", res)
		}
	})
}

// Queue model: FIFO by id, one claimant at a time (visibility outlasts
// the test), ack by the claimant.

type queueIn struct {
	Op string // enqueue, claim, ack, stats
	ID int64  // ack
}

type queueOut struct {
	ID       int64 // enqueue: the new id; claim: the message, 0 if none
	OK       bool  // ack
	Ready    int64 // stats
	InFlight int64
	Unknown  bool
}

type queueState struct {
	Last     int64
	Ready    []int64
	InFlight []int64
}

func (s queueState) clone() queueState {
	return queueState{Last: s.Last, Ready: slices.Clone(s.Ready), InFlight: slices.Clone(s.InFlight)}
}

var queueModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{queueState{}} },
	Step: func(st, in, out any) []any {
		s, i, o := st.(queueState), in.(queueIn), out.(queueOut)
		switch i.Op {
		case "enqueue":
			added := s.clone()
			added.Last++
			added.Ready = append(added.Ready, added.Last)
			if o.Unknown {
				return []any{s, added}
			}
			if o.ID == s.Last+1 {
				return []any{added}
			}
			return nil
		case "claim":
			if len(s.Ready) == 0 {
				if o.Unknown || o.ID == 0 {
					return []any{s}
				}
				return nil
			}
			took := s.clone()
			took.Ready = took.Ready[1:]
			took.InFlight = append(took.InFlight, s.Ready[0])
			if o.Unknown {
				return []any{s, took}
			}
			if o.ID == s.Ready[0] {
				return []any{took}
			}
			return nil
		case "ack":
			k := slices.Index(s.InFlight, i.ID)
			acked := s.clone()
			if k >= 0 {
				acked.InFlight = slices.Delete(acked.InFlight, k, k+1)
			}
			switch {
			case o.Unknown && k >= 0:
				return []any{s, acked}
			case o.Unknown:
				return []any{s}
			case o.OK && k >= 0:
				return []any{acked}
			case o.OK && !slices.Contains(s.Ready, i.ID) && i.ID <= s.Last:
				return []any{s} // a retry of an ack that took effect
			case !o.OK && k < 0:
				return []any{s}
			}
			return nil
		case "stats":
			if o.Unknown || (o.Ready == int64(len(s.Ready)) && o.InFlight == int64(len(s.InFlight))) {
				return []any{s}
			}
			return nil
		}
		return nil
	},
	Equal: func(a, b any) bool {
		x, y := a.(queueState), b.(queueState)
		return x.Last == y.Last && slices.Equal(x.Ready, y.Ready) && slices.Equal(x.InFlight, y.InFlight)
	},
	DescribeOperation: func(in, out any) string { return fmt.Sprintf("%+v -> %+v", in, out) },
	DescribeState:     func(st any) string { return fmt.Sprintf("%+v", st) },
}

func TestQueueLinearizable(t *testing.T) {
	srv := newServer(t, cairn.Process)
	base := srv.url + "/v1/objects/queue/lin"
	seed := linSeed(t)
	rec := &recorder{start: time.Now()}
	const clients, rounds = 6, 30
	var done atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for round := 0; round < rounds; round++ {
				if done.Add(1) == clients*rounds/2 {
					srv.restart(srv.level)
				}
				ctx, cancel := clientCtx(rng)
				call := rec.now()
				switch p := rng.IntN(10); {
				case p < 4:
					r, err := post(ctx, base+"/enqueue", coord.EnqueueArgs{Body: body(fmt.Sprintf("c%d-%d", c, round))})
					if skip(r, err) {
						break
					}
					var res coord.EnqueueResult
					known := outcome(r, err) && r.status == http.StatusOK
					json.Unmarshal(r.body, &res)
					rec.add(c, queueIn{Op: "enqueue"}, call, queueOut{ID: res.ID, Unknown: !known}, !known)
				case p < 9:
					r, err := post(ctx, base+"/claim", coord.ClaimArgs{VisibilityMs: 600000})
					if skip(r, err) {
						break
					}
					var res coord.ClaimResult
					known := outcome(r, err) && r.status == http.StatusOK
					json.Unmarshal(r.body, &res)
					out := queueOut{Unknown: !known}
					if len(res.Messages) == 1 {
						out.ID = res.Messages[0].ID
					}
					rec.add(c, queueIn{Op: "claim"}, call, out, !known)
					if !known || len(res.Messages) == 0 {
						break
					}
					m := res.Messages[0]
					for {
						ctx, cancel := clientCtx(rng)
						call := rec.now()
						r, err := post(ctx, base+"/ack", coord.AckArgs{ID: m.ID, Receipt: m.Receipt})
						cancel()
						if skip(r, err) {
							continue
						}
						known := outcome(r, err)
						rec.add(c, queueIn{Op: "ack", ID: m.ID}, call, queueOut{OK: r.status == http.StatusOK, Unknown: !known}, !known)
						if known {
							break
						}
					}
				default:
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
					r, err := send(req)
					if skip(r, err) {
						break
					}
					var res coord.QueueStats
					known := outcome(r, err) && r.status == http.StatusOK
					json.Unmarshal(r.body, &res)
					rec.add(c, queueIn{Op: "stats"}, call, queueOut{Ready: res.Ready, InFlight: res.InFlight, Unknown: !known}, !known)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d operations, %d unknown outcomes", len(rec.ops), summarize(rec.ops))
	model := queueModel.ToModel()
	if res := checkHistory(t, model, rec.ops, true); res != porcupine.Ok {
		t.Fatalf("queue history is not linearizable: %s", res)
	}
	t.Run("corrupted history", func(t *testing.T) {
		// A message delivered twice at once: copy a successful claim's
		// answer onto another claim that found the queue empty or got a
		// later message.
		bad := slices.Clone(rec.ops)
		var claims []int
		for i, op := range bad {
			if op.Input.(queueIn).Op == "claim" && op.Return != infinity && op.Output.(queueOut).ID != 0 {
				claims = append(claims, i)
			}
		}
		if len(claims) < 2 {
			t.Fatalf("the history has %d successful claims; corrupting it needs 2", len(claims))
		}
		bad[claims[1]].Output = bad[claims[0]].Output
		if res := checkHistory(t, model, bad, false); res != porcupine.Illegal {
			t.Fatalf("a message claimed twice: got %s, want Illegal", res)
		}
	})
}
