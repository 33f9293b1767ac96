package coord

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/cairn-dev/cairn"
)

// PresenceClass is the presence namespace: one object per room. Members
// heartbeat with a TTL and expire by alarm; join, update and leave events
// stream over SSE and WebSocket. See docs/coordination.md.
//
// HTTP, under /v1/objects/presence/{room}/ (JSON bodies):
//
//	POST /heartbeat  HeartbeatArgs -> HeartbeatResult
//	POST /leave      LeaveArgs     -> LeaveResult
//	GET  /           PresenceList
//	GET  /observe    Server-Sent Events; with Upgrade: websocket, a WebSocket
//	GET  /connect?member=ID  WebSocket: a member for as long as it is open
//
// and the same as RPC: POST /v1/objects/presence/{room}/rpc/Heartbeat, ...
var PresenceClass = cairn.Class{
	New: newPresence,
	Migrations: []cairn.Migration{{SQL: `
CREATE TABLE members (
	member TEXT PRIMARY KEY,
	metadata TEXT,
	expires_at INTEGER,
	joined_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	socket INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX members_expires ON members (expires_at);
`}, feedMigration},
}

// MaxMembers bounds a room.
const MaxMembers = 10000

// Presence is an instance of the presence class.
type Presence struct {
	st *cairn.State
	f  *feed
}

func newPresence(st *cairn.State) (any, error) {
	p := &Presence{st: st, f: newFeed(st)}
	// Members connected by a WebSocket that is gone (a restart closes
	// sockets without close events) have left.
	rows, err := st.Query(`SELECT member FROM members WHERE socket = 1`)
	if err != nil {
		return nil, err
	}
	for _, v := range rows.Values {
		m := str(v[0])
		if len(st.WebSockets(memberTag(m))) == 0 {
			if err := p.remove(context.Background(), m, "disconnected"); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func memberTag(member string) string { return "member:" + member }

// Member is a member of a room.
type Member struct {
	Member    string          `json:"member"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	ExpiresAt int64           `json:"expires_at,omitempty"` // Unix ms; absent for a WebSocket member
	JoinedAt  int64           `json:"joined_at"`
	UpdatedAt int64           `json:"updated_at"`
	Socket    bool            `json:"socket,omitempty"` // present through a WebSocket
}

// HeartbeatArgs announces a member.
type HeartbeatArgs struct {
	Member   string          `json:"member"`
	TTLMs    int64           `json:"ttl_ms"`
	Metadata json.RawMessage `json:"metadata,omitempty"` // any JSON, up to 16 KiB; absent: unchanged
}

// HeartbeatResult says whether the heartbeat joined the member.
type HeartbeatResult struct {
	Joined    bool  `json:"joined"`
	ExpiresAt int64 `json:"expires_at"`
}

// Heartbeat makes a.Member present until a.TTLMs from now: a "join" event
// if it was not, an "update" event if its metadata changed. Heartbeats are
// idempotent: a client that timed out just sends the next one.
func (p *Presence) Heartbeat(ctx context.Context, a HeartbeatArgs) (HeartbeatResult, error) {
	if err := checkID("member", a.Member, true); err != nil {
		return HeartbeatResult{}, err
	}
	if err := checkTTL(a.TTLMs); err != nil {
		return HeartbeatResult{}, err
	}
	if err := checkMetadata(a.Metadata); err != nil {
		return HeartbeatResult{}, err
	}
	now := p.st.Now().UnixMilli()
	if err := p.expire(ctx, now); err != nil {
		return HeartbeatResult{}, err
	}
	exp := now + a.TTLMs
	joined, err := p.upsert(ctx, a.Member, a.Metadata, &exp, now)
	if err != nil {
		return HeartbeatResult{}, err
	}
	return HeartbeatResult{Joined: joined, ExpiresAt: exp}, p.setAlarm()
}

func checkMetadata(m json.RawMessage) error {
	if len(m) > MaxMetadataBytes {
		return cairn.Errorf(cairn.TooLarge, "metadata is %d bytes; the limit is %d", len(m), MaxMetadataBytes)
	}
	if len(m) > 0 && !json.Valid(m) {
		return cairn.Errorf(cairn.Invalid, "metadata must be JSON")
	}
	return nil
}

// upsert adds or refreshes a member; exp nil makes it a socket member.
func (p *Presence) upsert(ctx context.Context, member string, meta json.RawMessage, exp *int64, now int64) (bool, error) {
	cur, ok, err := p.get(member)
	if err != nil {
		return false, err
	}
	if !ok {
		n, err := p.count()
		if err != nil {
			return false, err
		}
		if n >= MaxMembers {
			return false, cairn.Errorf(cairn.TooLarge, "the room has %d members; the limit is %d", n, MaxMembers)
		}
		var metaV any
		if len(meta) > 0 {
			metaV = string(meta)
		}
		if _, err := p.st.Exec(`INSERT INTO members (member, metadata, expires_at, joined_at, updated_at, socket) VALUES (?, ?, ?, ?, ?, ?)`,
			member, metaV, nullable(exp), now, now, exp == nil); err != nil {
			return false, err
		}
		m := Member{Member: member, Metadata: meta, JoinedAt: now, UpdatedAt: now, Socket: exp == nil}
		if exp != nil {
			m.ExpiresAt = *exp
		}
		return true, p.f.publish(ctx, map[string]any{"type": "join", "member": m})
	}
	socket := cur.Socket || exp == nil
	if socket {
		exp = nil
	}
	changed := len(meta) > 0 && !bytes.Equal(meta, cur.Metadata)
	if len(meta) == 0 {
		meta = cur.Metadata
	}
	var metaV any
	if len(meta) > 0 {
		metaV = string(meta)
	}
	if _, err := p.st.Exec(`UPDATE members SET metadata = ?, expires_at = ?, updated_at = ?, socket = ? WHERE member = ?`,
		metaV, nullable(exp), now, socket, member); err != nil {
		return false, err
	}
	if changed {
		cur.Metadata, cur.UpdatedAt, cur.Socket = meta, now, socket
		cur.ExpiresAt = 0
		if exp != nil {
			cur.ExpiresAt = *exp
		}
		return false, p.f.publish(ctx, map[string]any{"type": "update", "member": cur})
	}
	return false, nil
}

func nullable(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func (p *Presence) count() (int64, error) {
	rows, err := p.st.Query(`SELECT COUNT(*) FROM members`)
	if err != nil {
		return 0, err
	}
	return i64(rows.Values[0][0]), nil
}

func memberOf(v []any) Member {
	m := Member{Member: str(v[0]), ExpiresAt: i64(v[2]), JoinedAt: i64(v[3]), UpdatedAt: i64(v[4]), Socket: i64(v[5]) == 1}
	if s := str(v[1]); s != "" {
		m.Metadata = json.RawMessage(s)
	}
	return m
}

const memberCols = `member, metadata, expires_at, joined_at, updated_at, socket`

func (p *Presence) get(member string) (Member, bool, error) {
	rows, err := p.st.Query(`SELECT `+memberCols+` FROM members WHERE member = ?`, member)
	if err != nil || len(rows.Values) == 0 {
		return Member{}, false, err
	}
	return memberOf(rows.Values[0]), true, nil
}

// remove deletes a member with a "leave" event.
func (p *Presence) remove(ctx context.Context, member, reason string) error {
	res, err := p.st.Exec(`DELETE FROM members WHERE member = ?`, member)
	if err != nil || res.RowsWritten == 0 {
		return err
	}
	return p.f.publish(ctx, map[string]any{"type": "leave", "member": map[string]string{"member": member}, "reason": reason})
}

// expire removes members whose TTL ran out.
func (p *Presence) expire(ctx context.Context, now int64) error {
	rows, err := p.st.Query(`SELECT member FROM members WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT 1000`, now)
	if err != nil {
		return err
	}
	for _, v := range rows.Values {
		if err := p.remove(ctx, str(v[0]), "expired"); err != nil {
			return err
		}
	}
	return nil
}

// setAlarm points the alarm at the next expiry.
func (p *Presence) setAlarm() error {
	rows, err := p.st.Query(`SELECT MIN(expires_at) FROM members WHERE expires_at IS NOT NULL`)
	if err != nil {
		return err
	}
	cur, ok, err := p.st.Alarm()
	if err != nil {
		return err
	}
	next, has := rows.Values[0][0].(int64)
	if !has {
		if ok {
			return p.st.DeleteAlarm()
		}
		return nil
	}
	at := time.UnixMilli(next)
	if ok && cur.Equal(at) {
		return nil
	}
	return p.st.SetAlarm(at)
}

// LeaveArgs names a member leaving.
type LeaveArgs struct {
	Member string `json:"member"`
}

// LeaveResult says whether the member was present.
type LeaveResult struct {
	Left bool `json:"left"`
}

// Leave removes a member at once, with a "leave" event. Idempotent.
func (p *Presence) Leave(ctx context.Context, a LeaveArgs) (LeaveResult, error) {
	if err := checkID("member", a.Member, true); err != nil {
		return LeaveResult{}, err
	}
	_, ok, err := p.get(a.Member)
	if err != nil || !ok {
		return LeaveResult{}, err
	}
	if err := p.remove(ctx, a.Member, "left"); err != nil {
		return LeaveResult{}, err
	}
	for _, ws := range p.st.WebSockets(memberTag(a.Member)) {
		ws.Close(ctx, 1000, "left")
	}
	return LeaveResult{Left: true}, p.setAlarm()
}

// PresenceList is a room's members, by id.
type PresenceList struct {
	Members []Member `json:"members"`
}

// List returns the members present (at most 10,000, by member id).
func (p *Presence) List(ctx context.Context) (PresenceList, error) {
	now := p.st.Now().UnixMilli()
	if err := p.expire(ctx, now); err != nil {
		return PresenceList{}, err
	}
	if err := p.setAlarm(); err != nil {
		return PresenceList{}, err
	}
	rows, err := p.st.Query(`SELECT ` + memberCols + ` FROM members ORDER BY member`)
	if err != nil {
		return PresenceList{}, err
	}
	out := PresenceList{Members: make([]Member, 0, len(rows.Values))}
	for _, v := range rows.Values {
		out.Members = append(out.Members, memberOf(v))
	}
	return out, nil
}

// Alarm implements cairn.AlarmHandler: members whose TTL ran out leave.
func (p *Presence) Alarm(ctx context.Context, _ cairn.AlarmInfo) error {
	if err := p.expire(ctx, p.st.Now().UnixMilli()); err != nil {
		return err
	}
	return p.setAlarm()
}

// WebSocketMessage implements cairn.WebSocketHandler. On a member's socket
// a JSON message {"metadata": ...} updates its metadata; any message is
// answered with the member list.
func (p *Presence) WebSocketMessage(ctx context.Context, ws *cairn.WebSocket, m cairn.Message) error {
	if member := string(ws.Attachment()); member != "" {
		var in struct {
			Metadata json.RawMessage `json:"metadata"`
		}
		if json.Unmarshal(m.Data, &in) == nil && len(in.Metadata) > 0 {
			if err := checkMetadata(in.Metadata); err != nil {
				b, _ := json.Marshal(map[string]any{"type": "error", "message": cairn.ErrorMessage(err)})
				return ws.Send(ctx, cairn.Message{Text: true, Data: b})
			}
			if _, err := p.upsert(ctx, member, in.Metadata, nil, p.st.Now().UnixMilli()); err != nil {
				return err
			}
			return nil
		}
	}
	list, err := p.List(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"type": "state", "state": list})
	return ws.Send(ctx, cairn.Message{Text: true, Data: b})
}

// WebSocketClose implements cairn.WebSocketHandler: a member's socket
// closing is its leaving.
func (p *Presence) WebSocketClose(ctx context.Context, ws *cairn.WebSocket, code int, reason string) error {
	member := string(ws.Attachment())
	if member == "" {
		return nil
	}
	cur, ok, err := p.get(member)
	if err != nil || !ok || !cur.Socket {
		return err
	}
	for _, other := range p.st.WebSockets(memberTag(member)) {
		if other != ws {
			return nil // still connected through another socket
		}
	}
	return p.remove(ctx, member, "disconnected")
}

// ServeHTTP implements http.Handler.
func (p *Presence) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	snapshot := func() (any, error) { return p.List(ctx) }
	switch r.URL.Path {
	case "/heartbeat":
		post(w, r, func(a HeartbeatArgs) (HeartbeatResult, error) { return p.Heartbeat(ctx, a) })
	case "/leave":
		post(w, r, func(a LeaveArgs) (LeaveResult, error) { return p.Leave(ctx, a) })
	case "/", "/list":
		get(w, r, func() (PresenceList, error) { return p.List(ctx) })
	case "/observe":
		if isWebSocket(r) {
			if _, err := p.f.acceptObserver(r, snapshot); err != nil {
				writeError(w, err)
			}
			return
		}
		p.f.serveSSE(w, r, snapshot)
	case "/connect":
		p.connect(w, r)
	default:
		notFound(w, r)
	}
}

// connect accepts a member's WebSocket: present while it is open.
func (p *Presence) connect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	member := q.Get("member")
	if err := checkID("member", member, true); err != nil {
		writeError(w, err)
		return
	}
	meta := json.RawMessage(q.Get("metadata"))
	if err := checkMetadata(meta); err != nil {
		writeError(w, err)
		return
	}
	if !isWebSocket(r) {
		writeError(w, cairn.Errorf(cairn.Invalid, "/connect needs a WebSocket upgrade"))
		return
	}
	if _, err := p.upsert(ctx, member, meta, nil, p.st.Now().UnixMilli()); err != nil {
		writeError(w, err)
		return
	}
	ws, err := p.f.acceptObserver(r, func() (any, error) { return p.List(ctx) }, memberTag(member))
	if err != nil {
		if rerr := p.remove(ctx, member, "disconnected"); rerr != nil {
			err = rerr
		}
		writeError(w, err)
		return
	}
	// The socket now carries the member: after this, errors can only be
	// told through it.
	ws.SetAttachment([]byte(member))
	p.setAlarm()
}
