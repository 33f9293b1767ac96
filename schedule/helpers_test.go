package schedule_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
	"github.com/cairn-dev/cairn/sqlite"
)

// slack is how late a schedule may fire in these tests: the runtime
// delivers an alarm within milliseconds on an idle machine, and looks at
// its clock at least once a second; the rest is room for loaded CI.
const slack = 2 * time.Second

// clock is a runtime clock the test moves: it runs with real time from
// base, plus whatever Advance added.
type clock struct {
	mu     sync.Mutex
	base   time.Time
	start  time.Time
	offset time.Duration
}

func newClock(base time.Time) *clock { return &clock{base: base, start: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.Add(time.Since(c.start) + c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// firing is one run of a callback, as the callback saw it.
type firing struct {
	s   schedule.Schedule
	now time.Time // the runtime's clock during the run
}

// harness is a class whose alarm fires its schedules. Its callbacks
// record each run in memory and in the object's table "fired"; run, if
// set, decides the callback's outcome.
type harness struct {
	dir   string
	clock *clock
	sched *schedule.Scheduler
	tune  func(rt *cairn.Runtime)
	// run is called in each callback, inside the object's turn; its error
	// is the callback's.
	run func(st *cairn.State, s schedule.Schedule) error
	// release, if set, makes the alarm handler use Due and Complete and run
	// each callback's release func with the turn released.
	release func(ctx context.Context, s schedule.Schedule) error
	// handled receives after each alarm handled with release set.
	handled chan struct{}

	mu    sync.Mutex
	fired []firing
}

func newHarness(tb testing.TB, clk *clock) *harness {
	tb.Helper()
	if clk == nil {
		clk = &clock{start: time.Now(), base: time.Now()}
	}
	s := schedule.New()
	s.RetryBackoff = 20 * time.Millisecond
	s.MaxAttempts = 3
	return &harness{dir: tb.TempDir(), clock: clk, sched: s, handled: make(chan struct{}, 100)}
}

type bot struct {
	h  *harness
	st *cairn.State
}

func (b *bot) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
	if b.h.release == nil {
		_, err := b.h.sched.Fire(b.st, b.callback)
		return err
	}
	due, err := b.h.sched.Due(b.st)
	if err != nil {
		return err
	}
	for _, s := range due {
		runErr := b.callback(s)
		if runErr == nil {
			runErr = b.st.Release(func(ctx context.Context) error { return b.h.release(ctx, s) })
		}
		if err := b.h.sched.Complete(b.st, s, runErr); err != nil {
			return err
		}
	}
	b.h.handled <- struct{}{}
	return nil
}

func (b *bot) callback(s schedule.Schedule) error {
	b.h.mu.Lock()
	b.h.fired = append(b.h.fired, firing{s, b.st.Now()})
	b.h.mu.Unlock()
	if _, err := b.st.Exec(`INSERT INTO fired (id, attempt, at) VALUES (?, ?, ?)`, s.ID, s.Attempts, s.Time.UnixMilli()); err != nil {
		return err
	}
	if b.h.run != nil {
		return b.h.run(b.st, s)
	}
	return nil
}

// open starts a runtime on the harness's directory; the test's cleanup
// closes it unless the test did.
func (h *harness) open(tb testing.TB) *cairn.Runtime {
	tb.Helper()
	eng, err := sqlite.Open(h.dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	rt.Now = h.clock.Now
	rt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	rt.AlarmBackoff = 10 * time.Millisecond
	if h.tune != nil {
		h.tune(rt)
	}
	_, err = rt.Register("bot", cairn.Class{
		New: func(st *cairn.State) (any, error) { return &bot{h: h, st: st}, nil },
		Migrations: []cairn.Migration{
			{SQL: `CREATE TABLE fired (id TEXT NOT NULL, attempt INTEGER NOT NULL, at INTEGER NOT NULL)`},
			h.sched.Migration(),
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { closeRuntime(tb, rt) })
	return rt
}

func closeRuntime(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Errorf("close runtime: %v", err)
	}
}

// in runs fn in a turn of the object name.
func in(tb testing.TB, rt *cairn.Runtime, name string, fn func(st *cairn.State) error) {
	tb.Helper()
	if err := try(rt, name, fn); err != nil {
		tb.Fatalf("turn of %q: %v", name, err)
	}
}

func try(rt *cairn.Runtime, name string, fn func(st *cairn.State) error) error {
	ns, err := rt.Namespace("bot")
	if err != nil {
		return err
	}
	stub, err := ns.GetByName(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return stub.Run(ctx, func(ctx context.Context, st *cairn.State) error { return fn(st) })
}

func (h *harness) add(tb testing.TB, rt *cairn.Runtime, name string, spec schedule.Spec) schedule.Schedule {
	tb.Helper()
	var s schedule.Schedule
	in(tb, rt, name, func(st *cairn.State) error {
		var err error
		s, err = h.sched.Add(st, spec)
		return err
	})
	return s
}

func (h *harness) list(tb testing.TB, rt *cairn.Runtime, name string) []schedule.Schedule {
	tb.Helper()
	var out []schedule.Schedule
	in(tb, rt, name, func(st *cairn.State) error {
		var err error
		out, err = h.sched.List(st)
		return err
	})
	return out
}

// alarm returns the object's alarm.
func alarm(tb testing.TB, rt *cairn.Runtime, name string) (time.Time, bool) {
	tb.Helper()
	var at time.Time
	var ok bool
	in(tb, rt, name, func(st *cairn.State) error {
		var err error
		at, ok, err = st.Alarm()
		return err
	})
	return at, ok
}

// firedRows returns the rows callbacks wrote and kept, as "id/attempt".
func firedRows(tb testing.TB, rt *cairn.Runtime, name string) []string {
	tb.Helper()
	var out []string
	in(tb, rt, name, func(st *cairn.State) error {
		rows, err := st.Query(`SELECT id, attempt FROM fired ORDER BY rowid`)
		if err != nil {
			return err
		}
		for _, r := range rows.Values {
			out = append(out, fmt.Sprintf("%v/%v", r[0], r[1]))
		}
		return nil
	})
	return out
}

// firings returns the runs of schedule id so far.
func (h *harness) firings(id string) []firing {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []firing
	for _, f := range h.fired {
		if f.s.ID == id {
			out = append(out, f)
		}
	}
	return out
}

// wait waits until schedule id ran at least n times and returns its runs.
func (h *harness) wait(tb testing.TB, id string, n int) []firing {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("%d runs of %q", n, id), func() bool { return len(h.firings(id)) >= n })
	return h.firings(id)
}

// onTime checks that a run came no earlier than its time and within slack.
func onTime(tb testing.TB, f firing) {
	tb.Helper()
	if f.now.Before(f.s.Time) {
		tb.Errorf("%q ran at %v, before its time %v", f.s.ID, f.now, f.s.Time)
	}
	if late := f.now.Sub(f.s.Time); late > slack {
		tb.Errorf("%q ran %v late; the slack is %v", f.s.ID, late, slack)
	}
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }
