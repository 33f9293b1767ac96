package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// RPCMaxInFlight caps the calls in flight on one RPC socket. A call beyond
// it is answered at once with an "unavailable" error rather than waiting,
// so that the socket's reader never blocks on a slow object and a cancel
// frame always gets through.
const RPCMaxInFlight = 256

// rpcEnvelopeBytes is what a frame may hold beyond MaxBodyBytes of
// arguments: the id, namespace, name and method, escaped.
const rpcEnvelopeBytes = 64 << 10

// rpcKeepBuffer is the largest frame buffer a socket keeps between frames;
// a bigger one (a large argument) is dropped after use.
const rpcKeepBuffer = 64 << 10

// rpcFrame is a frame from the client: a call, or the cancel of one.
type rpcFrame struct {
	ID     json.RawMessage `json:"id"`
	Cancel json.RawMessage `json:"cancel"`
	NS     string          `json:"ns"`
	Name   string          `json:"name"`
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args"`
}

// decodeFrame decodes a frame strictly: a member the protocol does not
// have (a misspelt "args") is an error rather than silently dropped.
func decodeFrame(b []byte, f *rpcFrame) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(f); err != nil {
		return err
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 {
		return errors.New("data after the JSON object")
	}
	return nil
}

// rpcErrorAnswer is the answer to a call that failed.
type rpcErrorAnswer struct {
	ID    json.RawMessage `json:"id"`
	Error rpcError        `json:"error"`
}

type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

// rpcSockets is the set of live RPC sockets, which http.Server.Shutdown
// does not see (they are hijacked connections).
type rpcSockets struct {
	mu      sync.Mutex
	live    map[*rpcSocket]struct{}
	closing bool // Shutdown began: new sockets are refused
}

// add registers sock, unless the server is shutting down.
func (ss *rpcSockets) add(sock *rpcSocket) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return false
	}
	if ss.live == nil {
		ss.live = make(map[*rpcSocket]struct{})
	}
	ss.live[sock] = struct{}{}
	return true
}

func (ss *rpcSockets) remove(sock *rpcSocket) {
	ss.mu.Lock()
	delete(ss.live, sock)
	ss.mu.Unlock()
}

// shutdown refuses new sockets and closes the live ones with 1001 (going
// away), each once its calls in progress finished or ctx ended, and waits
// for their goroutines (or ctx).
func (ss *rpcSockets) shutdown(ctx context.Context) error {
	ss.mu.Lock()
	ss.closing = true
	socks := make([]*rpcSocket, 0, len(ss.live))
	for sock := range ss.live {
		socks = append(socks, sock)
	}
	ss.mu.Unlock()
	errs := make([]error, len(socks))
	var wg sync.WaitGroup
	for i, sock := range socks {
		wg.Go(func() { errs[i] = sock.drain(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// rpcSocket is one client's socket at /v1/rpc. The request goroutine reads
// frames (serve); each call runs on a worker goroutine, which writes the
// call's answer itself (conn.Write is safe for concurrent use), so that
// answers go out in completion order without a writer goroutine between.
type rpcSocket struct {
	s    *Server
	conn *websocket.Conn
	raw  net.Conn // under conn, to cut it when a close handshake hangs
	tok  *Token

	ctx    context.Context // the calls' parent; canceled when the socket ends
	cancel context.CancelFunc
	work   chan *rpcJob   // to an idle worker
	wg     sync.WaitGroup // the workers
	done   chan struct{}  // closed when serve returned

	mu       sync.Mutex
	calls    map[string]context.CancelFunc // running, by id (see idKey), until answered
	running  int                           // calls whose goroutine has not ended
	draining bool                          // Shutdown: no new calls
	drained  chan struct{}                 // closed when draining and running is 0

	ok      prometheus.Counter  // calls answered with a result; nil without metrics
	latency prometheus.Observer // nil without metrics
}

// serveRPC serves GET /v1/rpc: a WebSocket that carries object RPC calls
// as JSON text frames, many at a time (see docs/api.md, "RPC over a
// WebSocket").
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	tok, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if !isWebSocket(r) {
		w.Header().Set("Upgrade", "websocket")
		writeErrorCode(w, http.StatusUpgradeRequired, string(cairn.Invalid), "/v1/rpc is a WebSocket: send GET with Upgrade: websocket")
		return
	}
	hw := &hijackRecorder{ResponseWriter: w}
	c, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		// Browsers from other origins are refused unless they carry a
		// token; the request was authenticated above.
		InsecureSkipVerify: len(s.hashes) > 0,
		Subprotocols:       []string{Subprotocol},
	})
	if err != nil {
		return // Accept wrote the response
	}
	c.SetReadLimit(s.MaxBodyBytes + rpcEnvelopeBytes)
	sock := &rpcSocket{s: s, conn: c, raw: hw.conn, tok: tok, work: make(chan *rpcJob), done: make(chan struct{}), calls: make(map[string]context.CancelFunc)}
	sock.ctx, sock.cancel = context.WithCancel(context.Background())
	go sock.keepalive()
	if s.Metrics != nil {
		sock.ok = s.Metrics.requests.WithLabelValues(rpcRoute, "200")
		sock.latency = s.Metrics.latency.WithLabelValues(rpcRoute)
	}
	if !s.rpcSockets.add(sock) {
		sock.cancel()
		c.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer s.rpcSockets.remove(sock)
	sock.serve()
}

// keepalive pings the client every RPCPingInterval and closes the socket
// if no pong comes back within the next interval: a client that vanished
// without closing (its machine died, the network dropped it) then leaves,
// and its calls are canceled (a waiting acquire leaves the line), sooner
// than TCP's keepalive would notice.
func (sock *rpcSocket) keepalive() {
	iv := sock.s.RPCPingInterval
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-sock.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(sock.ctx, iv)
		err := sock.conn.Ping(ctx)
		cancel()
		if err != nil {
			if sock.ctx.Err() == nil {
				sock.conn.CloseNow() // serve's read fails: it cancels the calls
			}
			return
		}
	}
}

// rpcRoute is the route label of RPC calls made over a socket.
const rpcRoute = "rpc-socket"

// serve reads frames until the socket fails or closes, then cancels the
// calls in flight and waits for them. A frame too large makes Read fail,
// and the library closes the socket with 1009.
func (sock *rpcSocket) serve() {
	defer close(sock.done)
	var buf bytes.Buffer
	for {
		typ, rd, err := sock.conn.Reader(context.Background())
		if err != nil {
			break
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			break
		}
		if typ != websocket.MessageText || !utf8.Valid(buf.Bytes()) {
			// A decoder would turn invalid UTF-8 into U+FFFD: another name.
			sock.answerError(nil, cairn.Errorf(cairn.Invalid, "frames must be UTF-8 text, one JSON object each"))
		} else {
			sock.frame(buf.Bytes())
		}
		if buf.Cap() > rpcKeepBuffer {
			buf = bytes.Buffer{}
		}
	}
	sock.cancel()
	sock.wg.Wait()
	sock.conn.CloseNow()
}

// frame handles one text frame: starts a call, or cancels one. It answers
// malformed frames and refused calls itself.
func (sock *rpcSocket) frame(b []byte) {
	job := new(rpcJob)
	f := &job.f
	if err := decodeFrame(b, f); err != nil {
		// Answer with the id if the frame is a JSON object that has one.
		var probe struct {
			ID json.RawMessage `json:"id"`
		}
		var id json.RawMessage
		if json.Unmarshal(b, &probe) == nil && validID(probe.ID) {
			id = probe.ID
		}
		sock.answerError(id, cairn.Errorf(cairn.Invalid, "malformed frame: %v", err))
		return
	}
	if f.Cancel != nil {
		if f.ID != nil || f.NS != "" || f.Name != "" || f.Method != "" || f.Args != nil {
			sock.answerError(nil, cairn.Errorf(cairn.Invalid, "malformed frame: a cancel frame holds only \"cancel\""))
			return
		}
		if !validID(f.Cancel) {
			sock.answerError(nil, cairn.Errorf(cairn.Invalid, "malformed frame: cancel must be the id of a call, a number or a string"))
			return
		}
		sock.mu.Lock()
		cancel := sock.calls[idKey(f.Cancel)]
		sock.mu.Unlock()
		if cancel != nil {
			cancel() // the call answers for itself; an unknown id is ignored: the answer crossed the cancel
		}
		return
	}
	if !validID(f.ID) {
		sock.answerError(nil, cairn.Errorf(cairn.Invalid, "malformed frame: id must be a number or a string"))
		return
	}
	if f.NS == "" || f.Name == "" || f.Method == "" {
		sock.answerError(f.ID, cairn.Errorf(cairn.Invalid, "malformed frame: ns, name and method are required"))
		return
	}
	key := idKey(f.ID)
	sock.mu.Lock()
	var refuse error
	switch {
	case sock.draining:
		refuse = cairn.Errorf(cairn.Unavailable, "server is shutting down")
	case sock.calls[key] != nil:
		refuse = cairn.Errorf(cairn.Invalid, "id %s is already in flight on this socket", f.ID)
	case sock.running >= RPCMaxInFlight:
		refuse = cairn.Errorf(cairn.Unavailable, "too many calls in flight on this socket (at most %d)", RPCMaxInFlight)
	}
	if refuse != nil {
		sock.mu.Unlock()
		sock.answerError(f.ID, refuse)
		return
	}
	job.key = key
	job.ctx, job.cancel = context.WithCancel(sock.ctx)
	sock.calls[key] = job.cancel
	sock.running++
	sock.mu.Unlock()
	select {
	case sock.work <- job:
	default:
		sock.wg.Add(1)
		go sock.worker(job)
	}
}

// rpcJob is a call handed to a worker.
type rpcJob struct {
	ctx    context.Context
	cancel context.CancelFunc
	key    string
	f      rpcFrame
}

// worker runs job, then the calls the reader hands it while it is idle,
// until the socket ends. Workers outlive their calls because a fresh
// goroutine per call spends much of the call growing its stack.
func (sock *rpcSocket) worker(job *rpcJob) {
	defer sock.wg.Done()
	for {
		sock.call(job)
		select {
		case job = <-sock.work:
		case <-sock.ctx.Done():
			return
		}
	}
}

// call runs one call and writes its answer.
func (sock *rpcSocket) call(job *rpcJob) {
	ctx, f := job.ctx, &job.f
	var start time.Time
	if sock.latency != nil {
		start = time.Now()
	}
	out, err := sock.invoke(ctx, f)
	// The id is free once the call has its outcome: a client may reuse it
	// as soon as it reads the answer.
	sock.mu.Lock()
	delete(sock.calls, job.key)
	sock.mu.Unlock()
	job.cancel()
	// Counted before the answer goes out, so that a client that reads it
	// sees it counted.
	if sock.latency != nil {
		sock.latency.Observe(time.Since(start).Seconds())
		if err == nil {
			sock.ok.Inc()
		}
	}
	if err == nil {
		buf := rpcBuffers.Get().(*[]byte)
		b := append((*buf)[:0], `{"id":`...)
		b = append(b, f.ID...)
		b = append(b, `,"result":`...)
		b = append(b, out...)
		b = append(b, '}')
		sock.conn.Write(context.Background(), websocket.MessageText, b)
		if cap(b) <= rpcKeepBuffer {
			*buf = b
			rpcBuffers.Put(buf)
		}
	} else {
		sock.answerError(f.ID, err)
	}
	sock.mu.Lock()
	sock.running--
	if sock.running == 0 && sock.drained != nil {
		close(sock.drained)
		sock.drained = nil
	}
	sock.mu.Unlock()
}

// rpcBuffers holds buffers for encoding answers.
var rpcBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// invoke checks a call as the HTTP route would (scope, namespace, name,
// size, JSON) and runs it.
func (sock *rpcSocket) invoke(ctx context.Context, f *rpcFrame) (json.RawMessage, error) {
	if !sock.tok.allows(f.NS) {
		return nil, errForbidden("this token may not reach namespace " + quote(f.NS))
	}
	ns, err := sock.s.rt.Namespace(f.NS)
	if err != nil {
		return nil, err
	}
	stub, err := ns.GetByName(f.Name)
	if err != nil {
		return nil, err
	}
	if int64(len(f.Args)) > sock.s.MaxBodyBytes {
		return nil, cairn.Errorf(cairn.TooLarge, "request body exceeds %d bytes", sock.s.MaxBodyBytes)
	}
	// The envelope was decoded, so Args is valid JSON (null for none).
	return stub.CallJSON(ctx, f.Method, f.Args)
}

// forbiddenError is the answer for a namespace out of the token's scope:
// code "forbidden", which is an HTTP code, not a cairn one.
type forbiddenError struct{ msg string }

func (e *forbiddenError) Error() string { return "forbidden: " + e.msg }

func errForbidden(msg string) error { return &forbiddenError{msg} }

// answerError writes an error answer for the call id (null if unknown).
func (sock *rpcSocket) answerError(id json.RawMessage, err error) {
	a := rpcErrorAnswer{ID: id}
	if fe, ok := err.(*forbiddenError); ok {
		a.Error = rpcError{Code: "forbidden", Message: fe.msg, Status: http.StatusForbidden}
	} else {
		code := cairn.ErrorCode(err)
		a.Error = rpcError{Code: string(code), Message: cairn.ErrorMessage(err), Status: Status(code)}
	}
	if a.ID == nil {
		a.ID = json.RawMessage("null")
	}
	if sock.s.Metrics != nil {
		sock.s.Metrics.requests.WithLabelValues(rpcRoute, strconv.Itoa(a.Error.Status)).Inc()
	}
	b, merr := json.Marshal(a)
	if merr != nil {
		return
	}
	sock.conn.Write(context.Background(), websocket.MessageText, b)
}

// drain closes the socket for Shutdown: no new calls; once those in
// flight are answered (or ctx ends) a close frame with 1001, and then it
// waits for serve to return. It returns ctx's error if ctx cut it short
// (the socket is closed regardless).
func (sock *rpcSocket) drain(ctx context.Context) error {
	sock.mu.Lock()
	sock.draining = true
	var drained chan struct{}
	if sock.running > 0 {
		drained = make(chan struct{})
		sock.drained = drained
	}
	sock.mu.Unlock()
	var err error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			err = ctx.Err() // the calls in progress are cut short
		}
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		sock.conn.Close(websocket.StatusGoingAway, "server shutting down")
	}()
	select {
	case <-closed:
	case <-ctx.Done():
		// The peer does not answer the close frame: cut the
		// connection, which ends Close (CloseNow would wait for it).
		sock.raw.Close()
		<-closed
	}
	select {
	case <-sock.done:
	case <-ctx.Done():
		select {
		case <-sock.done:
		default:
			err = ctx.Err() // a call ignores its canceled context
		}
	}
	return err
}

// hijackRecorder keeps the connection websocket.Accept hijacks.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

// Hijack implements http.Hijacker.
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, rw, err
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// validID reports whether id is a JSON number or string.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	switch c := id[0]; {
	case c == '"':
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

// idKey returns the key of a call id: a number's JSON text, or a string's
// value after '"' (so that "a" and "\u0061" are the same id).
func idKey(id json.RawMessage) string {
	if id[0] != '"' {
		return string(id)
	}
	if bytes.IndexByte(id, '\\') >= 0 {
		var s string
		if json.Unmarshal(id, &s) == nil {
			return `"` + s
		}
	}
	return string(id[:len(id)-1])
}
