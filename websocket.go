package cairn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
)

// Hibernatable WebSockets (G8). The HTTP layer owns the connections; the
// runtime keeps, per object, the sockets it accepted, with their tags and
// attachment, in memory and apart from the instance: an object can be
// evicted while its sockets stay open, and a message re-activates it.

// Message is one WebSocket message.
type Message struct {
	Text bool // a text message; otherwise binary
	Data []byte
}

// SocketConn is one WebSocket connection, implemented by the HTTP layer.
type SocketConn interface {
	// Send sends one message. It is safe for concurrent use.
	Send(ctx context.Context, m Message) error
	// Close closes the connection with a close code and reason.
	Close(code int, reason string) error
}

// Upgrader completes a WebSocket handshake. The HTTP layer puts one in the
// context of an upgrade request (WithUpgrader); the runtime calls Upgrade
// once the accepting turn is durable.
type Upgrader interface {
	Upgrade(ws *WebSocket) (SocketConn, error)
}

type upgraderKey struct{}

// WithUpgrader returns a context carrying u, for a request that asks for a
// WebSocket upgrade.
func WithUpgrader(ctx context.Context, u Upgrader) context.Context {
	return context.WithValue(ctx, upgraderKey{}, u)
}

// WebSocketHandler receives the events of an object's WebSockets. Each is
// delivered as a turn, like any other event.
type WebSocketHandler interface {
	WebSocketMessage(ctx context.Context, ws *WebSocket, m Message) error
	WebSocketClose(ctx context.Context, ws *WebSocket, code int, reason string) error
}

// Socket limits.
const (
	MaxSocketTags       = 10
	MaxSocketTagBytes   = 256
	MaxSocketAttachment = 64 << 10
)

// SocketOptions are given when accepting a WebSocket.
type SocketOptions struct {
	Tags       []string // for State.WebSockets
	Attachment []byte   // kept with the socket across hibernation
}

// WebSocket is an object's handle on one accepted socket. It stays valid
// across eviction of the object.
type WebSocket struct {
	rt   *Runtime
	ref  ObjectRef
	id   string
	tags []string

	mu         sync.Mutex
	attachment []byte
	conn       SocketConn
	pending    []Message // sent before the handshake completed
	closed     bool
}

// ID returns the socket's ID, unique within the runtime.
func (ws *WebSocket) ID() string { return ws.id }

// Tags returns the socket's tags.
func (ws *WebSocket) Tags() []string { return append([]string(nil), ws.tags...) }

// Object returns the object the socket belongs to.
func (ws *WebSocket) Object() ObjectRef { return ws.ref }

// Attachment returns the socket's attachment.
func (ws *WebSocket) Attachment() []byte {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return append([]byte(nil), ws.attachment...)
}

// SetAttachment replaces the socket's attachment (at most
// MaxSocketAttachment bytes). It lives in memory with the socket, not in
// storage: it survives eviction of the object, not a restart.
func (ws *WebSocket) SetAttachment(b []byte) error {
	if len(b) > MaxSocketAttachment {
		return Errorf(TooLarge, "attachment of %d bytes; the limit is %d", len(b), MaxSocketAttachment)
	}
	ws.mu.Lock()
	ws.attachment = append([]byte(nil), b...)
	ws.mu.Unlock()
	return nil
}

// gate returns the turn holding the object in ctx, if Send was called from
// one: then the output waits for the turn's writes to be durable (G5).
func gate(ctx context.Context) *turn {
	if t, ok := ctx.Value(turnKey{}).(*turn); ok && t.holding && !t.stale {
		return t
	}
	return nil
}

// Send sends m. Called with a handler's context, the message leaves once the
// turn's writes are durable, and is dropped if the turn fails; with another
// context it leaves at once.
func (ws *WebSocket) Send(ctx context.Context, m Message) error {
	m.Data = append([]byte(nil), m.Data...)
	if t := gate(ctx); t != nil {
		t.outbox = append(t.outbox, func() { ws.send(context.Background(), m) })
		return nil
	}
	return ws.send(ctx, m)
}

func (ws *WebSocket) send(ctx context.Context, m Message) error {
	ws.mu.Lock()
	if ws.closed {
		ws.mu.Unlock()
		return Errorf(Invalid, "socket is closed")
	}
	conn := ws.conn
	if conn == nil {
		ws.pending = append(ws.pending, m)
		ws.mu.Unlock()
		return nil
	}
	ws.mu.Unlock()
	return conn.Send(ctx, m)
}

// Close closes the socket with a close code and reason, gated like Send.
// No close event is delivered for a close the object made itself.
func (ws *WebSocket) Close(ctx context.Context, code int, reason string) error {
	if t := gate(ctx); t != nil {
		t.outbox = append(t.outbox, func() { ws.close(code, reason) })
		return nil
	}
	return ws.close(code, reason)
}

func (ws *WebSocket) close(code int, reason string) error {
	ws.mu.Lock()
	if ws.closed {
		ws.mu.Unlock()
		return nil
	}
	ws.closed = true
	conn := ws.conn
	ws.mu.Unlock()
	ws.rt.sockets.remove(ws)
	if conn != nil {
		return conn.Close(code, reason)
	}
	return nil
}

// bind attaches the connection once the handshake is done, and sends what
// the object sent meanwhile.
func (ws *WebSocket) bind(conn SocketConn) {
	ws.mu.Lock()
	ws.conn = conn
	pending := ws.pending
	ws.pending = nil
	closed := ws.closed
	ws.mu.Unlock()
	if closed {
		conn.Close(1000, "")
		return
	}
	for _, m := range pending {
		conn.Send(context.Background(), m)
	}
}

// Deliver hands a message received on the socket to the object as an event,
// activating the object if it was evicted. The HTTP layer calls it from the
// socket's read loop; the auto-response, if it matches, is answered without
// waking the object.
func (ws *WebSocket) Deliver(ctx context.Context, m Message) error {
	if resp, ok := ws.rt.sockets.autoResponse(ws.ref.ID, m); ok {
		return ws.send(ctx, resp)
	}
	return ws.event(ctx, func(t *turn, h WebSocketHandler) error {
		return h.WebSocketMessage(t.ctx, ws, m)
	})
}

// Closed tells the object that the peer closed the socket (or it failed),
// delivering the close event.
func (ws *WebSocket) Closed(ctx context.Context, code int, reason string) error {
	ws.mu.Lock()
	was := ws.closed
	ws.closed = true
	ws.mu.Unlock()
	ws.rt.sockets.remove(ws)
	if was {
		return nil
	}
	return ws.event(ctx, func(t *turn, h WebSocketHandler) error {
		return h.WebSocketClose(t.ctx, ws, code, reason)
	})
}

func (ws *WebSocket) event(ctx context.Context, fn func(t *turn, h WebSocketHandler) error) error {
	ns, err := ws.rt.Namespace(ws.ref.Namespace)
	if err != nil {
		return err
	}
	o, err := ws.rt.get(ns, ws.ref)
	if err != nil {
		return err
	}
	defer o.done()
	return o.run(ctx, func(t *turn, inst *instance) error {
		h, ok := inst.value.(WebSocketHandler)
		if !ok {
			return Errorf(NotFound, "objects of namespace %q do not handle WebSocket events", ws.ref.Namespace)
		}
		return fn(t, h)
	})
}

// AcceptWebSocket accepts the WebSocket upgrade request r, from the object's
// HTTP handler. The handshake completes once the turn is durable; messages
// then arrive as WebSocketMessage events, also after the object was
// evicted. The handler must not write a response of its own.
func (st *State) AcceptWebSocket(r *http.Request, opts SocketOptions) (*WebSocket, error) {
	t, err := st.check()
	if err != nil {
		return nil, err
	}
	u, ok := r.Context().Value(upgraderKey{}).(Upgrader)
	if !ok {
		return nil, Errorf(Invalid, "not a WebSocket upgrade request")
	}
	if t.accept != nil {
		return nil, Errorf(Invalid, "the request's WebSocket was already accepted")
	}
	if len(opts.Tags) > MaxSocketTags {
		return nil, Errorf(Invalid, "at most %d tags", MaxSocketTags)
	}
	for _, tag := range opts.Tags {
		if len(tag) == 0 || len(tag) > MaxSocketTagBytes {
			return nil, Errorf(Invalid, "a tag must be 1 to %d bytes", MaxSocketTagBytes)
		}
	}
	if len(opts.Attachment) > MaxSocketAttachment {
		return nil, Errorf(TooLarge, "attachment of %d bytes; the limit is %d", len(opts.Attachment), MaxSocketAttachment)
	}
	var id [12]byte
	rand.Read(id[:])
	ws := &WebSocket{
		rt: st.o.rt, ref: st.o.ref, id: hex.EncodeToString(id[:]),
		tags:       append([]string(nil), opts.Tags...),
		attachment: append([]byte(nil), opts.Attachment...),
	}
	st.o.rt.sockets.add(ws)
	t.accept = &acceptance{ws: ws, up: u}
	return ws, nil
}

type acceptance struct {
	ws *WebSocket
	up Upgrader
}

// WebSockets returns the object's open sockets carrying tag, or all of them
// if tag is empty.
func (st *State) WebSockets(tag string) []*WebSocket {
	return st.o.rt.sockets.list(st.o.ref.ID, tag)
}

// SetWebSocketAutoResponse makes the runtime answer a message equal to
// request with response on any of the object's sockets, without waking the
// object (a keep-alive ping). An empty request removes it.
func (st *State) SetWebSocketAutoResponse(request, response Message) {
	st.o.rt.sockets.setAuto(st.o.ref.ID, request, response)
}

// socketTable holds the runtime's sockets by object.
type socketTable struct {
	mu    sync.Mutex
	byObj map[ID]map[*WebSocket]struct{}
	auto  map[ID][2]Message
	n     int
}

func (s *socketTable) add(ws *WebSocket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byObj == nil {
		s.byObj = make(map[ID]map[*WebSocket]struct{})
	}
	m := s.byObj[ws.ref.ID]
	if m == nil {
		m = make(map[*WebSocket]struct{})
		s.byObj[ws.ref.ID] = m
	}
	m[ws] = struct{}{}
	s.n++
}

func (s *socketTable) remove(ws *WebSocket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.byObj[ws.ref.ID]
	if _, ok := m[ws]; !ok {
		return
	}
	delete(m, ws)
	s.n--
	if len(m) == 0 {
		delete(s.byObj, ws.ref.ID)
	}
}

func (s *socketTable) list(id ID, tag string) []*WebSocket {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*WebSocket
	for ws := range s.byObj[id] {
		if tag == "" {
			out = append(out, ws)
			continue
		}
		for _, t := range ws.tags {
			if t == tag {
				out = append(out, ws)
				break
			}
		}
	}
	return out
}

func (s *socketTable) all() []*WebSocket {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*WebSocket
	for _, m := range s.byObj {
		for ws := range m {
			out = append(out, ws)
		}
	}
	return out
}

func (s *socketTable) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *socketTable) setAuto(id ID, req, resp Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.auto == nil {
		s.auto = make(map[ID][2]Message)
	}
	if len(req.Data) == 0 {
		delete(s.auto, id)
		return
	}
	s.auto[id] = [2]Message{{Text: req.Text, Data: append([]byte(nil), req.Data...)}, {Text: resp.Text, Data: append([]byte(nil), resp.Data...)}}
}

func (s *socketTable) autoResponse(id ID, m Message) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.auto[id]
	if !ok || p[0].Text != m.Text || string(p[0].Data) != string(m.Data) {
		return Message{}, false
	}
	return p[1], true
}
