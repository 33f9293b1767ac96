package schedule_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the cron tests name zones; do not depend on the host's

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
)

func TestOneShotFires(t *testing.T) {
	h := newHarness(t, nil)
	rt := h.open(t)
	now := rt.Now()
	for _, tc := range []struct {
		id   string
		when schedule.When
	}{
		{"after", schedule.After(200 * time.Millisecond)},
		{"after-zero", schedule.After(0)},
		{"at", schedule.At(now.Add(300 * time.Millisecond))},
		{"at-past", schedule.At(now.Add(-time.Hour))}, // fires as soon as possible
	} {
		h.add(t, rt, "o", schedule.Spec{ID: tc.id, When: tc.when, Callback: "cb-" + tc.id, Payload: raw(`{"n": 1}`)})
	}
	for _, id := range []string{"after", "after-zero", "at", "at-past"} {
		f := h.wait(t, id, 1)[0]
		if id == "at-past" {
			if late := f.now.Sub(now); late > slack {
				t.Errorf("a time in the past ran %v after it was added; the slack is %v", late, slack)
			}
		} else {
			onTime(t, f)
		}
		if f.s.Callback != "cb-"+id || string(f.s.Payload) != `{"n":1}` {
			t.Errorf("%s: callback %q payload %s, want %q and the compacted payload", id, f.s.Callback, f.s.Payload, "cb-"+id)
		}
	}
	if got, want := h.firings("at")[0].s.Time, now.Add(300*time.Millisecond); got.Before(want) || got.Sub(want) >= time.Millisecond {
		t.Errorf("At schedule's time %v, want %v rounded up to the millisecond", got, want)
	}
	// One-shot schedules are gone once run; their writes stay; no alarm is
	// left behind.
	waitFor(t, "the one-shot schedules to be deleted", func() bool { return len(h.list(t, rt, "o")) == 0 })
	if got := firedRows(t, rt, "o"); len(got) != 4 {
		t.Errorf("rows written by callbacks: %q, want 4", got)
	}
	if at, ok := alarm(t, rt, "o"); ok {
		t.Errorf("alarm left set at %v with no schedules", at)
	}
	for _, id := range []string{"after", "after-zero", "at", "at-past"} {
		if n := len(h.firings(id)); n != 1 {
			t.Errorf("%s ran %d times, want 1", id, n)
		}
	}
}

func TestCronWithInjectedClock(t *testing.T) {
	// 09:59:59 in Paris (UTC+1 before DST starts on 30 March 2031).
	base := time.Date(2031, 3, 14, 8, 59, 59, 0, time.UTC)
	clk := newClock(base)
	h := newHarness(t, clk)
	rt := h.open(t)
	s := h.add(t, rt, "c", schedule.Spec{ID: "ten", When: schedule.Cron("0 10 * * *", "Europe/Paris"), Callback: "daily"})
	want1 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	if !s.Time.Equal(want1) {
		t.Fatalf("first time %v, want %v", s.Time.UTC(), want1)
	}
	f := h.wait(t, "ten", 1)[0]
	onTime(t, f)
	if !f.s.Time.Equal(want1) {
		t.Errorf("first run for %v, want %v", f.s.Time.UTC(), want1)
	}
	want2 := want1.Add(24 * time.Hour)
	waitFor(t, "the cron schedule to move to its next time", func() bool {
		l := h.list(t, rt, "c")
		return len(l) == 1 && l[0].Time.Equal(want2) && l[0].Runs == 1
	})
	if at, ok := alarm(t, rt, "c"); !ok || !at.Equal(want2) {
		t.Errorf("alarm %v (set %v), want %v", at, ok, want2)
	}
	// A day later (less a second): the next run. After DST starts, 10:00
	// in Paris is 08:00 UTC.
	clk.Advance(want2.Sub(rt.Now()) - time.Second)
	f = h.wait(t, "ten", 2)[1]
	onTime(t, f)
	if !f.s.Time.Equal(want2) {
		t.Errorf("second run for %v, want %v", f.s.Time.UTC(), want2)
	}
	clk.Advance(30 * 24 * time.Hour) // 14 April: missed runs are not made up
	f = h.wait(t, "ten", 3)[2]
	waitFor(t, "the schedule after the jump", func() bool {
		l := h.list(t, rt, "c")
		return len(l) == 1 && l[0].Runs == 3
	})
	l := h.list(t, rt, "c")
	want4 := time.Date(2031, 4, 15, 8, 0, 0, 0, time.UTC)
	if !l[0].Time.Equal(want4) {
		t.Errorf("next time after the jump %v, want %v (10:00 CEST)", l[0].Time.UTC(), want4)
	}
	if n := len(h.firings("ten")); n != 3 {
		t.Errorf("%d runs, want 3: the month of missed runs runs once", n)
	}
}

func TestCronEverySecond(t *testing.T) {
	h := newHarness(t, nil)
	rt := h.open(t)
	h.add(t, rt, "s", schedule.Spec{ID: "tick", When: schedule.Cron("*/1 * * * * *", "")})
	fs := h.wait(t, "tick", 3)
	for i, f := range fs[:3] {
		onTime(t, f)
		if f.s.Time.Nanosecond() != 0 {
			t.Errorf("run %d for %v, want a whole second", i, f.s.Time)
		}
		if i > 0 && !f.s.Time.After(fs[i-1].s.Time) {
			t.Errorf("run %d for %v, not after run %d's %v", i, f.s.Time, i-1, fs[i-1].s.Time)
		}
	}
	in(t, rt, "s", func(st *cairn.State) error {
		ok, err := h.sched.Cancel(st, "tick")
		if err == nil && !ok {
			t.Error("Cancel of an existing schedule reported false")
		}
		return err
	})
	if l := h.list(t, rt, "s"); len(l) != 0 {
		t.Errorf("schedules after Cancel: %+v", l)
	}
	if at, ok := alarm(t, rt, "s"); ok {
		t.Errorf("alarm still set at %v after the last schedule was cancelled", at)
	}
}

func TestSurvivesRestart(t *testing.T) {
	clk := newClock(time.Date(2031, 1, 1, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, clk)
	rt := h.open(t)
	h.add(t, rt, "r", schedule.Spec{ID: "delay", When: schedule.After(time.Hour), Payload: raw(`"d"`)})
	h.add(t, rt, "r", schedule.Spec{ID: "at", When: schedule.At(clk.Now().Add(90 * time.Minute))})
	h.add(t, rt, "r", schedule.Spec{ID: "hourly", When: schedule.Cron("@hourly", "")})
	h.add(t, rt, "r", schedule.Spec{ID: "later", When: schedule.After(48 * time.Hour)})
	closeRuntime(t, rt)

	// Three hours pass while the node is down. Nobody calls the object
	// after the restart: the alarm alone wakes it.
	clk.Advance(3 * time.Hour)
	rt = h.open(t)
	for _, id := range []string{"delay", "at", "hourly"} {
		f := h.wait(t, id, 1)[0]
		if f.now.Before(f.s.Time) {
			t.Errorf("%s ran at %v, before its time %v", id, f.now, f.s.Time)
		}
	}
	if got := string(h.firings("delay")[0].s.Payload); got != `"d"` {
		t.Errorf("payload after restart %s, want %q", got, `"d"`)
	}
	waitFor(t, "the due schedules to be done", func() bool {
		l := h.list(t, rt, "r")
		return len(l) == 2 && l[0].ID == "hourly" && l[0].Runs == 1
	})
	l := h.list(t, rt, "r")
	if want := time.Date(2031, 1, 1, 16, 0, 0, 0, time.UTC); !l[0].Time.Equal(want) {
		t.Errorf("hourly's next time %v, want %v", l[0].Time.UTC(), want)
	}
	if l[1].ID != "later" {
		t.Errorf("remaining schedules %q, want hourly and later", []string{l[0].ID, l[1].ID})
	}
	if n := len(h.firings("hourly")); n != 1 {
		t.Errorf("hourly ran %d times for three missed hours, want 1", n)
	}

	// And once more: a restart with a schedule due later, still waiting.
	closeRuntime(t, rt)
	clk.Advance(time.Hour)
	rt = h.open(t)
	h.wait(t, "hourly", 2)
	if got := firedRows(t, rt, "r"); len(got) != 4 {
		t.Errorf("rows written by callbacks: %q, want 4", got)
	}
}

func TestRetries(t *testing.T) {
	h := newHarness(t, nil)
	errBoom := errors.New("boom")
	h.run = func(st *cairn.State, s schedule.Schedule) error {
		switch s.ID {
		case "flaky":
			if s.Attempts < 2 {
				return errBoom
			}
		case "bad", "bad-cron":
			return errBoom
		}
		return nil
	}
	rt := h.open(t) // MaxAttempts 3, RetryBackoff 20 ms
	h.add(t, rt, "f", schedule.Spec{ID: "flaky", When: schedule.After(0)})
	h.add(t, rt, "f", schedule.Spec{ID: "bad", When: schedule.After(0)})
	h.add(t, rt, "f", schedule.Spec{ID: "ok", When: schedule.After(0)})

	fs := h.wait(t, "flaky", 3)
	for i, f := range fs {
		if f.s.Attempts != i {
			t.Errorf("flaky run %d: Attempts %d, want %d", i, f.s.Attempts, i)
		}
		if i > 0 {
			if gap := f.s.Time.Sub(fs[i-1].now); gap < 20*time.Millisecond<<(i-1)-time.Millisecond {
				t.Errorf("retry %d scheduled %v after the failure, want the backoff %v", i, gap, 20*time.Millisecond<<(i-1))
			}
			onTime(t, f)
		}
	}
	h.wait(t, "bad", 3)
	waitFor(t, "bad to be given up", func() bool {
		l := h.list(t, rt, "f")
		return len(l) == 1 && l[0].Failed
	})
	bad := h.list(t, rt, "f")[0]
	if bad.ID != "bad" || bad.Attempts != 3 || bad.Failures != 1 || bad.LastError != "boom" {
		t.Errorf("given-up schedule: %+v, want bad with 3 attempts, 1 failure and the error", bad)
	}
	// Failed callbacks' writes were rolled back; the others' stayed.
	got := firedRows(t, rt, "f")
	slices.Sort(got)
	if want := []string{"flaky/2", "ok/0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rows kept: %q, want %q", got, want)
	}
	// A failed schedule does not fire, nor hold the alarm; Cancel removes it.
	if at, ok := alarm(t, rt, "f"); ok {
		t.Errorf("alarm set at %v for a failed schedule", at)
	}
	if n := len(h.firings("bad")); n != 3 {
		t.Errorf("bad ran %d times, want MaxAttempts = 3", n)
	}
	in(t, rt, "f", func(st *cairn.State) error {
		_, ok, err := h.sched.NextAlarm(st)
		if ok {
			t.Error("NextAlarm counts a failed schedule")
		}
		if err != nil {
			return err
		}
		ok, err = h.sched.Cancel(st, "bad")
		if !ok {
			t.Error("Cancel of a failed schedule reported false")
		}
		return err
	})

	// A cron schedule that runs out of attempts moves on to its next time.
	h.add(t, rt, "f", schedule.Spec{ID: "bad-cron", When: schedule.Cron("@every 1h", "")})
	in(t, rt, "f", func(st *cairn.State) error { // make it due now
		_, err := st.Exec(`UPDATE _schedules SET next_at = ? WHERE id = 'bad-cron'`, st.Now().UnixMilli())
		if err == nil {
			err = h.sched.Arm(st)
		}
		return err
	})
	h.wait(t, "bad-cron", 3)
	waitFor(t, "bad-cron to move on", func() bool {
		l := h.list(t, rt, "f")
		return len(l) == 1 && l[0].Failures == 1
	})
	l := h.list(t, rt, "f")[0]
	if l.Failed || l.Attempts != 0 || l.LastError != "boom" || l.Time.Before(rt.Now().Add(59*time.Minute)) {
		t.Errorf("cron after giving up a run: %+v, want it pending an hour on, attempts reset", l)
	}
}

func TestListGetCancelReplace(t *testing.T) {
	h := newHarness(t, nil)
	rt := h.open(t)
	now := rt.Now()
	b := h.add(t, rt, "l", schedule.Spec{ID: "b", When: schedule.After(2 * time.Hour), Callback: "x"})
	h.add(t, rt, "l", schedule.Spec{ID: "a", When: schedule.At(now.Add(3 * time.Hour))})
	gen := h.add(t, rt, "l", schedule.Spec{When: schedule.Cron("0 0 1 1 *", "America/New_York")})
	if len(gen.ID) != 32 {
		t.Errorf("generated ID %q, want 32 hex characters", gen.ID)
	}
	ids := func() []string {
		var out []string
		for _, s := range h.list(t, rt, "l") {
			out = append(out, s.ID)
		}
		return out
	}
	if got, want := ids(), []string{"b", "a", gen.ID}; !reflect.DeepEqual(got, want) {
		t.Errorf("List order %q, want %q (by time)", got, want)
	}
	if at, ok := alarm(t, rt, "l"); !ok || !at.Equal(b.Time) {
		t.Errorf("alarm %v (set %v), want the earliest schedule's %v", at, ok, b.Time)
	}
	in(t, rt, "l", func(st *cairn.State) error {
		got, err := h.sched.Get(st, "b")
		if err != nil {
			return err
		}
		if got.Callback != "x" || got.Type != schedule.TypeDelayed || got.Delay != 2*time.Hour || !got.Time.Equal(b.Time) || string(got.Payload) != "null" {
			t.Errorf("Get: %+v", got)
		}
		if w := got.When(); w.Type() != schedule.TypeDelayed || w.String() != "after 2h0m0s" {
			t.Errorf("When: %v", w)
		}
		if _, err := h.sched.Get(st, "nope"); cairn.ErrorCode(err) != cairn.NotFound {
			t.Errorf("Get of a missing ID: %v, want NotFound", err)
		}
		if ok, err := h.sched.Cancel(st, "nope"); ok || err != nil {
			t.Errorf("Cancel of a missing ID: %v, %v; want false, nil", ok, err)
		}
		return nil
	})
	// Adding an existing ID replaces it.
	h.add(t, rt, "l", schedule.Spec{ID: "b", When: schedule.After(4 * time.Hour), Callback: "y"})
	if got, want := ids(), []string{"a", "b", gen.ID}; !reflect.DeepEqual(got, want) {
		t.Errorf("after replacing b: %q, want %q", got, want)
	}
	in(t, rt, "l", func(st *cairn.State) error {
		ok, err := h.sched.Cancel(st, "a")
		if !ok {
			t.Error("Cancel reported false")
		}
		return err
	})
	l := h.list(t, rt, "l")
	if at, ok := alarm(t, rt, "l"); !ok || !at.Equal(l[0].Time) {
		t.Errorf("after Cancel, alarm %v (set %v), want %v", at, ok, l[0].Time)
	}
	// A turn that fails adds nothing.
	err := try(rt, "l", func(st *cairn.State) error {
		if _, err := h.sched.Add(st, schedule.Spec{ID: "rolled-back", When: schedule.After(0)}); err != nil {
			return err
		}
		return errors.New("handler failed")
	})
	if err == nil {
		t.Fatal("the failing turn succeeded")
	}
	if got := ids(); slices.Contains(got, "rolled-back") {
		t.Errorf("a failed turn's schedule was kept: %q", got)
	}
}

func TestInvalid(t *testing.T) {
	h := newHarness(t, nil)
	h.sched.MaxPayloadBytes = 100
	h.sched.MaxSchedules = 2
	rt := h.open(t)
	now := rt.Now()
	for _, tc := range []struct {
		name string
		spec schedule.Spec
		code cairn.Code
	}{
		{"no time", schedule.Spec{}, cairn.Invalid},
		{"negative delay", schedule.Spec{When: schedule.After(-time.Second)}, cairn.Invalid},
		{"zero time", schedule.Spec{When: schedule.At(time.Time{})}, cairn.Invalid},
		{"bad cron", schedule.Spec{When: schedule.Cron("61 * * * *", "")}, cairn.Invalid},
		{"cron words", schedule.Spec{When: schedule.Cron("every day", "")}, cairn.Invalid},
		{"cron too many fields", schedule.Spec{When: schedule.Cron("* * * * * * *", "")}, cairn.Invalid},
		{"empty cron", schedule.Spec{When: schedule.Cron(" ", "")}, cairn.Invalid},
		{"cron never", schedule.Spec{When: schedule.Cron("0 0 30 2 *", "")}, cairn.Invalid},
		{"cron tz prefix", schedule.Spec{When: schedule.Cron("CRON_TZ=UTC 0 * * * *", "")}, cairn.Invalid},
		{"cron tz prefix alone", schedule.Spec{When: schedule.Cron("TZ=UTC", "")}, cairn.Invalid},
		{"cron unknown tz", schedule.Spec{When: schedule.Cron("0 * * * *", "Mars/Olympus")}, cairn.Invalid},
		{"cron path tz", schedule.Spec{When: schedule.Cron("0 * * * *", "../../etc/passwd")}, cairn.Invalid},
		{"cron every too short", schedule.Spec{When: schedule.Cron("@every 10ms", "")}, cairn.Invalid},
		{"cron every negative", schedule.Spec{When: schedule.Cron("@every -1h", "")}, cairn.Invalid},
		{"cron huge", schedule.Spec{When: schedule.Cron(strings.Repeat("1,", 200)+"1 * * * *", "")}, cairn.TooLarge},
		{"payload not JSON", schedule.Spec{When: schedule.After(0), Payload: raw(`{"a":`)}, cairn.Invalid},
		{"payload empty", schedule.Spec{When: schedule.After(0), Payload: raw(``)}, cairn.Invalid},
		{"payload too large", schedule.Spec{When: schedule.After(0), Payload: raw(`"` + strings.Repeat("x", 100) + `"`)}, cairn.TooLarge},
		{"payload huge", schedule.Spec{When: schedule.After(0), Payload: raw(strings.Repeat(" ", 10000) + `1`)}, cairn.TooLarge},
		{"ID too long", schedule.Spec{ID: strings.Repeat("i", 129), When: schedule.After(0)}, cairn.TooLarge},
		{"ID control char", schedule.Spec{ID: "a\nb", When: schedule.After(0)}, cairn.Invalid},
		{"ID not UTF-8", schedule.Spec{ID: "a\xffb", When: schedule.After(0)}, cairn.Invalid},
		{"callback too long", schedule.Spec{Callback: strings.Repeat("c", 257), When: schedule.After(0)}, cairn.TooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in(t, rt, "v", func(st *cairn.State) error {
				_, err := h.sched.Add(st, tc.spec)
				if got := cairn.ErrorCode(err); got != tc.code {
					t.Errorf("Add: %v; want code %s", err, tc.code)
				}
				return nil
			})
		})
	}
	// Payload whitespace does not count against the limit.
	h.add(t, rt, "v", schedule.Spec{When: schedule.At(now.Add(time.Hour)), Payload: raw(`[` + strings.Repeat(" ", 200) + `1]`)})
	h.add(t, rt, "v", schedule.Spec{ID: "two", When: schedule.At(now.Add(time.Hour))})
	in(t, rt, "v", func(st *cairn.State) error {
		_, err := h.sched.Add(st, schedule.Spec{When: schedule.After(0)})
		if cairn.ErrorCode(err) != cairn.TooLarge {
			t.Errorf("Add beyond MaxSchedules: %v, want TooLarge", err)
		}
		// Replacing one is not adding one.
		_, err = h.sched.Add(st, schedule.Spec{ID: "two", When: schedule.At(now.Add(2 * time.Hour))})
		return err
	})
	if l := h.list(t, rt, "v"); len(l) != 2 {
		t.Errorf("%d schedules, want the 2 valid ones", len(l))
	}

	bad := schedule.New()
	for _, name := range []string{"", "1abc", "_cairn_schedules", "_CAIRN_x", "a b", "a;DROP TABLE x", strings.Repeat("t", 65)} {
		bad.Table = name
		in(t, rt, "v", func(st *cairn.State) error {
			if _, err := bad.List(st); cairn.ErrorCode(err) != cairn.Invalid {
				t.Errorf("List with table %q: %v, want Invalid", name, err)
			}
			return nil
		})
	}
}

// TestSharedAlarm: a class that keeps its own wake-up time gives it to
// the scheduler as Other; the alarm is the earlier of the two.
func TestSharedAlarm(t *testing.T) {
	h := newHarness(t, nil)
	h.sched.Other = func(st *cairn.State) (time.Time, bool, error) {
		v, ok, err := st.Get("own")
		if err != nil || !ok {
			return time.Time{}, false, err
		}
		at, err := time.Parse(time.RFC3339Nano, string(v))
		return at, err == nil, err
	}
	rt := h.open(t)
	own := rt.Now().Add(time.Hour).Truncate(time.Millisecond)
	in(t, rt, "x", func(st *cairn.State) error {
		if err := st.Put("own", []byte(own.Format(time.RFC3339Nano))); err != nil {
			return err
		}
		return h.sched.Arm(st)
	})
	if at, ok := alarm(t, rt, "x"); !ok || !at.Equal(own) {
		t.Errorf("alarm %v (set %v), want the class's own %v", at, ok, own)
	}
	s := h.add(t, rt, "x", schedule.Spec{ID: "soon", When: schedule.After(100 * time.Millisecond)})
	if at, ok := alarm(t, rt, "x"); !ok || !at.Equal(s.Time) {
		t.Errorf("alarm %v (set %v), want the schedule's %v", at, ok, s.Time)
	}
	onTime(t, h.wait(t, "soon", 1)[0])
	waitFor(t, "the alarm to return to the class's time", func() bool {
		at, ok := alarm(t, rt, "x")
		return ok && at.Equal(own)
	})
	// Without Other, NextAlarm lets the class combine by hand.
	in(t, rt, "x", func(st *cairn.State) error {
		if _, ok, err := h.sched.NextAlarm(st); ok || err != nil {
			t.Errorf("NextAlarm with no schedules: %v, %v", ok, err)
		}
		return nil
	})
}

// TestDueComplete runs callbacks with the turn released, as an agent does
// for a model call.
func TestDueComplete(t *testing.T) {
	h := newHarness(t, nil)
	released := make(chan string, 10)
	proceed := make(chan struct{})
	h.release = func(ctx context.Context, s schedule.Schedule) error {
		released <- s.ID
		<-proceed
		if s.ID == "fails" {
			return errors.New("model unavailable")
		}
		return nil
	}
	rt := h.open(t)
	h.add(t, rt, "d", schedule.Spec{ID: "wake", When: schedule.After(0)})
	if id := <-released; id != "wake" {
		t.Fatalf("released for %q", id)
	}
	// While the turn is released the object serves other events; the
	// safety alarm is set, in case the process dies now.
	if at, ok := alarm(t, rt, "d"); !ok || at.After(rt.Now().Add(h.sched.RetryBackoff)) {
		t.Errorf("alarm while released: %v (set %v), want within RetryBackoff", at, ok)
	}
	proceed <- struct{}{}
	<-h.handled
	if l := h.list(t, rt, "d"); len(l) != 0 {
		t.Errorf("schedules after a successful run: %+v", l)
	}

	// Cancelled while its callback runs: Complete records nothing.
	h.add(t, rt, "d", schedule.Spec{ID: "fails", When: schedule.After(0)})
	<-released
	in(t, rt, "d", func(st *cairn.State) error { _, err := h.sched.Cancel(st, "fails"); return err })
	proceed <- struct{}{}
	<-h.handled
	if at, ok := alarm(t, rt, "d"); ok {
		t.Errorf("alarm set at %v after the only schedule was cancelled", at)
	}
	if l := h.list(t, rt, "d"); len(l) != 0 {
		t.Errorf("Complete resurrected a cancelled schedule: %+v", l)
	}

	// Replaced while its callback runs: the new one stays.
	h.add(t, rt, "d", schedule.Spec{ID: "again", When: schedule.After(0)})
	<-released
	h.add(t, rt, "d", schedule.Spec{ID: "again", When: schedule.After(time.Hour), Callback: "new"})
	proceed <- struct{}{}
	<-h.handled
	if l := h.list(t, rt, "d"); len(l) != 1 || l[0].Callback != "new" || l[0].Runs != 0 {
		t.Errorf("Complete of a replaced schedule touched its successor: %+v", l)
	}
	in(t, rt, "d", func(st *cairn.State) error { _, err := h.sched.Cancel(st, "again"); return err })

	// A failure reported to Complete is retried.
	h.add(t, rt, "d", schedule.Spec{ID: "fails", When: schedule.After(0)})
	<-released
	proceed <- struct{}{}
	<-released // the retry
	l := h.list(t, rt, "d")
	if len(l) != 1 || l[0].Attempts != 1 || l[0].LastError != "model unavailable" {
		t.Errorf("after a failed run: %+v", l)
	}
	proceed <- struct{}{}
	<-released
	proceed <- struct{}{}
	waitFor(t, "fails to be given up", func() bool { l := h.list(t, rt, "d"); return len(l) == 1 && l[0].Failed })
}

func TestWhenNext(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	now := utc("2031-03-29T23:30:00.2501Z")
	for _, tc := range []struct {
		name string
		when schedule.When
		want string
	}{
		{"after rounds up to the ms", schedule.After(time.Second), "2031-03-29T23:30:01.251Z"},
		{"at in the past", schedule.At(utc("2000-01-01T00:00:00Z")), "2000-01-01T00:00:00Z"},
		{"every minute", schedule.Cron("* * * * *", ""), "2031-03-29T23:31:00Z"},
		{"with seconds", schedule.Cron("*/15 * * * * *", ""), "2031-03-29T23:30:15Z"},
		{"hourly", schedule.Cron("@hourly", ""), "2031-03-30T00:00:00Z"},
		{"daily", schedule.Cron("@daily", ""), "2031-03-30T00:00:00Z"},
		{"weekdays at 9", schedule.Cron("0 9 * * mon-fri", ""), "2031-03-31T09:00:00Z"},
		{"every 90s", schedule.Cron("@every 1m30s", ""), "2031-03-29T23:31:30Z"},
		{"new york", schedule.Cron("0 9 * * *", "America/New_York"), "2031-03-30T13:00:00Z"},
		// Paris moves to summer time at 01:00 UTC on 30 March 2031: 03:00
		// local is then 01:00 UTC, and 02:30 local does not exist that day.
		{"paris across DST", schedule.Cron("0 3 * * *", "Europe/Paris"), "2031-03-30T01:00:00Z"},
		{"paris skipped hour", schedule.Cron("30 2 * * *", "Europe/Paris"), "2031-03-31T00:30:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.when.Next(now)
			if err != nil {
				t.Fatal(err)
			}
			if want := utc(tc.want); !got.Equal(want) {
				t.Errorf("%v.Next(%v) = %v, want %v", tc.when, now, got.UTC(), want)
			}
		})
	}
}

func FuzzCron(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/5 1-3 * jan mon", "@every 1h", "@hourly", "TZ=", "CRON_TZ=x", "0 0 30 2 *", "1,2,3-9/2 * * * * *", "@every", "? ? ? ? ?"} {
		f.Add(s, "")
	}
	f.Add("0 * * * *", "Europe/Paris")
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr, tz string) {
		next, err := schedule.Cron(expr, tz).Next(now)
		if err != nil {
			if c := cairn.ErrorCode(err); c != cairn.Invalid && c != cairn.TooLarge {
				t.Fatalf("error code %s: %v", c, err)
			}
			return
		}
		if !next.After(now) {
			t.Fatalf("%q next %v, not after %v", expr, next, now)
		}
	})
}
