package schedule

import (
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
)

// Fire runs fn for each due schedule, earliest first, at most BatchSize of
// them, then re-arms the object's alarm (Arm). Call it from the class's
// Alarm handler. It returns how many callbacks ran.
//
// Each call of fn runs in its own nested transaction (State.Transaction):
// if fn returns an error, its writes are rolled back and the run is
// retried with backoff, or given up after MaxAttempts, as the package
// comment describes; the error does not fail Fire, whose other runs and
// records stay. fn therefore cannot call State.Release (use Due and
// Complete for that). A panic in fn is not recovered. Fire stops early,
// leaving the rest due, when the runtime begins to close.
//
// Fire's own error (a storage failure) should be returned from the Alarm
// handler: the turn is rolled back and the runtime retries the alarm.
func (s *Scheduler) Fire(st *cairn.State, fn func(Schedule) error) (int, error) {
	due, err := s.due(st)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sc := range due {
		select {
		case <-st.Closing():
			return n, s.Arm(st)
		default:
		}
		var runErr error
		if err := st.Transaction(func() error {
			runErr = fn(sc)
			return runErr
		}); err != nil && runErr == nil {
			return n, fmt.Errorf("run schedule %q: %w", sc.ID, err)
		}
		n++
		if err := s.complete(st, sc, runErr); err != nil {
			return n, err
		}
	}
	return n, s.Arm(st)
}

// Due returns the schedules due now, earliest first, at most BatchSize,
// for a handler that runs them itself: one that must give up its turn
// (State.Release) while a callback waits on slow work, which Fire's nested
// transactions do not allow. Report each outcome with Complete.
//
// If any are due, Due also sets the object's alarm to RetryBackoff from
// now (unless it is set earlier), committed with the turn's first part
// when the handler releases it: should the process die before Complete,
// the alarm fires again and the schedules run again. Until Complete they
// stay due, so a second Due before then returns them again.
func (s *Scheduler) Due(st *cairn.State) ([]Schedule, error) {
	due, err := s.due(st)
	if err != nil || len(due) == 0 {
		return due, err
	}
	retry := st.Now().Add(s.RetryBackoff)
	cur, ok, err := st.Alarm()
	if err != nil {
		return nil, err
	}
	if !ok || cur.After(retry) {
		if err := st.SetAlarm(retry); err != nil {
			return nil, err
		}
	}
	return due, nil
}

// Complete records the outcome of one run of sc, a schedule that Due
// returned: nil for success, else the callback's error (see the package
// comment for what each does). Then it re-arms the object's alarm. If sc
// was cancelled or replaced since Due, Complete records nothing.
func (s *Scheduler) Complete(st *cairn.State, sc Schedule, runErr error) error {
	if err := s.complete(st, sc, runErr); err != nil {
		return err
	}
	return s.Arm(st)
}

// NextAlarm returns the earliest time at which a schedule fires (in the
// past for a due one), and false if the object has none (failed ones do
// not count).
func (s *Scheduler) NextAlarm(st *cairn.State) (time.Time, bool, error) {
	t, err := s.table()
	if err != nil {
		return time.Time{}, false, err
	}
	rows, err := st.Query(fmt.Sprintf(`SELECT MIN(next_at) FROM %s WHERE failed = 0`, t))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next schedule: %w", err)
	}
	if len(rows.Values) == 0 || rows.Values[0][0] == nil {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(i64(rows.Values[0][0])), true, nil
}

// Arm sets the object's alarm to the earliest schedule or, if Other is
// set, to the earlier of that and Other's time, and deletes it if there is
// neither. It writes only if the alarm is not already so. Add, Cancel,
// Fire and Complete call it; a class calls it after changing what Other
// returns.
func (s *Scheduler) Arm(st *cairn.State) error {
	next, ok, err := s.NextAlarm(st)
	if err != nil {
		return err
	}
	if s.Other != nil {
		o, ook, err := s.Other(st)
		if err != nil {
			return fmt.Errorf("arm schedules: class's own alarm: %w", err)
		}
		if ook && (!ok || o.Before(next)) {
			next, ok = o, true
		}
	}
	cur, set, err := st.Alarm()
	if err != nil {
		return err
	}
	switch {
	case !ok && set:
		return st.DeleteAlarm()
	case ok && (!set || !cur.Equal(next)):
		return st.SetAlarm(next)
	}
	return nil
}

// due returns the due schedules, earliest first.
func (s *Scheduler) due(st *cairn.State) ([]Schedule, error) {
	t, err := s.table()
	if err != nil {
		return nil, err
	}
	rows, err := st.Query(fmt.Sprintf(`SELECT `+columns+` FROM %s WHERE failed = 0 AND next_at <= ? ORDER BY next_at, id LIMIT ?`, t),
		st.Now().UnixMilli(), s.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("due schedules: %w", err)
	}
	out := make([]Schedule, 0, len(rows.Values))
	for _, r := range rows.Values {
		out = append(out, scan(r))
	}
	return out, nil
}

// complete records the outcome of a run, without re-arming.
func (s *Scheduler) complete(st *cairn.State, sc Schedule, runErr error) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	cur, err := s.Get(st, sc.ID)
	if cairn.ErrorCode(err) == cairn.NotFound {
		return nil // cancelled meanwhile
	}
	if err != nil {
		return err
	}
	if cur.token != sc.token {
		return nil // replaced or already completed meanwhile
	}
	now := st.Now()
	token := mrand.Int64()
	update := func(set string, args ...any) error {
		args = append(args, token, sc.ID)
		if _, err := st.Exec(fmt.Sprintf(`UPDATE %s SET %s, token = ? WHERE id = ?`, t, set), args...); err != nil {
			return fmt.Errorf("complete schedule %q: %w", sc.ID, err)
		}
		return nil
	}
	cronNext := func() (time.Time, error) {
		c, err := parseCron(cur.Cron, cur.TZ)
		if err != nil {
			return time.Time{}, err
		}
		n := c.Next(now)
		if n.IsZero() {
			return time.Time{}, cairn.Errorf(cairn.Invalid, "cron expression %q matches no time in the next five years", cur.Cron)
		}
		return ceilMilli(n), nil
	}
	if runErr == nil {
		if cur.Type != TypeCron {
			if _, err := st.Exec(fmt.Sprintf(`DELETE FROM %s WHERE id = ?`, t), sc.ID); err != nil {
				return fmt.Errorf("complete schedule %q: %w", sc.ID, err)
			}
			return nil
		}
		next, err := cronNext()
		if err != nil {
			return update(`failed = 1, last_error = ?, next_at = ?, runs = runs + 1, attempts = 0`, errText(err), now.UnixMilli())
		}
		return update(`next_at = ?, runs = runs + 1, attempts = 0, last_error = ''`, next.UnixMilli())
	}
	msg := errText(runErr)
	attempts := cur.Attempts + 1
	if attempts < s.MaxAttempts {
		return update(`next_at = ?, attempts = ?, last_error = ?`, ceilMilli(now.Add(s.backoff(attempts))).UnixMilli(), attempts, msg)
	}
	if cur.Type == TypeCron {
		if next, err := cronNext(); err == nil {
			return update(`next_at = ?, attempts = 0, failures = failures + 1, last_error = ?`, next.UnixMilli(), msg)
		}
	}
	return update(`failed = 1, next_at = ?, attempts = ?, failures = failures + 1, last_error = ?`, now.UnixMilli(), attempts, msg)
}

// backoff returns the wait after the n-th failed attempt (n >= 1).
func (s *Scheduler) backoff(n int) time.Duration {
	d := s.RetryBackoff
	for i := 1; i < n && d < s.MaxBackoff; i++ {
		d *= 2
	}
	if d > s.MaxBackoff {
		d = s.MaxBackoff
	}
	return d
}

// errText is an error's message as stored: valid UTF-8, bounded.
func errText(err error) string {
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) > maxErrorBytes {
		msg = strings.ToValidUTF8(msg[:maxErrorBytes], "") + "…"
	}
	return msg
}
