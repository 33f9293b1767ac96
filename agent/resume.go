package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Resumable streams. The events of a reply form one sequence that is a
// function of the reply's content, so that any suffix of it can be made
// again from what the session holds: from the reply being generated (in
// memory: live) while it runs, from the stored message after.
//
// A position counts the units of the sequence: a step-start, tool-call,
// tool-result or step-end event is one unit, a text-delta or
// reasoning-delta event as many as its text has bytes. message-start is
// at 0, message-end one past the last step-end. An event's SSE id is
// "{messageId}:{position after it}", so the id of the last event a client
// saw says exactly what it has, whatever the deltas' sizes were: the rest
// of a text part is resent from that byte on. tool-call-delta (and error)
// events take no unit: they carry the position before them, and a client
// resuming from there gets the whole tool call (its complete tool-call
// event) instead of the deltas it missed.

// replayPiece bounds the text of one replayed delta event.
const replayPiece = 64 << 10

// streamEvent is one event of a reply's stream.
type streamEvent struct {
	name string
	pos  int64
	id   string // "{messageId}:{position}"
	data map[string]any
	enc  []byte
}

func newEvent(msgID string, pos int64, name string, data map[string]any) *streamEvent {
	data["type"] = name
	if _, ok := data["messageId"]; !ok {
		data["messageId"] = msgID
	}
	return &streamEvent{name: name, pos: pos, id: msgID + ":" + strconv.FormatInt(pos, 10), data: data}
}

// sse returns the event as Server-Sent Event text. Only the goroutine that
// made the event may call it (it keeps the encoding).
func (e *streamEvent) sse() []byte {
	if e.enc == nil {
		b, err := json.Marshal(e.data)
		if err != nil {
			b = []byte(`{"type":"error","error":"encode event"}`)
		}
		e.enc = make([]byte, 0, len(b)+len(e.id)+len(e.name)+24)
		e.enc = append(e.enc, "id: "...)
		e.enc = append(e.enc, e.id...)
		e.enc = append(e.enc, "\nevent: "...)
		e.enc = append(e.enc, e.name...)
		e.enc = append(e.enc, "\ndata: "...)
		e.enc = append(e.enc, b...)
		e.enc = append(e.enc, "\n\n"...)
	}
	return e.enc
}

// reply is what a stream is made from: a reply's parts, the model rounds it
// started, and whether the last of them is still open (no step-end yet).
type reply struct {
	msgID, userID, model string
	parts                []Part
	rounds               int
	open                 bool
	final                *Message // the reply as stored, once it ended
}

// errPosition is returned for a position the stream has not reached.
func errPosition(msgID string, after int64) error {
	return cairn.Errorf(cairn.Invalid, "event id %s:%d is not a position of message %s's stream", msgID, after, msgID)
}

// replay calls emit with the events of the stream after position after,
// from message-start on if after is negative. A position past what a
// running reply has sent is an error; one past the end of a reply that
// ended (a client can hold one after the server stopped mid-round and lost
// what it had not stored) gets message-end alone.
func (rp *reply) replay(after int64, emit func(*streamEvent)) error {
	var pos int64
	if after < 0 {
		emit(newEvent(rp.msgID, 0, "message-start", map[string]any{"userMessageId": rp.userID, "model": rp.model}))
	}
	unit := func(name string, data map[string]any) {
		pos++
		if pos > after {
			emit(newEvent(rp.msgID, pos, name, data))
		}
	}
	// A reply parked for approvals has its last round open: it ends
	// when the approvals are answered (see approval.go).
	parked := rp.final != nil && rp.final.Status == AwaitingApproval
	steps := Steps(rp.parts)
	rounds := max(rp.rounds, len(steps))
	for r := range rounds {
		unit("step-start", map[string]any{"step": r + 1})
		if r < len(steps) {
			for _, p := range steps[r].Parts {
				if err := rp.replayPart(p, &pos, after, unit, emit); err != nil {
					return err
				}
			}
			// Approval requests come after the round's calls, before
			// any result, as runCalls makes them.
			for _, p := range steps[r].Parts {
				if p.Type == PartToolCall && p.Approval != nil {
					unit("tool-approval-request", approvalData(p))
				}
			}
			for _, p := range steps[r].Results {
				if err := rp.replayPart(p, &pos, after, unit, emit); err != nil {
					return err
				}
			}
		}
		if r < rounds-1 || !(rp.open || parked) {
			unit("step-end", map[string]any{"step": r + 1})
		}
	}
	if rp.final == nil {
		if after > pos {
			return errPosition(rp.msgID, after)
		}
		return nil
	}
	if parked {
		// The reply goes on once its approvals are decided: its
		// message-end takes no unit, so that the events of the
		// continuation follow it without a gap.
		emit(newEvent(rp.msgID, pos, "message-end", map[string]any{"message": rp.final}))
		return nil
	}
	if after <= pos || after > pos+1 {
		emit(newEvent(rp.msgID, pos+1, "message-end", map[string]any{"message": rp.final}))
	}
	return nil
}

func (rp *reply) replayPart(p Part, pos *int64, after int64, unit func(string, map[string]any), emit func(*streamEvent)) error {
	switch p.Type {
	case PartText, PartReasoning:
		start, end := *pos, *pos+int64(len(p.Text))
		*pos = end
		if end <= after {
			return nil
		}
		from := 0
		if after > start {
			from = int(after - start)
			if !utf8.RuneStart(p.Text[from]) {
				return errPosition(rp.msgID, after)
			}
		}
		name := "text-delta"
		if p.Type == PartReasoning {
			name = "reasoning-delta"
		}
		for s := p.Text[from:]; len(s) > 0; {
			n := min(len(s), replayPiece)
			for n < len(s) && !utf8.RuneStart(s[n]) {
				n--
			}
			from += n
			emit(newEvent(rp.msgID, start+int64(from), name, map[string]any{"delta": s[:n]}))
			s = s[n:]
		}
	case PartToolCall:
		unit("tool-call", toolCallData(p))
	case PartToolResult:
		unit("tool-result", toolResultData(p))
	}
	return nil
}

func toolCallData(p Part) map[string]any {
	return map[string]any{"toolCallId": p.ToolCallID, "toolName": p.ToolName, "input": p.Input}
}

func toolResultData(p Part) map[string]any {
	d := map[string]any{"toolCallId": p.ToolCallID, "toolName": p.ToolName, "output": p.Output, "isError": p.IsError}
	if p.Approval != nil && p.Approval.Approved != nil && !*p.Approval.Approved {
		d["denied"] = true // the result of a call a person (or the deadline) denied
	}
	return d
}

// subBuffer bounds the events waiting for one resumed reader; a reader
// that falls that far behind is dropped (its stream ends, and it may
// resume again from its last event).
const subBuffer = 1024

// subscriber is a resumed reader of a live reply: it gets the encoded
// events in order; the channel is closed after message-end, or early when
// the reader fell behind or the session was reset.
type subscriber struct {
	ch chan []byte
}

// live is the stream of the reply being generated: its content so far,
// the position reached, and the readers that resumed it. The generation
// (one goroutine at a time) appends; resumed readers subscribe from their
// own events.
type live struct {
	msgID, userID, model string

	mu      sync.Mutex
	parts   []Part // finished parts
	runType string // the type of the text run in run, if any
	run     strings.Builder
	rounds  int
	open    bool // the last round started has not ended
	pos     int64
	subs    []*subscriber
	ended   bool
}

func newLive(msgID, userID, model string) *live {
	return &live{msgID: msgID, userID: userID, model: model}
}

// start returns the message-start event.
func (l *live) start() *streamEvent {
	return newEvent(l.msgID, 0, "message-start", map[string]any{"userMessageId": l.userID, "model": l.model})
}

// emit advances the position by n units and makes the event there,
// handing it to the subscribers. l.mu is held.
func (l *live) emitLocked(n int64, name string, data map[string]any) *streamEvent {
	l.pos += n
	ev := newEvent(l.msgID, l.pos, name, data)
	if len(l.subs) > 0 {
		b := ev.sse()
		kept := l.subs[:0]
		for _, s := range l.subs {
			select {
			case s.ch <- b:
				kept = append(kept, s)
			default:
				close(s.ch) // too slow: dropped, not waited for
			}
		}
		clear(l.subs[len(kept):])
		l.subs = kept
	}
	return ev
}

func (l *live) flushLocked() {
	if l.runType != "" {
		l.parts = append(l.parts, Part{Type: l.runType, Text: l.run.String()})
		l.run = strings.Builder{}
		l.runType = ""
	}
}

// startRound opens the next model round.
func (l *live) startRound() *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.rounds++
	l.open = true
	return l.emitLocked(1, "step-start", map[string]any{"step": l.rounds})
}

// endRound closes the round.
func (l *live) endRound() *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.open = false
	return l.emitLocked(1, "step-end", map[string]any{"step": l.rounds})
}

// text appends a piece of text or reasoning (typ); nil if s is empty.
func (l *live) text(typ, s string) *streamEvent {
	if s == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.runType != typ {
		l.flushLocked()
		l.runType = typ
	}
	l.run.WriteString(s)
	name := "text-delta"
	if typ == PartReasoning {
		name = "reasoning-delta"
	}
	return l.emitLocked(int64(len(s)), name, map[string]any{"delta": s})
}

// toolCallDelta passes a piece of a tool call on; it takes no unit.
func (l *live) toolCallDelta(tc *ToolCall) *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.emitLocked(0, "tool-call-delta", map[string]any{"index": tc.Index, "toolCallId": tc.ID, "toolName": tc.Name, "inputDelta": tc.Input})
}

// toolCall appends a complete tool call and returns its part.
func (l *live) toolCall(tc *ToolCall) (Part, *streamEvent) {
	input := json.RawMessage(tc.Input)
	if strings.TrimSpace(tc.Input) == "" {
		input = json.RawMessage("{}")
	} else if !json.Valid(input) {
		input, _ = json.Marshal(tc.Input)
	}
	p := Part{Type: PartToolCall, ToolCallID: tc.ID, ToolName: tc.Name, Input: input}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.parts = append(l.parts, p)
	return p, l.emitLocked(1, "tool-call", toolCallData(p))
}

// toolResult appends the result of a tool call.
func (l *live) toolResult(p Part) *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.parts = append(l.parts, p)
	return l.emitLocked(1, "tool-result", toolResultData(p))
}

// errorEvent makes the error event of a reply whose session was reset; it
// takes no unit.
func (l *live) errorEvent(err error) *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.emitLocked(0, "error", map[string]any{"error": errorText(err)})
}

// snapshotLocked returns the content so far. l.mu is held.
func (l *live) snapshotLocked() []Part {
	parts := make([]Part, len(l.parts), len(l.parts)+1)
	copy(parts, l.parts)
	if l.runType != "" {
		parts = append(parts, Part{Type: l.runType, Text: l.run.String()})
	}
	return parts
}

// snapshot returns the parts so far and the rounds started.
func (l *live) snapshot() ([]Part, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshotLocked(), l.rounds
}

// end makes the message-end event with the stored reply m and ends the
// stream: the subscribers it returns are to be sent the event once m is
// durable (deliver), and none join after.
func (l *live) end(m *Message) (*streamEvent, []*subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.ended = true
	pos := l.pos + 1
	if m.Status == AwaitingApproval {
		pos = l.pos // no unit: see reply.replay
	}
	ev := newEvent(l.msgID, pos, "message-end", map[string]any{"message": m})
	subs := l.subs
	l.subs = nil
	return ev, subs
}

// abort ends the stream without message-end (the session was reset).
func (l *live) abort() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
	for _, s := range l.subs {
		close(s.ch)
	}
	l.subs = nil
}

// deliver sends ev to subs and closes them.
func deliver(ev *streamEvent, subs []*subscriber) {
	var b []byte
	if len(subs) > 0 {
		b = ev.sse()
	}
	for _, s := range subs {
		select {
		case s.ch <- b:
		default:
		}
		close(s.ch)
	}
}

// subscribe returns the encoded events after position after and, unless
// the stream has ended, a subscriber that gets every event from there on:
// the two together are the stream's rest, without a gap or a repeat.
func (l *live) subscribe(after int64) ([][]byte, *subscriber, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return nil, nil, nil
	}
	rp := reply{msgID: l.msgID, userID: l.userID, model: l.model, parts: l.snapshotLocked(), rounds: l.rounds, open: l.open}
	var out [][]byte
	if err := rp.replay(after, func(ev *streamEvent) { out = append(out, ev.sse()) }); err != nil {
		return nil, nil, err
	}
	s := &subscriber{ch: make(chan []byte, subBuffer)}
	l.subs = append(l.subs, s)
	return out, s, nil
}

// unsubscribe removes s, if the stream still has it.
func (l *live) unsubscribe(s *subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.subs {
		if x == s {
			l.subs = append(l.subs[:i], l.subs[i+1:]...)
			close(s.ch)
			return
		}
	}
}

// parsePosition reads the position a client resumes after, from the
// Last-Event-ID header or ?after= (an event id, "{messageId}:{n}"): -1 if
// neither is set.
func parsePosition(r *http.Request, msgID string) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("after")
	}
	if v == "" {
		return -1, nil
	}
	id, n, ok := strings.Cut(v, ":")
	if !ok || !validMessageID(id) || n == "" || len(n) > 18 || strings.Trim(n, "0123456789") != "" {
		return 0, cairn.Errorf(cairn.Invalid, "event id %q is malformed: want {messageId}:{position}, as in the stream's ids", truncate(v, 100))
	}
	if id != msgID {
		return 0, cairn.Errorf(cairn.Invalid, "event id %s belongs to message %s, not %s", truncate(v, 100), id, msgID)
	}
	pos, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, cairn.Errorf(cairn.Invalid, "event id %q is malformed", truncate(v, 100))
	}
	return pos, nil
}

// sseHeader starts an event stream response.
func sseHeader(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
}

// resume serves GET /messages/{id}/stream: the rest of a reply's stream
// after the client's last event, live while the reply is being generated.
func (s *session) resume(w http.ResponseWriter, r *http.Request, id string) {
	if !validMessageID(id) {
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "%q is not a message id", truncate(id, 100)))
		return
	}
	after, err := parsePosition(r, id)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		cairn.WriteError(w, cairn.Errorf(cairn.Internal, "streaming is not supported"))
		return
	}
	s.mu.Lock()
	l := s.live
	s.mu.Unlock()
	if l != nil && l.msgID == id {
		events, sub, err := l.subscribe(after)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		if sub != nil {
			s.follow(w, r, l, events, sub)
			return
		}
		// Ended meanwhile (the final turn was not yet done): storage has it.
	}
	m, ok, err := s.store.get(id)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	userID := ""
	if ok {
		if userID, err = s.store.userOf(id); err != nil {
			cairn.WriteError(w, err)
			return
		}
	} else {
		// Archived since (a client that comes back late): its stream is
		// made from the archived message, read with the turn released.
		line, prev, found, err := s.store.findArchived(id, s.st.Release)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		if !found {
			cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no message %s in this session (or archived long ago: its stream is gone, the history has it)", id))
			return
		}
		m = line.Message
		if prev != nil && prev.Role == User && prev.Seq == line.Seq-1 {
			userID = prev.ID
		}
	}
	if m.Role != Assistant {
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "message %s is a %s message; only replies have a stream", id, m.Role))
		return
	}
	rp := reply{msgID: id, userID: userID, model: m.Model, parts: m.Parts, rounds: m.Rounds, final: &m}
	var events [][]byte
	if err := rp.replay(after, func(ev *streamEvent) { events = append(events, ev.sse()) }); err != nil {
		cairn.WriteError(w, err)
		return
	}
	// Sent once the turn is durable, as any response.
	sseHeader(w)
	for _, b := range events {
		w.Write(b)
	}
}

// follow streams a live reply to a resumed reader: what it missed, then
// the events as they come, its turn released, until message-end, the
// reader leaves or falls behind, or the runtime closes.
func (s *session) follow(w http.ResponseWriter, r *http.Request, l *live, events [][]byte, sub *subscriber) {
	sseHeader(w)
	for _, b := range events {
		w.Write(b)
	}
	// Out now: the reader knows it is following.
	w.(http.Flusher).Flush()
	client := clientContext(r)
	closing := s.st.Closing()
	defer l.unsubscribe(sub)
	s.st.Release(func(context.Context) error {
		for {
			select {
			case b, ok := <-sub.ch:
				if !ok {
					return nil
				}
				if _, err := w.Write(b); err != nil {
					return nil
				}
				w.(http.Flusher).Flush()
			case <-client.Done():
				return nil
			case <-closing:
				return nil
			}
		}
	})
}

// clientKey keys the context of the client's own request in the context
// of a request forwarded to a session (see Service.fetch).
type clientKey struct{}

// clientContext returns the context that ends when the request's client
// goes away.
func clientContext(r *http.Request) context.Context {
	if c, ok := r.Context().Value(clientKey{}).(context.Context); ok {
		return c
	}
	return r.Context()
}
