package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
)

// Human approval. A call of a tool that needs approval (Tool.NeedsApproval)
// parks its reply: the round's other calls are answered, the call's part
// gets an Approval (requested), the reply is stored with status
// awaiting-approval and a row of table approvals holds the call and its
// deadline (Agent.ApprovalTimeout from the call), and the generation guard
// is released. Parked replies survive eviction and restarts.
//
//	GET  /approvals                 {"approvals": [PendingApproval...]}
//	POST /approvals/{toolCallId}    {"approved": bool, "reason": "..."}
//
// A decision (or the WebSocket frame cf_agent_tool_approval, or the RPC
// method approve) is stored at once. When every approval of the reply is
// decided, the reply goes on, once no other generation runs: an approved
// call runs, a denied one gets an error result saying so, the round ends,
// and the model is called again, the rounds appended to the same
// assistant message. POST answers like POST /messages (the message, or
// with Accept: text/event-stream its stream from message-start on), or
// with the message as it stands if other approvals are still pending.
// The deadline is a schedule of the session's: if nobody decided by then,
// the call is denied (reason "no decision before the deadline") and the
// reply goes on, with no client connected.

// approvalsTable is the migration of the approvals table.
const approvalsTable = `
CREATE TABLE approvals (
	message_id   TEXT NOT NULL,
	tool_call_id TEXT NOT NULL,
	tool_name    TEXT NOT NULL,
	input        BLOB,
	deadline     INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	approved     INTEGER,
	reason       TEXT NOT NULL DEFAULT '',
	decided_at   INTEGER,
	PRIMARY KEY (message_id, tool_call_id)
);
CREATE INDEX approvals_call ON approvals (tool_call_id);
`

// approvalSchedulePrefix starts the IDs of approval deadlines' schedules.
const approvalSchedulePrefix = "approval:"

// approvalScheduleID is the schedule of one call's deadline.
func approvalScheduleID(msgID, callID string) string {
	h := sha256.Sum256([]byte(msgID + "\x00" + callID))
	return approvalSchedulePrefix + hex.EncodeToString(h[:16])
}

// approved reports whether a person approved the call.
func (a *Approval) approved() bool { return a != nil && a.Approved != nil && *a.Approved }

// PendingApproval is a tool call awaiting a decision, in GET /approvals.
type PendingApproval struct {
	ToolCallID string          `json:"toolCallId"`
	ToolName   string          `json:"toolName"`
	Input      json.RawMessage `json:"input"`
	MessageID  string          `json:"messageId"`
	Deadline   time.Time       `json:"deadline"`
	CreatedAt  time.Time       `json:"createdAt"`
}

// ApprovalRequest is the body of POST /approvals/{toolCallId}.
type ApprovalRequest struct {
	Approved *bool  `json:"approved"`
	Reason   string `json:"reason,omitempty"`
}

func approvalData(p Part) map[string]any {
	d := map[string]any{"toolCallId": p.ToolCallID, "toolName": p.ToolName}
	if p.Approval != nil {
		d["approvalId"] = p.Approval.ID
		d["deadline"] = p.Approval.Deadline
	}
	return d
}

// park decides whether a call waits for a person: a call of a tool that
// needs approval and has none. Its part gets a requested Approval, and the
// request goes out on the reply's stream.
func (g *generation) park(call Part, tb *toolbox) bool {
	t := tb.byName[call.ToolName]
	if t == nil || !t.NeedsApproval || call.Approval.approved() {
		return false
	}
	deadline := g.s.st.Now().Add(g.a.ApprovalTimeout).UTC().Round(time.Millisecond)
	g.emit(g.live.requestApproval(call.ToolCallID, deadline))
	return true
}

// requestApproval marks the call's part as awaiting approval; the event
// takes one unit of the stream.
func (l *live) requestApproval(callID string, deadline time.Time) *streamEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	for i := len(l.parts) - 1; i >= 0; i-- {
		p := &l.parts[i]
		if p.Type == PartToolCall && p.ToolCallID == callID {
			p.Approval = &Approval{ID: callID, Deadline: deadline}
			return l.emitLocked(1, "tool-approval-request", approvalData(*p))
		}
	}
	return nil
}

// parkApprovals stores the reply's pending approvals and their deadlines,
// in the turn that stores the reply as awaiting approval.
func (g *generation) parkApprovals() error {
	st := g.s.st
	now := st.Now().UnixMilli()
	for _, p := range g.msg.Parts {
		if p.Type != PartToolCall || !p.Approval.Pending() {
			continue
		}
		if _, err := st.Exec(`INSERT OR IGNORE INTO approvals (message_id, tool_call_id, tool_name, input, deadline, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			g.msg.ID, p.ToolCallID, p.ToolName, []byte(p.Input), p.Approval.Deadline.UnixMilli(), now); err != nil {
			return fmt.Errorf("park approval: %w", err)
		}
		payload, _ := json.Marshal(schedulePayload{MessageID: g.msg.ID, ToolCallID: p.ToolCallID})
		if _, err := sessionScheduler.Add(st, schedule.Spec{ID: approvalScheduleID(g.msg.ID, p.ToolCallID),
			When: schedule.At(p.Approval.Deadline), Callback: callbackDeadline, Payload: payload}); err != nil {
			return fmt.Errorf("park approval: deadline: %w", err)
		}
	}
	return nil
}

// pendingApprovals lists the calls awaiting a decision, oldest first.
func (s *session) pendingApprovals() ([]PendingApproval, error) {
	rows, err := s.st.Query(`SELECT tool_call_id, tool_name, input, message_id, deadline, created_at FROM approvals WHERE approved IS NULL ORDER BY created_at, tool_call_id`)
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	out := make([]PendingApproval, 0, len(rows.Values))
	for _, v := range rows.Values {
		in := json.RawMessage(blob(v[2]))
		if len(in) == 0 {
			in = json.RawMessage("{}")
		}
		out = append(out, PendingApproval{ToolCallID: str(v[0]), ToolName: str(v[1]), Input: in, MessageID: str(v[3]),
			Deadline: time.UnixMilli(i64(v[4])).UTC(), CreatedAt: time.UnixMilli(i64(v[5])).UTC()})
	}
	return out, nil
}

// decide records a decision on the pending call callID (the latest such
// call, should a provider have reused an ID): in its row, in its reply's
// part, and by cancelling its deadline; connected clients get the updated
// message (cf_agent_message_updated). It returns the reply, and whether
// all of its approvals are now decided: then the reply may go on
// (continueReply). Errors: NotFound for no such call, Conflict if it was
// decided already.
func (s *session) decide(ctx context.Context, callID string, approved bool, reason string) (*Message, bool, error) {
	if len(reason) > maxErrorBytes {
		return nil, false, cairn.Errorf(cairn.TooLarge, "reason is %d bytes; the limit is %d", len(reason), maxErrorBytes)
	}
	rows, err := s.st.Query(`SELECT message_id, approved FROM approvals WHERE tool_call_id = ? ORDER BY approved IS NULL DESC, created_at DESC LIMIT 1`, callID)
	if err != nil {
		return nil, false, fmt.Errorf("find approval: %w", err)
	}
	if len(rows.Values) == 0 {
		return nil, false, cairn.Errorf(cairn.NotFound, "no tool call %q awaits approval", truncate(callID, 100))
	}
	if rows.Values[0][1] != nil {
		return nil, false, cairn.Errorf(cairn.Conflict, "tool call %q was decided already", truncate(callID, 100))
	}
	msgID := str(rows.Values[0][0])
	m, ok, err := s.store.get(msgID)
	if err != nil {
		return nil, false, err
	}
	if !ok {
		return nil, false, cairn.Errorf(cairn.NotFound, "the reply of tool call %q is gone", truncate(callID, 100))
	}
	found := false
	for i := range m.Parts {
		p := &m.Parts[i]
		if p.Type == PartToolCall && p.ToolCallID == callID && p.Approval.Pending() {
			a := *p.Approval
			a.Approved, a.Reason = &approved, reason
			p.Approval = &a
			found = true
		}
	}
	if !found {
		return nil, false, cairn.Errorf(cairn.Conflict, "tool call %q of reply %s does not await approval", truncate(callID, 100), msgID)
	}
	if err := s.store.update(&m); err != nil {
		return nil, false, err
	}
	if _, err := s.st.Exec(`UPDATE approvals SET approved = ?, reason = ?, decided_at = ? WHERE message_id = ? AND tool_call_id = ?`,
		approved, reason, s.st.Now().UnixMilli(), msgID, callID); err != nil {
		return nil, false, fmt.Errorf("decide approval: %w", err)
	}
	if _, err := sessionScheduler.Cancel(s.st, approvalScheduleID(msgID, callID)); err != nil {
		return nil, false, err
	}
	left, err := s.st.Query(`SELECT COUNT(*) FROM approvals WHERE message_id = ? AND approved IS NULL`, msgID)
	if err != nil {
		return nil, false, fmt.Errorf("decide approval: %w", err)
	}
	frame := mustJSON(map[string]any{"type": frameMsgUpdated, "message": ToUIMessage(&m)})
	for _, ws := range s.st.WebSockets(sdkTag) {
		ws.Send(ctx, cairn.Message{Text: true, Data: frame})
	}
	return &m, i64(left.Values[0][0]) == 0 && m.Status == AwaitingApproval, nil
}

// decideFrom decides for a client of the WebSocket protocol (frame or
// RPC): when the reply may go on, a job continues it, streamed to the
// session's clients as a continuation (cf_agent_stream_resuming offers it
// to a client that probes for it).
func (s *session) decideFrom(ctx context.Context, ws *cairn.WebSocket, callID string, approved bool, reason string) (*Message, error) {
	m, ready, err := s.decide(ctx, callID, approved, reason)
	if err != nil {
		return nil, err
	}
	if ready {
		s.enqueue(&job{reqID: "cairn-continue-" + newID()[4:], ws: ws, msgID: m.ID})
	}
	return m, nil
}

// serveApprovals serves /approvals and /approvals/{toolCallId}.
func (s *session) serveApprovals(w http.ResponseWriter, r *http.Request, callID string) {
	if callID == "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET", r.Method))
			return
		}
		list, err := s.pendingApprovals()
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		cairn.WriteJSON(w, http.StatusOK, map[string]any{"approvals": list})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use POST", r.Method))
		return
	}
	var in ApprovalRequest
	b, err := cairn.ReadBody(r)
	if err == nil {
		err = cairn.DecodeJSON(b, &in)
	}
	if err == nil && in.Approved == nil {
		err = cairn.Errorf(cairn.Invalid, "body must be {\"approved\": true|false}")
	}
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	stream, err := wantsSSE(w, r)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	m, ready, err := s.decide(r.Context(), callID, *in.Approved, in.Reason)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	if !ready {
		cairn.WriteJSON(w, http.StatusOK, m)
		return
	}
	out := s.socketSink(&uiSink{events: stream}, "", nil, nil)
	out.continuation = true
	s.continueReply(w, r, m.ID, out)
}

// deadlinePassed denies a call nobody decided in time, and continues its
// reply if that was its last pending approval. It runs in the alarm's
// turn.
func (s *session) deadlinePassed(ctx context.Context, msgID, callID string) error {
	rows, err := s.st.Query(`SELECT 1 FROM approvals WHERE message_id = ? AND tool_call_id = ? AND approved IS NULL`, msgID, callID)
	if err != nil {
		return err
	}
	if len(rows.Values) == 0 {
		return nil // decided meanwhile
	}
	m, ready, err := s.decide(ctx, callID, false, "no decision before the deadline")
	if err != nil || !ready {
		return err
	}
	out := s.socketSink(nil, "", nil, nil)
	out.continuation = true
	w := &captureWriter{}
	s.continueReply(w, jobRequest(ctx), m.ID, out)
	if w.status >= 400 {
		return cairn.Errorf(cairn.Unavailable, "continue reply %s: %s", m.ID, truncate(w.body.String(), 1000))
	}
	return nil
}

// continueReply takes a parked reply whose approvals are all decided
// through the rest of its tool loop, answering through out as POST
// /messages would: once no other generation runs, it answers the decided
// calls, ends their round and calls the model again.
func (s *session) continueReply(w http.ResponseWriter, r *http.Request, msgID string, out sink) {
	a := s.agent
	if a == nil {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name))
		return
	}
	if err := s.waitTurn(); err != nil {
		cairn.WriteError(w, err)
		return
	}
	defer s.next()
	m, ok, err := s.store.get(msgID)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	if !ok {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no message %s in this session", msgID))
		return
	}
	if m.Status != AwaitingApproval {
		// Another decision continued it first.
		cairn.WriteJSON(w, http.StatusOK, m)
		return
	}
	for _, p := range m.Parts {
		if p.Type == PartToolCall && p.Approval.Pending() {
			cairn.WriteJSON(w, http.StatusOK, m)
			return
		}
	}
	userID, err := s.store.userOf(m.ID)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	history, err := s.historyBefore(m.ID, a.MaxHistory)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	m.Status, m.Error = Streaming, ""
	if err := s.store.update(&m); err != nil {
		cairn.WriteError(w, err)
		return
	}
	g := &generation{s: s, a: a, w: w, user: &Message{ID: userID}, out: out, msg: &m}
	g.live = resumeLive(&m, userID)
	steps := Steps(m.Parts)
	last := steps[len(steps)-1]
	answered := make(map[string]bool)
	for _, p := range last.Results {
		answered[p.ToolCallID] = true
	}
	pre := func(ctx context.Context) roundResult {
		tb := g.toolbox(ctx)
		for _, c := range last.Parts {
			if c.Type != PartToolCall || c.Approval == nil || answered[c.ToolCallID] {
				continue
			}
			var p Part
			if c.Approval.approved() {
				p = g.dispatch(ctx, c, tb)
			} else {
				text := "a person denied this tool call"
				if c.Approval.Reason != "" {
					text += ": " + c.Approval.Reason
				}
				p = errorResult(c, text)
				p.Approval = c.Approval
			}
			g.emit(g.live.toolResult(p))
		}
		g.emit(g.live.endRound())
		return roundResult{status: Streaming}
	}
	g.loop(r, history, m.Rounds+1, pre)
}

// resumeLive makes the stream of a parked reply that goes on: its content
// so far, its last round open, at the position its stream reached.
func resumeLive(m *Message, userID string) *live {
	l := newLive(m.ID, userID, m.Model)
	rp := reply{msgID: m.ID, userID: userID, model: m.Model, parts: m.Parts, rounds: m.Rounds, open: true}
	rp.replay(-1, func(ev *streamEvent) { l.pos = ev.pos })
	l.parts = append([]Part(nil), m.Parts...)
	l.rounds = m.Rounds
	l.open = true
	return l
}

// historyBefore returns the last n complete messages before message id,
// oldest first: the context of a reply that goes on.
func (s *session) historyBefore(id string, n int) ([]Message, error) {
	rows, err := s.st.Query(`SELECT `+messageColumns+` FROM messages WHERE status = ? AND seq < (SELECT seq FROM messages WHERE id = ?) ORDER BY seq DESC LIMIT ?`,
		string(Complete), id, n)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	msgs, err := s.store.decode(rows)
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	return msgs, nil
}

// clearMessages deletes the session's messages (archived ones too) and
// approvals (with their deadlines).
func (s *session) clearMessages() error {
	// Archived messages go too (their blobs by the archiver).
	if err := s.clearArchive(); err != nil {
		return err
	}
	for _, q := range []string{`DELETE FROM messages`, `DELETE FROM message_chunks`, `DELETE FROM approvals`} {
		if _, err := s.st.Exec(q); err != nil {
			return fmt.Errorf("clear messages: %w", err)
		}
	}
	all, err := sessionScheduler.List(s.st)
	if err != nil {
		return err
	}
	for _, sc := range all {
		if sc.Callback == callbackDeadline {
			if _, err := sessionScheduler.Cancel(s.st, sc.ID); err != nil {
				return err
			}
		}
	}
	return nil
}
