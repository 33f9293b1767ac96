package schedule

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Scheduler keeps the schedules of the objects of one class in a table of
// each object's database. Its methods take the object's State and run
// inside the caller's turn. A Scheduler holds no per-object state, so one
// value serves every object of a class, from any number of goroutines.
//
// Create one with New and set the fields before the runtime opens; they
// must not change afterwards.
type Scheduler struct {
	// Table is the name of the schedules table: ASCII letters, digits and
	// '_', not starting with a digit nor with "_cairn_", at most 64 bytes.
	// Default "_schedules". Changing it orphans existing schedules.
	Table string

	// MaxPayloadBytes bounds a schedule's payload (compacted JSON).
	// Default 64 KiB.
	MaxPayloadBytes int
	// MaxSchedules bounds the schedules of one object, failed ones
	// included. Default 10,000.
	MaxSchedules int

	// MaxAttempts is how many times a callback is tried for one run before
	// the run is given up. Default 6.
	MaxAttempts int
	// RetryBackoff is the wait before the first retry, doubled for each
	// further one up to MaxBackoff. Default 2 s.
	RetryBackoff time.Duration
	// MaxBackoff caps the wait between retries. Default 1 h.
	MaxBackoff time.Duration

	// BatchSize bounds how many schedules one Fire (or Due) runs; more due
	// ones run in the next alarm, set to fire at once. Default 100.
	BatchSize int

	// Other, if set, returns the class's own next wake-up time, if it has
	// one: Arm sets the object's alarm to the earlier of it and the
	// earliest schedule. It runs inside the turn with the same State.
	Other func(st *cairn.State) (time.Time, bool, error)
}

// New returns a Scheduler with the defaults set.
func New() *Scheduler {
	return &Scheduler{
		Table:           "_schedules",
		MaxPayloadBytes: 64 << 10,
		MaxSchedules:    10000,
		MaxAttempts:     6,
		RetryBackoff:    2 * time.Second,
		MaxBackoff:      time.Hour,
		BatchSize:       100,
	}
}

// Type is the kind of a schedule. Its values are those of the Cloudflare
// Agents SDK's Schedule type.
type Type string

// The kinds of schedule.
const (
	TypeDelayed   Type = "delayed"   // After: once, after a delay
	TypeScheduled Type = "scheduled" // At: once, at a time
	TypeCron      Type = "cron"      // Cron: at each match of an expression
)

// When says when a schedule fires: After, At or Cron. The zero When is
// invalid.
type When struct {
	typ   Type
	delay time.Duration
	at    time.Time
	cron  string
	tz    string
}

// After fires once, d after the schedule is added. d must not be negative.
func After(d time.Duration) When { return When{typ: TypeDelayed, delay: d} }

// At fires once at t; a past t fires as soon as possible.
func At(t time.Time) When { return When{typ: TypeScheduled, at: t} }

// Cron fires at each time expr matches in the time zone named tz (IANA,
// e.g. "America/New_York"; "" is UTC). See the package comment for the
// syntax.
func Cron(expr, tz string) When { return When{typ: TypeCron, cron: expr, tz: tz} }

// Type returns the kind of w.
func (w When) Type() Type { return w.typ }

// String describes w, for messages.
func (w When) String() string {
	switch w.typ {
	case TypeDelayed:
		return "after " + w.delay.String()
	case TypeScheduled:
		return "at " + w.at.Format(time.RFC3339Nano)
	case TypeCron:
		if w.tz == "" {
			return "cron " + w.cron
		}
		return "cron " + w.cron + " (" + w.tz + ")"
	}
	return "never"
}

// Next returns when a schedule of w added at now first fires: now plus the
// delay, the time given, or the cron expression's first match strictly
// after now. Times are rounded up to the millisecond. It returns an Invalid
// *cairn.Error for an invalid w.
func (w When) Next(now time.Time) (time.Time, error) {
	switch w.typ {
	case TypeDelayed:
		if w.delay < 0 {
			return time.Time{}, cairn.Errorf(cairn.Invalid, "delay %v is negative", w.delay)
		}
		return ceilMilli(now.Add(w.delay)), nil
	case TypeScheduled:
		if w.at.IsZero() {
			return time.Time{}, cairn.Errorf(cairn.Invalid, "schedule time must be set")
		}
		return ceilMilli(w.at), nil
	case TypeCron:
		c, err := parseCron(w.cron, w.tz)
		if err != nil {
			return time.Time{}, err
		}
		next := c.Next(now)
		if next.IsZero() {
			return time.Time{}, cairn.Errorf(cairn.Invalid, "cron expression %q matches no time in the next five years", w.cron)
		}
		return ceilMilli(next), nil
	}
	return time.Time{}, cairn.Errorf(cairn.Invalid, "schedule needs a time: After, At or Cron")
}

// Spec is what Add needs to make a schedule.
type Spec struct {
	// ID names the schedule: 1-128 bytes of UTF-8 without control
	// characters. "" gets a random ID. Adding an ID that exists replaces
	// that schedule (so a class can declare its recurring schedules on
	// every start without duplicating them).
	ID string
	// When says when it fires.
	When When
	// Callback is for the class to dispatch on (a method name, say): at
	// most 256 bytes of UTF-8. May be empty.
	Callback string
	// Payload is passed back to the callback: valid JSON of at most
	// MaxPayloadBytes once compacted. nil means null.
	Payload json.RawMessage
}

// Schedule is a stored schedule.
type Schedule struct {
	ID       string
	Callback string
	Payload  json.RawMessage // compacted JSON
	Type     Type
	Delay    time.Duration // TypeDelayed: the delay it was added with
	Cron     string        // TypeCron: the expression
	TZ       string        // TypeCron: the time zone, "" for UTC

	// Time is when it fires next: its time, its next cron match or, after
	// a failure, its retry. For a Failed schedule, when it last failed.
	Time    time.Time
	Created time.Time // when it was added

	Runs      int64  // successful runs
	Attempts  int    // failed attempts of the current run
	Failures  int64  // runs given up after MaxAttempts
	LastError string // the last failure's error, "" after a success
	Failed    bool   // a one-shot schedule that gave up; it will not fire

	token int64 // changes whenever the row does; Complete checks it
}

// When describes s as a When: After(Delay), Cron(Cron, TZ) or At(Time).
func (s Schedule) When() When {
	switch s.Type {
	case TypeDelayed:
		return After(s.Delay)
	case TypeCron:
		return Cron(s.Cron, s.TZ)
	}
	return At(s.Time)
}

const (
	maxIDBytes       = 128
	maxCallbackBytes = 256
	maxErrorBytes    = 1024
)

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// table returns the table name, checked, for use in SQL text.
func (s *Scheduler) table() (string, error) {
	t := s.Table
	if !tableName.MatchString(t) || strings.HasPrefix(strings.ToLower(t), "_cairn_") {
		return "", cairn.Errorf(cairn.Invalid, "schedule table name %q is not allowed", t)
	}
	return t, nil
}

// Migration returns the migration that creates the schedules table, to
// append to the class's Migrations (once; see the package comment).
// It panics if Table is not a valid name: that is a bug in the class.
func (s *Scheduler) Migration() cairn.Migration {
	t, err := s.table()
	if err != nil {
		panic(err)
	}
	return cairn.Migration{SQL: fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id TEXT PRIMARY KEY,
	callback TEXT NOT NULL,
	payload TEXT NOT NULL,
	type TEXT NOT NULL,
	delay_ms INTEGER NOT NULL DEFAULT 0,
	cron TEXT NOT NULL DEFAULT '',
	tz TEXT NOT NULL DEFAULT '',
	next_at INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	runs INTEGER NOT NULL DEFAULT 0,
	attempts INTEGER NOT NULL DEFAULT 0,
	failures INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	failed INTEGER NOT NULL DEFAULT 0,
	token INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS %[1]s_due ON %[1]s (failed, next_at);
`, t)}
}

const columns = `id, callback, payload, type, delay_ms, cron, tz, next_at, created_at, runs, attempts, failures, last_error, failed, token`

// Add stores a schedule and sets the object's alarm if it fires first.
// Errors: Invalid for a bad Spec (or Table), TooLarge for a payload over
// MaxPayloadBytes or an object already holding MaxSchedules.
func (s *Scheduler) Add(st *cairn.State, spec Spec) (Schedule, error) {
	t, err := s.table()
	if err != nil {
		return Schedule{}, err
	}
	id := spec.ID
	if id == "" {
		id = newID()
	} else if err := checkText("schedule ID", id, maxIDBytes); err != nil {
		return Schedule{}, err
	}
	if err := checkText("callback", spec.Callback, maxCallbackBytes); err != nil {
		return Schedule{}, err
	}
	payload, err := s.payload(spec.Payload)
	if err != nil {
		return Schedule{}, err
	}
	now := st.Now()
	next, err := spec.When.Next(now)
	if err != nil {
		return Schedule{}, err
	}
	rows, err := st.Query(fmt.Sprintf(`SELECT COUNT(*), COALESCE(SUM(id = ?), 0) FROM %s`, t), id)
	if err != nil {
		return Schedule{}, fmt.Errorf("add schedule: %w", err)
	}
	if n, exists := i64(rows.Values[0][0]), i64(rows.Values[0][1]); exists == 0 && n >= int64(s.MaxSchedules) {
		return Schedule{}, cairn.Errorf(cairn.TooLarge, "the object has %d schedules; the limit is %d", n, s.MaxSchedules)
	}
	w := spec.When
	sc := Schedule{
		ID:       id,
		Callback: spec.Callback,
		Payload:  payload,
		Type:     w.typ,
		Time:     next,
		Created:  time.UnixMilli(now.UnixMilli()),
		token:    mrand.Int64(),
	}
	switch w.typ {
	case TypeDelayed:
		sc.Delay = w.delay
	case TypeCron:
		sc.Cron, sc.TZ = w.cron, w.tz
	}
	if _, err := st.Exec(fmt.Sprintf(`INSERT OR REPLACE INTO %s (`+columns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, '', 0, ?)`, t),
		sc.ID, sc.Callback, string(sc.Payload), string(sc.Type), sc.Delay.Milliseconds(), sc.Cron, sc.TZ,
		sc.Time.UnixMilli(), sc.Created.UnixMilli(), sc.token); err != nil {
		return Schedule{}, fmt.Errorf("add schedule: %w", err)
	}
	if err := s.Arm(st); err != nil {
		return Schedule{}, err
	}
	return sc, nil
}

// Get returns the schedule with the given ID, or a NotFound error.
func (s *Scheduler) Get(st *cairn.State, id string) (Schedule, error) {
	t, err := s.table()
	if err != nil {
		return Schedule{}, err
	}
	rows, err := st.Query(fmt.Sprintf(`SELECT `+columns+` FROM %s WHERE id = ?`, t), id)
	if err != nil {
		return Schedule{}, fmt.Errorf("get schedule: %w", err)
	}
	if len(rows.Values) == 0 {
		return Schedule{}, cairn.Errorf(cairn.NotFound, "no schedule %q", id)
	}
	return scan(rows.Values[0]), nil
}

// List returns the object's schedules, failed ones included, in the order
// they fire (by Time, then ID).
func (s *Scheduler) List(st *cairn.State) ([]Schedule, error) {
	t, err := s.table()
	if err != nil {
		return nil, err
	}
	rows, err := st.Query(fmt.Sprintf(`SELECT `+columns+` FROM %s ORDER BY next_at, id`, t))
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	out := make([]Schedule, 0, len(rows.Values))
	for _, r := range rows.Values {
		out = append(out, scan(r))
	}
	return out, nil
}

// Cancel deletes the schedule with the given ID, reports whether it
// existed, and re-arms the object's alarm.
func (s *Scheduler) Cancel(st *cairn.State, id string) (bool, error) {
	t, err := s.table()
	if err != nil {
		return false, err
	}
	r, err := st.Exec(fmt.Sprintf(`DELETE FROM %s WHERE id = ?`, t), id)
	if err != nil {
		return false, fmt.Errorf("cancel schedule: %w", err)
	}
	if r.RowsWritten == 0 {
		return false, nil
	}
	return true, s.Arm(st)
}

// payload checks and compacts a payload.
func (s *Scheduler) payload(p json.RawMessage) (json.RawMessage, error) {
	if p == nil {
		return json.RawMessage("null"), nil
	}
	// Checked before and after compaction: no work for a huge input, and
	// the limit applies to what is stored.
	if len(p) > 4*s.MaxPayloadBytes+1024 {
		return nil, cairn.Errorf(cairn.TooLarge, "payload of %d bytes; the limit is %d", len(p), s.MaxPayloadBytes)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "payload is not valid JSON: %v", err)
	}
	if b.Len() > s.MaxPayloadBytes {
		return nil, cairn.Errorf(cairn.TooLarge, "payload of %d bytes; the limit is %d", b.Len(), s.MaxPayloadBytes)
	}
	return json.RawMessage(b.Bytes()), nil
}

// checkText checks an ID or callback name.
func checkText(what, v string, max int) error {
	if len(v) > max {
		return cairn.Errorf(cairn.TooLarge, "%s of %d bytes; the limit is %d", what, len(v), max)
	}
	if !utf8.ValidString(v) {
		return cairn.Errorf(cairn.Invalid, "%s is not valid UTF-8", what)
	}
	if strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return cairn.Errorf(cairn.Invalid, "%s contains a control character", what)
	}
	return nil
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ceilMilli rounds t up to the millisecond, the resolution of the table, so
// that a schedule never fires before the time it was given.
func ceilMilli(t time.Time) time.Time {
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return time.UnixMilli(ms)
}

func scan(r []any) Schedule {
	return Schedule{
		ID:        str(r[0]),
		Callback:  str(r[1]),
		Payload:   json.RawMessage(str(r[2])),
		Type:      Type(str(r[3])),
		Delay:     time.Duration(i64(r[4])) * time.Millisecond,
		Cron:      str(r[5]),
		TZ:        str(r[6]),
		Time:      time.UnixMilli(i64(r[7])),
		Created:   time.UnixMilli(i64(r[8])),
		Runs:      i64(r[9]),
		Attempts:  int(i64(r[10])),
		Failures:  i64(r[11]),
		LastError: str(r[12]),
		Failed:    i64(r[13]) != 0,
		token:     i64(r[14]),
	}
}

func i64(v any) int64 {
	switch v := v.(type) {
	case int64:
		return v
	case float64:
		return int64(v)
	}
	return 0
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
