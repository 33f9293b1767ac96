package cairn_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// The tests of this file prove G7: one alarm per object, delivered at least
// once, after eviction and restart too, retried with exponential backoff.

// alarmLog records alarm deliveries, per object name.
type alarmLog struct {
	mu  sync.Mutex
	got map[string][]alarmDelivery
}

type alarmDelivery struct {
	info cairn.AlarmInfo
	now  time.Time // the runtime's clock at delivery
}

func (l *alarmLog) record(st *cairn.State, a cairn.AlarmInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got == nil {
		l.got = make(map[string][]alarmDelivery)
	}
	l.got[st.Name()] = append(l.got[st.Name()], alarmDelivery{a, st.Now()})
}

func (l *alarmLog) of(name string) []alarmDelivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]alarmDelivery(nil), l.got[name]...)
}

// wait waits until name had at least n deliveries and returns them.
func (l *alarmLog) wait(tb testing.TB, name string, n int) []alarmDelivery {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("%d alarm deliveries to %q", n, name), func() bool { return len(l.of(name)) >= n })
	return l.of(name)
}

func fastAlarms(rt *cairn.Runtime) {
	rt.AlarmBackoff = 10 * time.Millisecond
	rt.AlarmRetries = 3
}

// setAlarm sets the object's alarm at at.
func setAlarm(tb testing.TB, s *cairn.Stub, at time.Time) {
	tb.Helper()
	runIn(tb, s, func(ctx context.Context, st *cairn.State) error { return st.SetAlarm(at) })
}

// alarmOf returns the object's alarm.
func alarmOf(tb testing.TB, s *cairn.Stub) (time.Time, bool) {
	tb.Helper()
	var at time.Time
	var ok bool
	runIn(tb, s, func(ctx context.Context, st *cairn.State) error {
		var err error
		at, ok, err = st.Alarm()
		return err
	})
	return at, ok
}

func TestAlarmFires(t *testing.T) {
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		return st.Put("fired", []byte(a.Scheduled.UTC().Format(time.RFC3339Nano)))
	}}
	rt, ns := newTestRuntime(t, c, fastAlarms)
	for _, tc := range []struct {
		name string
		in   time.Duration
	}{
		{"past", -time.Second},
		{"now", 0},
		{"near future", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stubFor(t, ns, tc.name)
			at := rt.Now().Add(tc.in)
			setAlarm(t, s, at)
			d := log.wait(t, tc.name, 1)[0]
			if d.info.RetryCount != 0 {
				t.Errorf("RetryCount: got %d, want 0", d.info.RetryCount)
			}
			if !d.info.Scheduled.Equal(at) {
				t.Errorf("Scheduled: got %v, want %v", d.info.Scheduled, at)
			}
			if d.now.Before(at) {
				t.Errorf("delivered at %v, before its time %v", d.now, at)
			}
			// The handler's write commits; the fired alarm is gone.
			waitFor(t, "the handler's write", func() bool { _, ok := kvGet(t, s, "fired"); return ok })
			wantKV(t, s, "fired", at.UTC().Format(time.RFC3339Nano))
			if at, ok := alarmOf(t, s); ok {
				t.Errorf("alarm still set at %v after it fired", at)
			}
			if got := len(log.of(tc.name)); got != 1 {
				t.Errorf("%d deliveries, want 1", got)
			}
		})
	}
	if got := rt.Stats().AlarmsFired; got < 3 {
		t.Errorf("Stats().AlarmsFired = %d, want at least 3", got)
	}
}

func TestAlarmRetries(t *testing.T) {
	var log alarmLog
	errFail := errors.New("handler failed")
	// failures is how many times each object's handler fails before
	// succeeding; "panic" panics instead of returning an error.
	failures := map[string]int{"always": 1 << 30, "twice": 2, "panic": 1}
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		if err := st.Put("attempt-"+strconv.Itoa(a.RetryCount), []byte("1")); err != nil {
			return err
		}
		if a.RetryCount < failures[st.Name()] {
			if st.Name() == "panic" {
				panic("alarm handler panicked")
			}
			return errFail
		}
		return nil
	}}
	rt, ns := newTestRuntime(t, c, fastAlarms)
	const retries = 3 // fastAlarms

	t.Run("gives up after AlarmRetries", func(t *testing.T) {
		s := stubFor(t, ns, "always")
		failed := rt.Stats().AlarmsFailed
		setAlarm(t, s, rt.Now())
		ds := log.wait(t, "always", retries+1)
		waitFor(t, "the alarm to be dropped", func() bool { _, ok := alarmOf(t, s); return !ok })
		ds = log.of("always")
		if len(ds) != retries+1 {
			t.Errorf("%d deliveries, want %d (the first and %d retries)", len(ds), retries+1, retries)
		}
		for i, d := range ds {
			if d.info.RetryCount != i {
				t.Errorf("delivery %d: RetryCount %d, want %d", i, d.info.RetryCount, i)
			}
			if i > 0 {
				// Exponential backoff: each retry waits at least twice as
				// long as the one before.
				min := 10 * time.Millisecond << (i - 1)
				if gap := d.info.Scheduled.Sub(ds[i-1].info.Scheduled); gap < min {
					t.Errorf("retry %d scheduled %v after the previous delivery, want at least %v", i, gap, min)
				}
				if d.now.Before(d.info.Scheduled) {
					t.Errorf("retry %d delivered at %v, before its time %v", i, d.now, d.info.Scheduled)
				}
			}
		}
		var keys []string
		mustCall(t, s, "keys", nil, &keys)
		if len(keys) != 0 {
			t.Errorf("failed handlers' writes were kept: %q", keys)
		}
		if got := rt.Stats().AlarmsFailed - failed; got != retries+1 {
			t.Errorf("Stats().AlarmsFailed grew by %d, want %d", got, retries+1)
		}
	})
	t.Run("succeeds on a retry", func(t *testing.T) {
		s := stubFor(t, ns, "twice")
		setAlarm(t, s, rt.Now())
		ds := log.wait(t, "twice", 3)
		waitFor(t, "the successful handler's write", func() bool { _, ok := kvGet(t, s, "attempt-2"); return ok })
		wantNoKV(t, s, "attempt-0")
		wantNoKV(t, s, "attempt-1")
		if at, ok := alarmOf(t, s); ok {
			t.Errorf("alarm still set at %v after a successful retry", at)
		}
		if got := len(log.of("twice")); got != 3 || ds[2].info.RetryCount != 2 {
			t.Errorf("got %d deliveries (last RetryCount %d), want 3 (last 2)", got, ds[len(ds)-1].info.RetryCount)
		}
	})
	t.Run("panicking handler is retried", func(t *testing.T) {
		s := stubFor(t, ns, "panic")
		setAlarm(t, s, rt.Now())
		ds := log.wait(t, "panic", 2)
		if ds[1].info.RetryCount != 1 {
			t.Errorf("retry after a panic: RetryCount %d, want 1", ds[1].info.RetryCount)
		}
		waitFor(t, "the retry's write", func() bool { _, ok := kvGet(t, s, "attempt-1"); return ok })
		wantNoKV(t, s, "attempt-0")
	})
}

func TestAlarmAfterEviction(t *testing.T) {
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		return nil
	}}
	clk := &testClock{}
	rt, ns := newTestRuntime(t, c, func(rt *cairn.Runtime) {
		withClock(clk)(rt)
		fastAlarms(rt)
	})
	s := stubFor(t, ns, "sleeper")
	at := clk.Now().Add(3 * time.Hour)
	setAlarm(t, s, at)
	evictAll(t, rt, clk, s)
	clk.Advance(3 * time.Hour)
	d := log.wait(t, "sleeper", 1)[0]
	if d.info.RetryCount != 0 || !d.info.Scheduled.Equal(at) {
		t.Errorf("got %+v, want RetryCount 0 and Scheduled %v", d.info, at)
	}
	if got := c.news.Load(); got != 2 {
		t.Errorf("New called %d times, want 2 (the alarm activated the evicted object)", got)
	}
}

func TestAlarmAfterRestart(t *testing.T) {
	dir := t.TempDir()
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		return st.Put("fired", []byte("1"))
	}}
	// The first runtime's clock runs an hour late: the alarm is not due for
	// it, and is due for the second.
	late := &testClock{}
	late.Advance(-time.Hour)
	rt, ns := newTestRuntimeAt(t, dir, cairn.Disk, c, func(rt *cairn.Runtime) { rt.Now = late.Now })
	s := stubFor(t, ns, "restarted")
	at := time.Now()
	setAlarm(t, s, at)
	closeNow(t, rt)
	if got := len(log.of("restarted")); got != 0 {
		t.Fatalf("the alarm fired %d times before it was due", got)
	}

	_, ns = newTestRuntimeAt(t, dir, cairn.Disk, c, fastAlarms)
	d := log.wait(t, "restarted", 1)[0]
	if d.info.RetryCount != 0 || !d.info.Scheduled.Equal(at) {
		t.Errorf("got %+v, want RetryCount 0 and Scheduled %v", d.info, at)
	}
	s = stubFor(t, ns, "restarted")
	waitFor(t, "the handler's write", func() bool { _, ok := kvGet(t, s, "fired"); return ok })
}

func TestDeleteAndReplaceAlarm(t *testing.T) {
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		return nil
	}}
	clk := &testClock{}
	rt, ns := newTestRuntime(t, c, func(rt *cairn.Runtime) {
		withClock(clk)(rt)
		fastAlarms(rt)
	})
	base := clk.Now()
	deleted, later, earlier, witness := stubFor(t, ns, "deleted"), stubFor(t, ns, "later"), stubFor(t, ns, "earlier"), stubFor(t, ns, "witness")
	setAlarm(t, deleted, base.Add(time.Minute))
	mustCall(t, deleted, "deleteAlarm", nil, nil)
	setAlarm(t, later, base.Add(time.Minute))
	setAlarm(t, later, base.Add(3*time.Minute)) // one alarm: this replaces the first
	setAlarm(t, earlier, base.Add(3*time.Minute))
	setAlarm(t, earlier, base.Add(time.Minute))
	setAlarm(t, witness, base.Add(2*time.Minute))

	info, err := rt.Engine().Object(context.Background(), testNS, deleted.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !info.Alarm.IsZero() {
		t.Errorf("catalog indexes the deleted alarm at %v", info.Alarm)
	}
	if at, ok := alarmOf(t, deleted); ok {
		t.Errorf("deleted alarm still set at %v", at)
	}

	clk.Advance(2*time.Minute + time.Second)
	log.wait(t, "witness", 1)
	d := log.wait(t, "earlier", 1)[0]
	if !d.info.Scheduled.Equal(base.Add(time.Minute)) {
		t.Errorf("earlier: Scheduled %v, want %v", d.info.Scheduled, base.Add(time.Minute))
	}
	if got := log.of("later"); len(got) != 0 {
		t.Errorf("later fired %d times before its new time", len(got))
	}
	clk.Advance(2 * time.Minute)
	d = log.wait(t, "later", 1)[0]
	if !d.info.Scheduled.Equal(base.Add(3 * time.Minute)) {
		t.Errorf("later: Scheduled %v, want %v", d.info.Scheduled, base.Add(3*time.Minute))
	}
	closeNow(t, rt) // waits for deliveries in flight
	for name, want := range map[string]int{"deleted": 0, "later": 1, "earlier": 1, "witness": 1} {
		if got := len(log.of(name)); got != want {
			t.Errorf("%s: %d deliveries, want %d", name, got, want)
		}
	}
}

func TestAlarmHandlerSetsAlarm(t *testing.T) {
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		n := len(log.of(st.Name()))
		if err := st.Put("count", []byte(strconv.Itoa(n))); err != nil {
			return err
		}
		switch st.Name() {
		case "recurring":
			if n < 3 {
				return st.SetAlarm(st.Now()) // again, right away
			}
		case "rescheduling":
			return st.SetAlarm(st.Now().Add(time.Hour))
		}
		return nil
	}}
	rt, ns := newTestRuntime(t, c, fastAlarms)

	t.Run("recurring", func(t *testing.T) {
		s := stubFor(t, ns, "recurring")
		setAlarm(t, s, rt.Now())
		log.wait(t, "recurring", 3)
		waitFor(t, "the third delivery's write", func() bool { v, _ := kvGet(t, s, "count"); return v == "3" })
		if at, ok := alarmOf(t, s); ok {
			t.Errorf("alarm still set at %v after the last delivery", at)
		}
		for i, d := range log.of("recurring") {
			if d.info.RetryCount != 0 {
				t.Errorf("delivery %d: RetryCount %d, want 0", i, d.info.RetryCount)
			}
		}
	})
	t.Run("new alarm is kept", func(t *testing.T) {
		s := stubFor(t, ns, "rescheduling")
		setAlarm(t, s, rt.Now())
		d := log.wait(t, "rescheduling", 1)[0]
		var at time.Time
		var ok bool
		waitFor(t, "the new alarm", func() bool { at, ok = alarmOf(t, s); return ok })
		// The handler set it an hour after its own clock reading, which
		// follows the one recorded at delivery.
		if lo := d.now.Add(time.Hour); at.Before(lo) || at.After(lo.Add(time.Minute)) {
			t.Errorf("alarm set by the handler: got %v, want about %v", at, lo)
		}
		info, err := rt.Engine().Object(context.Background(), testNS, s.ID())
		if err != nil {
			t.Fatal(err)
		}
		if info.Alarm.IsZero() || info.Alarm.After(at) {
			t.Errorf("catalog indexes the alarm at %v, want at or before %v", info.Alarm, at)
		}
	})
}
