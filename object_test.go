package cairn_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// The alarm index may be early, never late: when an alarm moves later and
// its hint is still in the future, the hint stays (no catalog write per
// commit); when the hint comes due, the alarm loop looks, finds the alarm
// later, delivers nothing and moves the hint to it. A new or earlier alarm
// still moves the hint at once.
func TestAlarmHintStaysEarly(t *testing.T) {
	var log alarmLog
	c := &testClass{alarm: func(ctx context.Context, st *cairn.State, a cairn.AlarmInfo) error {
		log.record(st, a)
		return nil
	}}
	clk := &testClock{}
	rt, ns := newTestRuntimeAt(t, "", cairn.Disk, c, withClock(clk))
	s := stubFor(t, ns, "lease")
	hint := func() time.Time {
		t.Helper()
		info, err := rt.Engine().Object(context.Background(), testNS, s.ID())
		if err != nil {
			t.Fatal(err)
		}
		return info.Alarm
	}
	base := clk.Now()
	setAlarm(t, s, base.Add(time.Minute))
	if got := hint(); !got.Equal(base.Add(time.Minute)) {
		t.Fatalf("hint of a new alarm: %v, want %v", got, base.Add(time.Minute))
	}
	// Later and later, as a lease's renewals: the hint stays.
	for i := 2; i <= 4; i++ {
		setAlarm(t, s, base.Add(time.Duration(i)*time.Minute))
	}
	if got := hint(); !got.Equal(base.Add(time.Minute)) {
		t.Fatalf("hint after the alarm moved later: %v, want it left at %v", got, base.Add(time.Minute))
	}
	// Earlier again (but after the hint): the hint is still early enough.
	setAlarm(t, s, base.Add(3*time.Minute))
	if got := hint(); !got.Equal(base.Add(time.Minute)) {
		t.Fatalf("hint after the alarm moved back to 3 min: %v, want %v", got, base.Add(time.Minute))
	}
	// The hint comes due: a look, no delivery, the hint moves to the alarm.
	clk.Advance(time.Minute + time.Second)
	waitFor(t, "the hint to move to the alarm", func() bool { return hint().Equal(base.Add(3 * time.Minute)) })
	if got := log.of("lease"); len(got) != 0 {
		t.Fatalf("%d deliveries before the alarm's time", len(got))
	}
	// Earlier than the hint: the hint follows before the commit.
	setAlarm(t, s, base.Add(2*time.Minute))
	if got := hint(); !got.Equal(base.Add(2 * time.Minute)) {
		t.Fatalf("hint after an earlier alarm: %v, want %v", got, base.Add(2*time.Minute))
	}
	clk.Advance(time.Minute)
	if d := log.wait(t, "lease", 1)[0]; !d.info.Scheduled.Equal(base.Add(2 * time.Minute)) {
		t.Errorf("delivered the alarm of %v, want %v", d.info.Scheduled, base.Add(2*time.Minute))
	}
	waitFor(t, "the hint to go", func() bool { return hint().IsZero() })
}
