// Package schedule keeps an object's schedules (run after a delay, at a
// time, or on a cron expression, with a JSON payload) in a table of the
// object's own database, and multiplexes them onto the object's one alarm
// (G7). Schedules survive eviction and restarts and fire with nobody
// connected: the runtime's alarm wakes the object, and the class's Alarm
// handler calls Fire.
//
// Every function takes the object's *cairn.State and must run inside one of
// its turns (a handler, the alarm, New); its writes are part of the turn's
// transaction (G4), so a schedule added by a turn that fails is not added.
//
// # Use in a class
//
//	var sched = schedule.New() // table "_schedules"; tunables are fields
//
//	var class = cairn.Class{
//		New:        func(st *cairn.State) (any, error) { return &Bot{st: st}, nil },
//		Migrations: []cairn.Migration{myTables, sched.Migration()},
//	}
//
//	func (b *Bot) Remind(ctx context.Context, in string) (schedule.Schedule, error) {
//		return sched.Add(b.st, schedule.Spec{
//			When:     schedule.Cron("0 9 * * mon-fri", "Europe/Paris"),
//			Callback: "standup",
//			Payload:  json.RawMessage(`{"room":"` + in + `"}`),
//		})
//	}
//
//	func (b *Bot) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
//		_, err := sched.Fire(b.st, func(s schedule.Schedule) error {
//			switch s.Callback { ... }
//		})
//		return err
//	}
//
// The migration is one step of the class's own list: append it once, where
// it falls in the class's history, and never move it (Class.Migrations is
// append only). Its table is created if it does not exist, so it may also
// be appended to a class whose objects already exist.
//
// # Kinds of schedule
//
//   - After(d) fires once, d after it was added. d must not be negative.
//   - At(t) fires once at t. A time in the past fires as soon as possible
//     (like State.SetAlarm): a caller computing a time that slipped into
//     the past still gets its run.
//   - Cron(expr, tz) fires at each time expr matches in time zone tz (an
//     IANA name; "" is UTC). expr has the standard five fields (minute,
//     hour, day of month, month, day of week) or six with seconds first,
//     or a descriptor: @yearly, @monthly, @weekly, @daily, @hourly, or
//     @every <duration> (at least 1 s). Parsing is robfig/cron's. An
//     expression that never matches within five years is Invalid. A local
//     time that a daylight-saving change skips does not fire that day.
//     Time zones come from the host's zoneinfo unless the binary embeds
//     them (import _ "time/tzdata"); an unknown zone is Invalid.
//
// Times are kept to the millisecond, rounded up, so a schedule never fires
// before its time.
//
// # Firing
//
// Fire runs each due schedule's callback, oldest time first, each in its
// own nested transaction (State.Transaction):
//
//   - success: a one-shot schedule is deleted; a cron schedule moves to
//     its next time after now. Runs missed while the node was down are not
//     made up: a cron schedule that fell behind runs once, then resumes at
//     its next time.
//   - error: the callback's writes are rolled back and the schedule is
//     retried after RetryBackoff, doubled on each further failure up to
//     MaxBackoff. After MaxAttempts failed attempts a one-shot schedule is
//     marked Failed: it stays in the table (List shows it, with LastError)
//     but no longer fires, until Cancel removes it. A cron schedule that
//     runs out of attempts records the failure (Failures, LastError) and
//     moves on to its next time.
//   - panic: not recovered. The alarm turn fails as a whole (nothing of it
//     is kept) and the runtime retries the alarm with its own backoff
//     (Runtime.AlarmRetries). Callbacks should return errors instead.
//
// Delivery is at least once: a callback may run again if its turn's commit
// fails or the process dies before the commit; make callbacks idempotent
// where that matters. A callback that must give up the turn (State.Release,
// for an LLM call) cannot run inside Fire's nested transaction: use Due and
// Complete instead.
//
// At most BatchSize schedules run per Fire; if more are due, the alarm is
// set to fire again at once.
//
// # Timing
//
// A schedule never fires before its time. It fires when the runtime
// delivers the alarm: on an idle machine a few milliseconds after its
// time; the runtime's alarm loop looks at least once a second, so with an
// injected clock (Runtime.Now) a schedule fires within about a second of
// the clock passing its time. The package's tests allow 2 s of slack, for
// loaded CI machines. A retried callback waits out its backoff first.
//
// # Sharing the alarm
//
// An object has one alarm; the Scheduler sets it to the earliest schedule
// (Arm) after every change it makes. A class that also uses the alarm for
// its own purposes must not call State.SetAlarm or DeleteAlarm behind the
// Scheduler's back, or schedules stop firing. Either:
//
//   - set Scheduler.Other to a function that returns the class's own next
//     wake-up time, and call Arm (instead of SetAlarm) whenever that time
//     changes; Arm sets the alarm to the earlier of the two. In Alarm, call
//     Fire and do the class's own due work (the alarm may fire for either
//     reason, so both must tolerate waking with nothing to do); or
//   - leave Other nil, set the alarm yourself, and afterwards combine:
//     next, ok, err := sched.NextAlarm(st) gives the earliest schedule
//     (past for a due one); set the alarm to the earlier of that and your
//     own time.
//
// Calling Arm in the class's New is cheap and repairs an alarm lost to a
// bug elsewhere; it writes only when the alarm is not what it should be.
package schedule
