package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
)

// Schedules: a session runs work after a delay, at a time, or on a cron
// expression, persisted in its own database (package schedule) and
// multiplexed onto its alarm, so that they fire with no client connected
// and after a restart.
//
//	POST   /schedules        ScheduleRequest -> Schedule (201)
//	GET    /schedules        {"schedules": [Schedule...]} in firing order
//	DELETE /schedules/{id}   {"cancelled": true|false}
//
// A schedule fires within the slack the schedule package states (about a
// second after its time on a loaded machine; never before). When it
// fires, its payload is pushed to the session's WebSocket clients as
// {"type":"cairn_schedule","schedule":{...}}; a schedule with a message
// also sends that message to the model, as POST /messages would: the
// reply is stored, and connected WebSocket clients see it stream.

// sessionScheduler keeps every session's schedules, in table "_schedules"
// of its database. Approval deadlines are schedules too (callback
// approval-deadline), not listed by GET /schedules.
var sessionScheduler = schedule.New()

// The callbacks of a session's schedules.
const (
	callbackEvent    = "event"             // push the payload to clients
	callbackMessage  = "message"           // and send the message to the model
	callbackDeadline = "approval-deadline" // deny an approval nobody gave
)

// ScheduleRequest is the body of POST /schedules: exactly one of
// DelaySeconds, At and Cron says when it fires.
type ScheduleRequest struct {
	// ID names the schedule; empty gets a random one. Adding an ID that
	// exists replaces that schedule.
	ID           string     `json:"id,omitempty"`
	DelaySeconds *float64   `json:"delay_seconds,omitempty"` // once, after this many seconds
	At           *time.Time `json:"at,omitempty"`            // once, at this time (RFC 3339)
	Cron         string     `json:"cron,omitempty"`          // at each match (5 fields, 6 with seconds, @daily, @every 1h)
	TZ           string     `json:"tz,omitempty"`            // the cron's IANA time zone; default UTC
	// Payload is any JSON value, given back when it fires.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Message, if set, is sent to the model when it fires.
	Message string `json:"message,omitempty"`
}

// Schedule is a session's schedule as the API shows it.
type Schedule struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"` // delayed, scheduled or cron
	Time         time.Time       `json:"time"` // when it fires next
	DelaySeconds float64         `json:"delay_seconds,omitempty"`
	Cron         string          `json:"cron,omitempty"`
	TZ           string          `json:"tz,omitempty"`
	Payload      json.RawMessage `json:"payload"`
	Message      string          `json:"message,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	Runs         int64           `json:"runs"`
	Failures     int64           `json:"failures,omitempty"`
	LastError    string          `json:"last_error,omitempty"`
	Failed       bool            `json:"failed,omitempty"`
}

// schedulePayload is what a schedule stores as its payload.
type schedulePayload struct {
	Payload    json.RawMessage `json:"payload,omitempty"`
	Message    string          `json:"message,omitempty"`
	MessageID  string          `json:"messageId,omitempty"`  // approval-deadline
	ToolCallID string          `json:"toolCallId,omitempty"` // approval-deadline
}

// addSchedule stores a schedule from a request.
func (s *session) addSchedule(in ScheduleRequest) (Schedule, error) {
	var when schedule.When
	n := 0
	if in.DelaySeconds != nil {
		n++
		d := *in.DelaySeconds
		if d < 0 || d > 100*365*24*3600 {
			return Schedule{}, cairn.Errorf(cairn.Invalid, "delay_seconds must be 0 to 100 years")
		}
		when = schedule.After(time.Duration(d * float64(time.Second)))
	}
	if in.At != nil {
		n++
		when = schedule.At(*in.At)
	}
	if in.Cron != "" {
		n++
		when = schedule.Cron(in.Cron, in.TZ)
	} else if in.TZ != "" {
		return Schedule{}, cairn.Errorf(cairn.Invalid, "tz goes with cron")
	}
	if n != 1 {
		return Schedule{}, cairn.Errorf(cairn.Invalid, "a schedule needs exactly one of delay_seconds, at and cron")
	}
	if strings.HasPrefix(in.ID, approvalSchedulePrefix) {
		return Schedule{}, cairn.Errorf(cairn.Invalid, "schedule IDs starting with %q are reserved", approvalSchedulePrefix)
	}
	if reservedSchedule(in.ID, "") {
		return Schedule{}, cairn.Errorf(cairn.Invalid, "schedule IDs starting with %q are reserved", reservedSchedulePrefix)
	}
	callback := callbackEvent
	if in.Message != "" {
		if s.agent == nil {
			return Schedule{}, cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name)
		}
		if strings.TrimSpace(in.Message) == "" {
			return Schedule{}, cairn.Errorf(cairn.Invalid, "message must not be blank")
		}
		if len(in.Message) > s.agent.MaxTextBytes {
			return Schedule{}, cairn.Errorf(cairn.TooLarge, "message is %d bytes; the limit is %d", len(in.Message), s.agent.MaxTextBytes)
		}
		callback = callbackMessage
	}
	if len(in.Payload) > 0 && !json.Valid(in.Payload) {
		return Schedule{}, cairn.Errorf(cairn.Invalid, "payload is not valid JSON")
	}
	p, err := json.Marshal(schedulePayload{Payload: in.Payload, Message: in.Message})
	if err != nil {
		return Schedule{}, err
	}
	sc, err := sessionScheduler.Add(s.st, schedule.Spec{ID: in.ID, When: when, Callback: callback, Payload: p})
	if err != nil {
		return Schedule{}, err
	}
	return scheduleOf(sc), nil
}

// listSchedules returns the session's schedules in firing order, without
// approval deadlines.
func (s *session) listSchedules() ([]Schedule, error) {
	all, err := sessionScheduler.List(s.st)
	if err != nil {
		return nil, err
	}
	out := make([]Schedule, 0, len(all))
	for _, sc := range all {
		if sc.Callback == callbackDeadline || reservedSchedule(sc.ID, sc.Callback) {
			continue // approval deadlines, archival and TTL
		}
		out = append(out, scheduleOf(sc))
	}
	return out, nil
}

// cancelSchedule deletes a schedule (not an approval deadline).
func (s *session) cancelSchedule(id string) (bool, error) {
	if strings.HasPrefix(id, approvalSchedulePrefix) || reservedSchedule(id, "") {
		return false, nil
	}
	return sessionScheduler.Cancel(s.st, id)
}

func scheduleOf(sc schedule.Schedule) Schedule {
	var p schedulePayload
	json.Unmarshal(sc.Payload, &p)
	out := Schedule{
		ID: sc.ID, Type: string(sc.Type), Time: sc.Time.UTC(), Cron: sc.Cron, TZ: sc.TZ,
		Payload: p.Payload, Message: p.Message, CreatedAt: sc.Created.UTC(),
		Runs: sc.Runs, Failures: sc.Failures, LastError: sc.LastError, Failed: sc.Failed,
	}
	if out.Payload == nil {
		out.Payload = json.RawMessage("null")
	}
	if sc.Type == schedule.TypeDelayed {
		out.DelaySeconds = sc.Delay.Seconds()
	}
	return out
}

// serveSchedules serves /schedules and /schedules/{id}.
func (s *session) serveSchedules(w http.ResponseWriter, r *http.Request, id string) {
	if id != "" {
		if r.Method != http.MethodDelete {
			w.Header().Set("Allow", "DELETE")
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use DELETE", r.Method))
			return
		}
		ok, err := s.cancelSchedule(id)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		if !ok {
			cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no schedule %q", truncate(id, 200)))
			return
		}
		cairn.WriteJSON(w, http.StatusOK, map[string]bool{"cancelled": true})
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		list, err := s.listSchedules()
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		cairn.WriteJSON(w, http.StatusOK, map[string]any{"schedules": list})
	case http.MethodPost:
		var in ScheduleRequest
		b, err := cairn.ReadBody(r)
		if err == nil {
			err = cairn.DecodeJSON(b, &in)
		}
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		sc, err := s.addSchedule(in)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		cairn.WriteJSON(w, http.StatusCreated, sc)
	default:
		w.Header().Set("Allow", "GET, POST")
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET or POST", r.Method))
	}
}

// Alarm implements cairn.AlarmHandler: it runs the session's due
// schedules. Those that call the model give up the turn while it runs
// (Due and Complete, not Fire): a message schedule stores its user
// message and reply like POST /messages; an approval deadline denies the
// call and resumes its reply.
func (s *session) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
	due, err := sessionScheduler.Due(s.st)
	if err != nil {
		return err
	}
	for _, sc := range due {
		runErr := s.fire(ctx, sc)
		if s.isGone() {
			return nil // expired or deleted: storage, schedules and alarm are gone
		}
		if err := sessionScheduler.Complete(s.st, sc, runErr); err != nil {
			return err
		}
	}
	return nil
}

// fire runs one due schedule. Its error is the run's (retried by the
// scheduler); a reply that failed is not an error: it is stored as such,
// and sending the message again would store it twice.
func (s *session) fire(ctx context.Context, sc schedule.Schedule) error {
	var p schedulePayload
	if err := json.Unmarshal(sc.Payload, &p); err != nil {
		return fmt.Errorf("schedule %s: payload: %w", sc.ID, err)
	}
	switch sc.Callback {
	case callbackDeadline:
		return s.deadlinePassed(ctx, p.MessageID, p.ToolCallID)
	case callbackArchive:
		_, err := s.maintain(ctx)
		return err
	case callbackTTL:
		return s.ttlFired(ctx)
	case callbackEvent, callbackMessage:
	default:
		return nil // a callback of a later version: nothing to do here
	}
	info := scheduleOf(sc)
	info.Runs++
	frame := mustJSON(map[string]any{"type": frameSchedule, "schedule": info})
	for _, ws := range s.st.WebSockets(sdkTag) {
		ws.Send(ctx, cairn.Message{Text: true, Data: frame})
	}
	if sc.Callback != callbackMessage || p.Message == "" {
		return nil
	}
	if s.agent == nil {
		return cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name)
	}
	w := &captureWriter{}
	s.generate(w, jobRequest(ctx), s.agent, p.Message, s.socketSink(nil, "", nil, nil))
	if w.status >= 400 {
		// Not sent to the model (the server stopped first): run again.
		return cairn.Errorf(cairn.Unavailable, "scheduled message: %s", truncate(w.body.String(), 1000))
	}
	return nil
}
