package cairn

import (
	"context"
	"time"
)

// pokeAlarms wakes the alarm loop to look at the index again.
func (rt *Runtime) pokeAlarms() {
	select {
	case rt.alarmPoke <- struct{}{}:
	default:
	}
}

// alarmLoop delivers due alarms (G7). The catalog's alarm index is the
// schedule; each delivery checks the object's own alarm, which is the truth.
func (rt *Runtime) alarmLoop(ctx context.Context) {
	defer rt.wg.Done()
	sem := make(chan struct{}, rt.AlarmConcurrency)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := rt.dispatchDue(ctx, sem)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			// Wait for deliveries in flight.
			for i := 0; i < cap(sem); i++ {
				sem <- struct{}{}
			}
			return
		case <-rt.alarmPoke:
		case <-timer.C:
		}
	}
}

// dispatchDue starts delivery of the due alarms not already in flight and
// returns how long to sleep before looking again.
func (rt *Runtime) dispatchDue(ctx context.Context, sem chan struct{}) time.Duration {
	const batch = 256
	const idle = time.Second // bound on sleep: the clock may be injected
	now := rt.Now()
	hints, err := rt.engine.DueAlarms(now, batch)
	if err != nil {
		rt.Logger.Error("alarm index", "err", err)
		return idle
	}
	started := 0
	for _, h := range hints {
		rt.alarmMu.Lock()
		busy := rt.alarmBusy[h.Ref.ID]
		if !busy {
			rt.alarmBusy[h.Ref.ID] = true
		}
		rt.alarmMu.Unlock()
		if busy {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			rt.alarmMu.Lock()
			delete(rt.alarmBusy, h.Ref.ID)
			rt.alarmMu.Unlock()
			return idle
		}
		started++
		go func(h AlarmHint) {
			defer func() {
				rt.alarmMu.Lock()
				delete(rt.alarmBusy, h.Ref.ID)
				rt.alarmMu.Unlock()
				<-sem
				rt.pokeAlarms()
			}()
			rt.deliverAlarm(ctx, h)
		}(h)
	}
	if started > 0 && len(hints) == batch {
		return 0
	}
	next, ok, err := rt.engine.NextAlarm()
	if err != nil || !ok {
		return idle
	}
	d := next.Sub(rt.Now())
	if d <= 0 || d > idle {
		// Either everything due is in flight (a completion pokes us), or
		// the next one is far: look again in a while anyway.
		return idle
	}
	return d
}

// deliverAlarm runs the alarm turn of one object and, if the handler
// failed, a second turn that schedules the retry.
func (rt *Runtime) deliverAlarm(ctx context.Context, h AlarmHint) {
	rt.mu.Lock()
	ns := rt.namespaces[h.Ref.Namespace]
	rt.mu.Unlock()
	if ns == nil {
		// A class this binary does not have: look again later.
		rt.Logger.Warn("alarm for unknown namespace", "namespace", h.Ref.Namespace, "object", h.Ref.ID.String())
		rt.engine.ClearAlarm(h.Ref.ID, rt.Now().Add(time.Minute))
		return
	}
	o, err := rt.get(ns, h.Ref)
	if err != nil {
		return
	}
	defer o.done()
	ctx, cancel := context.WithTimeout(ctx, rt.AlarmTimeout)
	defer cancel()
	var fired Alarm
	var handled bool
	err = o.run(ctx, func(t *turn, inst *instance) error {
		a, ok, err := inst.store.Alarm()
		if err != nil {
			return err
		}
		if !ok || a.At.After(rt.Now()) {
			// A stale hint. With nothing uncommitted the object's alarm is
			// its committed truth: point the index at it directly, as no
			// commit will follow. Otherwise the coming commit does it.
			if inst.store.Dirty() {
				o.alarmTouched = true
				return nil
			}
			var at time.Time
			if ok {
				at = a.At
			}
			if err := rt.engine.ClearAlarm(o.ref.ID, at); err != nil {
				return err
			}
			o.hintAt = at
			return nil
		}
		o.alarmTouched = true // the commit reconciles the index
		if err := inst.store.DeleteAlarm(); err != nil {
			return err
		}
		h, ok := inst.value.(AlarmHandler)
		if !ok {
			return nil
		}
		fired, handled = a, true
		rt.metrics.alarmsFired.Add(1)
		return h.Alarm(t.ctx, AlarmInfo{Scheduled: a.At, RetryCount: a.Retries})
	})
	if err == nil {
		return
	}
	if !handled {
		rt.Logger.Error("alarm turn", "namespace", h.Ref.Namespace, "object", h.Ref.ID.String(), "err", err)
		// The object's alarm is unchanged; look again after a pause.
		rt.engine.ClearAlarm(h.Ref.ID, rt.Now().Add(rt.AlarmBackoff))
		return
	}
	rt.metrics.alarmsFailed.Add(1)
	if fired.Retries >= rt.AlarmRetries {
		rt.Logger.Error("alarm failed; giving up", "namespace", h.Ref.Namespace, "object", h.Ref.ID.String(), "retries", fired.Retries, "err", err)
		rt.retryAlarm(ctx, o, fired, time.Time{})
		return
	}
	delay := rt.AlarmBackoff << fired.Retries
	rt.Logger.Warn("alarm failed; will retry", "namespace", h.Ref.Namespace, "object", h.Ref.ID.String(), "retry", fired.Retries+1, "in", delay, "err", err)
	rt.retryAlarm(ctx, o, fired, rt.Now().Add(delay))
}

// retryAlarm runs the turn after a failed alarm handler: the failed turn was
// rolled back, so the object still holds the fired alarm (or none, if the
// handler released its turn after deleting it). Unless the handler set a
// different alarm, set the retry (or, with a zero at, give up and delete).
func (rt *Runtime) retryAlarm(ctx context.Context, o *object, fired Alarm, at time.Time) {
	err := o.run(ctx, func(t *turn, inst *instance) error {
		a, ok, err := inst.store.Alarm()
		if err != nil {
			return err
		}
		if ok && (!a.At.Equal(fired.At) || a.Retries != fired.Retries) {
			return nil // the handler set a new alarm and kept it
		}
		o.alarmTouched = true
		if at.IsZero() {
			return inst.store.DeleteAlarm()
		}
		return inst.store.SetAlarm(Alarm{At: at, Retries: fired.Retries + 1})
	})
	if err != nil {
		rt.Logger.Error("schedule alarm retry", "object", o.ref.ID.String(), "err", err)
		rt.engine.ClearAlarm(o.ref.ID, rt.Now().Add(rt.AlarmBackoff))
	}
}
