package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairn-dev/cairn"
)

// QueueClass is the queue namespace: one object per queue name. Messages
// are claimed with a visibility timeout, acked or nacked, retried with
// exponential backoff and dead-lettered after max attempts. See
// docs/coordination.md.
//
// HTTP, under /v1/objects/queue/{name}/ (JSON bodies):
//
//	POST /enqueue  EnqueueArgs -> EnqueueResult
//	POST /claim    ClaimArgs   -> ClaimResult
//	POST /ack      AckArgs     -> AckResult
//	POST /nack     NackArgs    -> AckResult
//	POST /config   QueueConfig -> QueueConfig
//	GET  /         QueueStats
//	GET  /dead?after=ID&limit=N  DeadResult
//
// and the same as RPC: POST /v1/objects/queue/{name}/rpc/Enqueue, ...
var QueueClass = cairn.Class{
	New: func(st *cairn.State) (any, error) { return &Queue{st: st}, nil },
	Migrations: []cairn.Migration{{SQL: `
CREATE TABLE queue_config (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	max_attempts INTEGER NOT NULL,
	backoff_ms INTEGER NOT NULL,
	max_backoff_ms INTEGER NOT NULL
);
INSERT INTO queue_config VALUES (1, 5, 1000, 300000);
CREATE TABLE queue_messages (
	id INTEGER PRIMARY KEY,
	body TEXT NOT NULL,
	enqueued_at INTEGER NOT NULL,
	visible_at INTEGER NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	receipt TEXT
);
CREATE INDEX queue_messages_visible ON queue_messages (visible_at, id);
CREATE TABLE queue_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last_id INTEGER NOT NULL);
INSERT INTO queue_seq VALUES (1, 0);
CREATE TABLE queue_dead (
	id INTEGER PRIMARY KEY,
	body TEXT NOT NULL,
	enqueued_at INTEGER NOT NULL,
	died_at INTEGER NOT NULL,
	attempts INTEGER NOT NULL,
	reason TEXT NOT NULL
);
CREATE TABLE queue_dedup (key TEXT PRIMARY KEY, id INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE INDEX queue_dedup_at ON queue_dedup (at);
CREATE TABLE queue_requests (request_id TEXT PRIMARY KEY, result TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX queue_requests_at ON queue_requests (at);
CREATE TABLE queue_done (receipt TEXT PRIMARY KEY, op TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX queue_done_at ON queue_done (at);
`}},
}

// Queue limits.
const (
	MaxClaim      = 100
	MaxVisibility = 12 * 60 * 60 * 1000 // ms
	MaxDelay      = 7 * 24 * 60 * 60 * 1000
	MaxAttempts   = 1000
)

// Queue is an instance of the queue class.
type Queue struct {
	st     *cairn.State
	writes int
}

// EnqueueArgs is a message to enqueue.
type EnqueueArgs struct {
	Body     json.RawMessage `json:"body"`                // any JSON value, up to 256 KiB
	DelayMs  int64           `json:"delay_ms,omitempty"`  // not claimable before this
	DedupKey string          `json:"dedup_key,omitempty"` // enqueue once per key within 15 minutes
}

// EnqueueResult is the id of the message.
type EnqueueResult struct {
	ID        int64 `json:"id"`
	Duplicate bool  `json:"duplicate,omitempty"` // the dedup key was seen: nothing enqueued
}

// Enqueue adds a message. Ids increase in enqueue order. If the client
// times out, the message may or may not be enqueued: retry with the same
// dedup key to enqueue it exactly once (within 15 minutes).
func (q *Queue) Enqueue(ctx context.Context, a EnqueueArgs) (EnqueueResult, error) {
	if len(a.Body) == 0 {
		return EnqueueResult{}, cairn.Errorf(cairn.Invalid, "body is required")
	}
	if len(a.Body) > MaxBodyBytes {
		return EnqueueResult{}, cairn.Errorf(cairn.TooLarge, "body is %d bytes; the limit is %d", len(a.Body), MaxBodyBytes)
	}
	if !json.Valid(a.Body) {
		return EnqueueResult{}, cairn.Errorf(cairn.Invalid, "body must be JSON")
	}
	if a.DelayMs < 0 || a.DelayMs > MaxDelay {
		return EnqueueResult{}, cairn.Errorf(cairn.Invalid, "delay_ms must be 0 to %d", MaxDelay)
	}
	if err := checkID("dedup_key", a.DedupKey, false); err != nil {
		return EnqueueResult{}, err
	}
	now := q.st.Now().UnixMilli()
	if a.DedupKey != "" {
		if err := q.prune(now); err != nil {
			return EnqueueResult{}, err
		}
		rows, err := q.st.Query(`SELECT id FROM queue_dedup WHERE key = ?`, a.DedupKey)
		if err != nil {
			return EnqueueResult{}, err
		}
		if len(rows.Values) > 0 {
			return EnqueueResult{ID: i64(rows.Values[0][0]), Duplicate: true}, nil
		}
	}
	rows, err := q.st.Query(`UPDATE queue_seq SET last_id = last_id + 1 WHERE id = 1 RETURNING last_id`)
	if err != nil {
		return EnqueueResult{}, err
	}
	id := i64(rows.Values[0][0])
	if _, err := q.st.Exec(`INSERT INTO queue_messages (id, body, enqueued_at, visible_at) VALUES (?, ?, ?, ?)`,
		id, string(a.Body), now, now+a.DelayMs); err != nil {
		return EnqueueResult{}, err
	}
	if a.DedupKey != "" {
		if _, err := q.st.Exec(`INSERT INTO queue_dedup (key, id, at) VALUES (?, ?, ?)`, a.DedupKey, id, now); err != nil {
			return EnqueueResult{}, err
		}
	}
	return EnqueueResult{ID: id}, nil
}

// prune forgets dedup keys, request ids and receipts older than the
// retry window.
func (q *Queue) prune(now int64) error {
	q.writes++
	if q.writes%64 != 1 {
		return nil
	}
	for _, t := range []string{"queue_dedup", "queue_requests", "queue_done"} {
		if _, err := q.st.Exec(`DELETE FROM `+t+` WHERE at < ?`, now-requestWindow); err != nil {
			return err
		}
	}
	return nil
}

// ClaimArgs asks for messages.
type ClaimArgs struct {
	Max          int    `json:"max,omitempty"`           // 1 to 100; default 1
	VisibilityMs int64  `json:"visibility_ms,omitempty"` // hidden from others this long; default 30 s
	RequestID    string `json:"request_id,omitempty"`    // makes a retry return the same messages
}

// Message is a claimed message.
type Message struct {
	ID           int64           `json:"id"`
	Body         json.RawMessage `json:"body"`
	Attempt      int             `json:"attempt"` // 1 on the first delivery
	Receipt      string          `json:"receipt"` // for Ack and Nack; valid until claimed again
	EnqueuedAt   int64           `json:"enqueued_at"`
	VisibleUntil int64           `json:"visible_until"` // Unix ms: claimable by others after
}

// ClaimResult holds the claimed messages, oldest first; none if the queue
// has nothing claimable.
type ClaimResult struct {
	Messages []Message `json:"messages"`
}

// Claim takes up to a.Max claimable messages (oldest first) and hides them
// from other claimants for a.VisibilityMs. A message is with one claimant
// at a time: once its visibility runs out unacked, the next Claim gets it
// again with a new receipt (attempt + 1), and the old receipt is refused.
// A message claimed max_attempts times without an ack goes to the dead
// letters instead of being delivered again.
//
// If the client times out, messages may have been claimed for it: retry
// with the same request id (within 15 minutes) to get them; otherwise they
// come back after their visibility timeout.
func (q *Queue) Claim(ctx context.Context, a ClaimArgs) (ClaimResult, error) {
	if a.Max == 0 {
		a.Max = 1
	}
	if a.Max < 0 || a.Max > MaxClaim {
		return ClaimResult{}, cairn.Errorf(cairn.Invalid, "max must be 1 to %d", MaxClaim)
	}
	if a.VisibilityMs == 0 {
		a.VisibilityMs = 30000
	}
	if a.VisibilityMs < 0 || a.VisibilityMs > MaxVisibility {
		return ClaimResult{}, cairn.Errorf(cairn.Invalid, "visibility_ms must be 1 to %d", MaxVisibility)
	}
	if err := checkID("request_id", a.RequestID, false); err != nil {
		return ClaimResult{}, err
	}
	now := q.st.Now().UnixMilli()
	if err := q.prune(now); err != nil {
		return ClaimResult{}, err
	}
	if a.RequestID != "" {
		rows, err := q.st.Query(`SELECT result FROM queue_requests WHERE request_id = ?`, a.RequestID)
		if err != nil {
			return ClaimResult{}, err
		}
		if len(rows.Values) > 0 {
			var res ClaimResult
			if err := json.Unmarshal([]byte(str(rows.Values[0][0])), &res); err != nil {
				return ClaimResult{}, err
			}
			return res, nil
		}
	}
	cfg, err := q.config()
	if err != nil {
		return ClaimResult{}, err
	}
	res := ClaimResult{Messages: []Message{}}
	for len(res.Messages) < a.Max {
		rows, err := q.st.Query(`SELECT id, body, attempts, enqueued_at FROM queue_messages WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?`,
			now, a.Max-len(res.Messages))
		if err != nil {
			return ClaimResult{}, err
		}
		if len(rows.Values) == 0 {
			break
		}
		for _, v := range rows.Values {
			id, attempts := i64(v[0]), int(i64(v[2]))
			if attempts >= cfg.MaxAttempts {
				if err := q.bury(id, now, fmt.Sprintf("not acked after %d attempts", attempts)); err != nil {
					return ClaimResult{}, err
				}
				continue
			}
			m := Message{ID: id, Body: json.RawMessage(str(v[1])), Attempt: attempts + 1, EnqueuedAt: i64(v[3]), VisibleUntil: now + a.VisibilityMs}
			m.Receipt = strconv.FormatInt(id, 10) + "." + strconv.Itoa(m.Attempt) + "." + randomHex(8)
			if _, err := q.st.Exec(`UPDATE queue_messages SET attempts = ?, receipt = ?, visible_at = ? WHERE id = ?`,
				m.Attempt, m.Receipt, m.VisibleUntil, id); err != nil {
				return ClaimResult{}, err
			}
			res.Messages = append(res.Messages, m)
		}
	}
	if a.RequestID != "" {
		b, _ := json.Marshal(res)
		if _, err := q.st.Exec(`INSERT INTO queue_requests (request_id, result, at) VALUES (?, ?, ?)`, a.RequestID, string(b), now); err != nil {
			return ClaimResult{}, err
		}
	}
	return res, nil
}

// bury moves a message to the dead letters.
func (q *Queue) bury(id, now int64, reason string) error {
	if _, err := q.st.Exec(`INSERT INTO queue_dead (id, body, enqueued_at, died_at, attempts, reason)
		SELECT id, body, enqueued_at, ?, attempts, ? FROM queue_messages WHERE id = ?`, now, reason, id); err != nil {
		return err
	}
	_, err := q.st.Exec(`DELETE FROM queue_messages WHERE id = ?`, id)
	return err
}

// AckArgs acknowledges a claimed message.
type AckArgs struct {
	ID      int64  `json:"id"`
	Receipt string `json:"receipt"`
}

// AckResult confirms an Ack or Nack.
type AckResult struct {
	OK bool `json:"ok"`
}

// receiptOf checks that receipt is the message's current one. It returns
// whether the message exists with that receipt, and whether receipt was
// already acked or nacked (op).
func (q *Queue) current(id int64, receipt string) (ok bool, attempts int, err error) {
	rows, err := q.st.Query(`SELECT attempts FROM queue_messages WHERE id = ? AND receipt = ?`, id, receipt)
	if err != nil || len(rows.Values) == 0 {
		return false, 0, err
	}
	return true, int(i64(rows.Values[0][0])), nil
}

func (q *Queue) done(receipt, op string) (bool, error) {
	rows, err := q.st.Query(`SELECT 1 FROM queue_done WHERE receipt = ? AND op = ?`, receipt, op)
	return err == nil && len(rows.Values) > 0, err
}

func checkReceipt(id int64, receipt string) error {
	if id <= 0 {
		return cairn.Errorf(cairn.Invalid, "id is required")
	}
	return checkID("receipt", receipt, true)
}

// Ack deletes a message claimed with receipt: done. Conflict if the
// receipt is not current (the message was claimed again after its
// visibility ran out). An Ack that timed out on the client may be retried:
// it succeeds again.
func (q *Queue) Ack(ctx context.Context, a AckArgs) (AckResult, error) {
	if err := checkReceipt(a.ID, a.Receipt); err != nil {
		return AckResult{}, err
	}
	now := q.st.Now().UnixMilli()
	ok, _, err := q.current(a.ID, a.Receipt)
	if err != nil {
		return AckResult{}, err
	}
	if !ok {
		if was, err := q.done(a.Receipt, "ack"); err != nil || was {
			return AckResult{OK: was}, err
		}
		return AckResult{}, cairn.Errorf(cairn.Conflict, "receipt of message %d is not current: it was claimed again, acked or nacked", a.ID)
	}
	if _, err := q.st.Exec(`DELETE FROM queue_messages WHERE id = ?`, a.ID); err != nil {
		return AckResult{}, err
	}
	if err := q.prune(now); err != nil {
		return AckResult{}, err
	}
	_, err = q.st.Exec(`INSERT OR REPLACE INTO queue_done (receipt, op, at) VALUES (?, 'ack', ?)`, a.Receipt, now)
	return AckResult{OK: true}, err
}

// NackArgs gives a claimed message back for a retry.
type NackArgs struct {
	ID      int64  `json:"id"`
	Receipt string `json:"receipt"`
	DelayMs *int64 `json:"delay_ms,omitempty"` // default: the queue's backoff
	Reason  string `json:"reason,omitempty"`   // kept if it goes to the dead letters
}

// Nack returns a claimed message to the queue, claimable again after
// a.DelayMs or, by default, after the queue's backoff: backoff_ms doubled
// for each attempt so far, at most max_backoff_ms. A message nacked on its
// last attempt goes to the dead letters. Retries are safe, as for Ack.
func (q *Queue) Nack(ctx context.Context, a NackArgs) (AckResult, error) {
	if err := checkReceipt(a.ID, a.Receipt); err != nil {
		return AckResult{}, err
	}
	if a.DelayMs != nil && (*a.DelayMs < 0 || *a.DelayMs > MaxDelay) {
		return AckResult{}, cairn.Errorf(cairn.Invalid, "delay_ms must be 0 to %d", MaxDelay)
	}
	if len(a.Reason) > 1024 {
		return AckResult{}, cairn.Errorf(cairn.Invalid, "reason is longer than 1024 bytes")
	}
	now := q.st.Now().UnixMilli()
	ok, attempts, err := q.current(a.ID, a.Receipt)
	if err != nil {
		return AckResult{}, err
	}
	if !ok {
		if was, err := q.done(a.Receipt, "nack"); err != nil || was {
			return AckResult{OK: was}, err
		}
		return AckResult{}, cairn.Errorf(cairn.Conflict, "receipt of message %d is not current: it was claimed again, acked or nacked", a.ID)
	}
	cfg, err := q.config()
	if err != nil {
		return AckResult{}, err
	}
	if attempts >= cfg.MaxAttempts {
		reason := a.Reason
		if reason == "" {
			reason = fmt.Sprintf("nacked on attempt %d of %d", attempts, cfg.MaxAttempts)
		}
		if err := q.bury(a.ID, now, reason); err != nil {
			return AckResult{}, err
		}
	} else {
		delay := cfg.backoff(attempts)
		if a.DelayMs != nil {
			delay = *a.DelayMs
		}
		if _, err := q.st.Exec(`UPDATE queue_messages SET receipt = NULL, visible_at = ? WHERE id = ?`, now+delay, a.ID); err != nil {
			return AckResult{}, err
		}
	}
	if err := q.prune(now); err != nil {
		return AckResult{}, err
	}
	_, err = q.st.Exec(`INSERT OR REPLACE INTO queue_done (receipt, op, at) VALUES (?, 'nack', ?)`, a.Receipt, now)
	return AckResult{OK: true}, err
}

// QueueConfig is a queue's retry policy.
type QueueConfig struct {
	MaxAttempts  int   `json:"max_attempts"`   // deliveries before dead letter; default 5
	BackoffMs    int64 `json:"backoff_ms"`     // first retry delay after a Nack; default 1 s
	MaxBackoffMs int64 `json:"max_backoff_ms"` // default 5 min
}

func (c QueueConfig) backoff(attempts int) int64 {
	d := c.BackoffMs
	for i := 1; i < attempts && d < c.MaxBackoffMs; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoffMs)
}

func (q *Queue) config() (QueueConfig, error) {
	rows, err := q.st.Query(`SELECT max_attempts, backoff_ms, max_backoff_ms FROM queue_config WHERE id = 1`)
	if err != nil {
		return QueueConfig{}, err
	}
	v := rows.Values[0]
	return QueueConfig{MaxAttempts: int(i64(v[0])), BackoffMs: i64(v[1]), MaxBackoffMs: i64(v[2])}, nil
}

// Configure sets the queue's retry policy; zero fields keep their value.
// It applies to messages from their next claim or nack on.
func (q *Queue) Configure(ctx context.Context, c QueueConfig) (QueueConfig, error) {
	if c.MaxAttempts < 0 || c.MaxAttempts > MaxAttempts {
		return QueueConfig{}, cairn.Errorf(cairn.Invalid, "max_attempts must be 1 to %d", MaxAttempts)
	}
	if c.BackoffMs < 0 || c.BackoffMs > MaxDelay || c.MaxBackoffMs < 0 || c.MaxBackoffMs > MaxDelay {
		return QueueConfig{}, cairn.Errorf(cairn.Invalid, "backoff_ms and max_backoff_ms must be 0 to %d", MaxDelay)
	}
	cur, err := q.config()
	if err != nil {
		return QueueConfig{}, err
	}
	if c.MaxAttempts != 0 {
		cur.MaxAttempts = c.MaxAttempts
	}
	if c.BackoffMs != 0 {
		cur.BackoffMs = c.BackoffMs
	}
	if c.MaxBackoffMs != 0 {
		cur.MaxBackoffMs = c.MaxBackoffMs
	}
	if cur.MaxBackoffMs < cur.BackoffMs {
		return QueueConfig{}, cairn.Errorf(cairn.Invalid, "max_backoff_ms must be at least backoff_ms")
	}
	_, err = q.st.Exec(`UPDATE queue_config SET max_attempts = ?, backoff_ms = ?, max_backoff_ms = ? WHERE id = 1`,
		cur.MaxAttempts, cur.BackoffMs, cur.MaxBackoffMs)
	return cur, err
}

// QueueStats are a queue's figures at one moment.
type QueueStats struct {
	Ready    int64       `json:"ready"`     // claimable now
	Delayed  int64       `json:"delayed"`   // enqueued with a delay or nacked, not yet claimable
	InFlight int64       `json:"in_flight"` // claimed, visibility not run out
	Depth    int64       `json:"depth"`     // ready + delayed + in_flight
	Dead     int64       `json:"dead"`      // dead letters
	Config   QueueConfig `json:"config"`
}

// Stats returns the queue's figures.
func (q *Queue) Stats(ctx context.Context) (QueueStats, error) {
	now := q.st.Now().UnixMilli()
	rows, err := q.st.Query(`SELECT
		(SELECT COUNT(*) FROM queue_messages WHERE visible_at <= ?),
		(SELECT COUNT(*) FROM queue_messages WHERE visible_at > ? AND receipt IS NULL),
		(SELECT COUNT(*) FROM queue_messages WHERE visible_at > ? AND receipt IS NOT NULL),
		(SELECT COUNT(*) FROM queue_dead)`, now, now, now)
	if err != nil {
		return QueueStats{}, err
	}
	v := rows.Values[0]
	s := QueueStats{Ready: i64(v[0]), Delayed: i64(v[1]), InFlight: i64(v[2]), Dead: i64(v[3])}
	s.Depth = s.Ready + s.Delayed + s.InFlight
	s.Config, err = q.config()
	return s, err
}

// DeadArgs pages through dead letters.
type DeadArgs struct {
	After int64 `json:"after,omitempty"` // ids greater than this
	Limit int   `json:"limit,omitempty"` // 1 to 1000; default 100
}

// DeadLetter is a message that ran out of attempts.
type DeadLetter struct {
	ID         int64           `json:"id"`
	Body       json.RawMessage `json:"body"`
	Attempts   int             `json:"attempts"`
	Reason     string          `json:"reason"`
	EnqueuedAt int64           `json:"enqueued_at"`
	DiedAt     int64           `json:"died_at"`
}

// DeadResult is a page of dead letters, by id.
type DeadResult struct {
	Messages []DeadLetter `json:"messages"`
}

// DeadLetters lists dead letters by id.
func (q *Queue) DeadLetters(ctx context.Context, a DeadArgs) (DeadResult, error) {
	if a.Limit == 0 {
		a.Limit = 100
	}
	if a.Limit < 0 || a.Limit > 1000 {
		return DeadResult{}, cairn.Errorf(cairn.Invalid, "limit must be 1 to 1000")
	}
	rows, err := q.st.Query(`SELECT id, body, attempts, reason, enqueued_at, died_at FROM queue_dead WHERE id > ? ORDER BY id LIMIT ?`, a.After, a.Limit)
	if err != nil {
		return DeadResult{}, err
	}
	res := DeadResult{Messages: make([]DeadLetter, 0, len(rows.Values))}
	for _, v := range rows.Values {
		res.Messages = append(res.Messages, DeadLetter{ID: i64(v[0]), Body: json.RawMessage(str(v[1])), Attempts: int(i64(v[2])),
			Reason: str(v[3]), EnqueuedAt: i64(v[4]), DiedAt: i64(v[5])})
	}
	return res, nil
}

// ServeHTTP implements http.Handler.
func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	switch r.URL.Path {
	case "/enqueue":
		post(w, r, func(a EnqueueArgs) (EnqueueResult, error) { return q.Enqueue(ctx, a) })
	case "/claim":
		post(w, r, func(a ClaimArgs) (ClaimResult, error) { return q.Claim(ctx, a) })
	case "/ack":
		post(w, r, func(a AckArgs) (AckResult, error) { return q.Ack(ctx, a) })
	case "/nack":
		post(w, r, func(a NackArgs) (AckResult, error) { return q.Nack(ctx, a) })
	case "/config":
		post(w, r, func(a QueueConfig) (QueueConfig, error) { return q.Configure(ctx, a) })
	case "/", "/stats":
		get(w, r, func() (QueueStats, error) { return q.Stats(ctx) })
	case "/dead":
		get(w, r, func() (DeadResult, error) {
			var a DeadArgs
			qs := r.URL.Query()
			var err error
			if v := qs.Get("after"); v != "" {
				if a.After, err = strconv.ParseInt(v, 10, 64); err != nil {
					return DeadResult{}, cairn.Errorf(cairn.Invalid, "after must be an integer")
				}
			}
			if v := qs.Get("limit"); v != "" {
				if a.Limit, err = strconv.Atoi(v); err != nil {
					return DeadResult{}, cairn.Errorf(cairn.Invalid, "limit must be an integer")
				}
			}
			return q.DeadLetters(ctx, a)
		})
	default:
		notFound(w, r)
	}
}
