package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/cairn-dev/cairn"
)

// session is an instance of the agent class: one chat session.
type session struct {
	svc   *Service
	st    *cairn.State
	store store
	agent *Agent // nil if the session's agent is no longer configured
	name  string // the agent's name, from the object name

	// The generation guard: one generation at a time per session, in
	// arrival order (G3 keeps turns in order; a generation spans a
	// Release). Touched only while holding the turn, but from the
	// goroutines of several events in turn, so a mutex keeps the race
	// detector's view and ours the same.
	mu      sync.Mutex
	busy    bool
	waiters []chan struct{} // closed, in order, when the generation before ends

	// The cancel switch of the generation in flight, guarded by mu: stop
	// ends its model call; stopped records that a client asked for it, so
	// that the reply is stored as cancelled whatever the provider said.
	stop    context.CancelFunc
	stopped bool
}

func (s *Service) newSession(st *cairn.State) (any, error) {
	a, name := s.agentOf(st.Name())
	ss := &session{svc: s, st: st, store: store{st}, agent: a, name: name}
	// A generation is never in flight when its object activates (a
	// released turn holds the object), so a streaming message is one the
	// process left behind when it stopped.
	if err := ss.store.interrupt(); err != nil {
		return nil, err
	}
	return ss, nil
}

// ServeHTTP serves GET and POST /messages, POST /cancel and POST
// /chat/completions.
func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/messages":
	case "/cancel", "/chat/completions":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use POST", r.Method))
			return
		}
		if r.URL.Path == "/cancel" {
			s.cancel(w)
		} else {
			s.completions(w, r)
		}
		return
	default:
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no route for %s %s", r.Method, r.URL.Path))
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.history(w, r)
	case http.MethodPost:
		s.post(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET or POST", r.Method))
	}
}

// Page is a page of history, newest first. Next, if set, is the cursor
// (?before=) of the following, older page.
type Page struct {
	Messages []Message `json:"messages"`
	Next     string    `json:"next,omitempty"`
}

// maxPage bounds a history page.
const maxPage = 200

func (s *session) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > maxPage {
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "limit must be 1 to %d", maxPage))
			return
		}
		limit = n
	}
	msgs, more, err := s.store.page(q.Get("before"), limit)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	p := Page{Messages: msgs}
	if more && len(msgs) > 0 {
		p.Next = msgs[len(msgs)-1].ID
	}
	cairn.WriteJSON(w, http.StatusOK, p)
}

// SendRequest is the body of POST /messages.
type SendRequest struct {
	Text string `json:"text"`
}

func (s *session) post(w http.ResponseWriter, r *http.Request) {
	a := s.agent
	if a == nil {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name))
		return
	}
	in, err := decodeSend(r, a.MaxTextBytes)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	stream := wantsSSE(r)
	if stream {
		if _, ok := w.(http.Flusher); !ok {
			cairn.WriteError(w, cairn.Errorf(cairn.Internal, "streaming is not supported"))
			return
		}
	}
	s.generate(w, r, a, in.Text, &uiSink{sse: stream})
}

// cancel serves POST /cancel: it stops the generation in flight, if any.
// Its reply is then stored with status cancelled and the output so far.
func (s *session) cancel(w http.ResponseWriter) {
	s.mu.Lock()
	stop := s.stop
	if stop != nil {
		s.stopped = true
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	cairn.WriteJSON(w, http.StatusOK, map[string]bool{"cancelled": stop != nil})
}

// errCancelled is the error of a reply a client cancelled.
var errCancelled = cairn.Errorf(cairn.Conflict, "the generation was cancelled by a client")

// generate stores the user message text, waits for the generations before
// it and answers it through out.
func (s *session) generate(w http.ResponseWriter, r *http.Request, a *Agent, text string, out sink) {
	s.mu.Lock()
	status := Complete
	if s.busy {
		status = Pending
	}
	s.mu.Unlock()
	user := &Message{ID: newID(), Role: User, Parts: []Part{{Type: PartText, Text: text}},
		CreatedAt: s.st.Now(), Status: status}
	if err := s.store.insert(user); err != nil {
		cairn.WriteError(w, err)
		return
	}
	if err := s.waitTurn(); err != nil {
		if err == errShutdown {
			msg := fmt.Sprintf("the server stopped before message %s was sent to the model", user.ID)
			if err := s.store.setStatus(user.ID, Cancelled, msg); err != nil {
				cairn.WriteError(w, err)
				return
			}
			cairn.WriteError(w, cairn.Errorf(cairn.Unavailable, "%s", msg))
			return
		}
		// The instance was reset while we waited: storage is off limits.
		cairn.WriteError(w, err)
		return
	}
	defer s.next()
	g := &generation{s: s, a: a, w: w, user: user, out: out}
	g.run(r.Context())
}

// errShutdown ends a wait for the generation guard when the runtime closes.
var errShutdown = cairn.Errorf(cairn.Unavailable, "the server is shutting down")

// waitTurn returns once no other generation of the session runs, holding
// the guard; the caller must call next when its generation ends. It waits
// by releasing the turn (as the lock class's waiters do), so that other
// events, such as history reads, are served meanwhile. The client leaving
// does not end the wait: its message was accepted and will be answered.
func (s *session) waitTurn() error {
	s.mu.Lock()
	if !s.busy {
		s.busy = true
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, ch)
	s.mu.Unlock()
	closing := s.st.Closing()
	shutdown := false
	err := s.st.Release(func(ctx context.Context) error {
		select {
		case <-ch:
		case <-closing:
			shutdown = true
		}
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-ch: // handed the guard by next: busy is ours
		if err != nil {
			// Reset meanwhile: pass the guard on.
			s.nextLocked()
		}
		return err
	default:
	}
	for i, c := range s.waiters {
		if c == ch {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			break
		}
	}
	if err != nil {
		return err
	}
	if shutdown {
		return errShutdown
	}
	return cairn.Errorf(cairn.Internal, "generation guard woke without a hand-over")
}

// next ends the caller's hold on the generation guard: the first waiter
// gets it, or it is free.
func (s *session) next() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextLocked()
}

func (s *session) nextLocked() {
	if len(s.waiters) == 0 {
		s.busy = false
		return
	}
	ch := s.waiters[0]
	s.waiters = s.waiters[1:]
	close(ch) // busy stays true: the guard passes to that waiter
}

// decodeSend reads and checks the body of POST /messages.
func decodeSend(r *http.Request, maxText int) (SendRequest, error) {
	var in SendRequest
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&in); err != nil {
		return in, cairn.Errorf(cairn.Invalid, "body must be a JSON object like {\"text\": \"...\"}: %v", err)
	}
	if dec.More() {
		return in, cairn.Errorf(cairn.Invalid, "body must hold one JSON object")
	}
	if strings.TrimSpace(in.Text) == "" {
		return in, cairn.Errorf(cairn.Invalid, "text must not be empty")
	}
	if len(in.Text) > maxText {
		return in, cairn.Errorf(cairn.TooLarge, "text is %d bytes; the limit is %d", len(in.Text), maxText)
	}
	return in, nil
}

// wantsSSE reports whether the client asked for an event stream.
func wantsSSE(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, t := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// generation is one model call answering one user message.
type generation struct {
	s      *session
	a      *Agent
	w      http.ResponseWriter
	user   *Message
	out    sink
	msg    *Message // the assistant message
	finish string   // the provider's finish reason, once complete
	seq    int      // SSE events sent
}

// sink renders a generation to its client: the messages API's JSON or
// SSE (uiSink), or the chat completions shapes (chatSink). Errors before
// begin are written by the generation as plain API errors.
type sink interface {
	// begin is called in the turn once both messages are durable.
	begin(g *generation)
	// stream is called, turn released, with each event as it arrives.
	stream(g *generation, name string, data map[string]any)
	// end answers with g.msg, stored, in the turn.
	end(g *generation)
	// fail answers with err, after begin.
	fail(g *generation, err error)
}

// uiSink answers POST /messages: the stored message as JSON, or, with
// sse, the events of the AI SDK-like stream.
type uiSink struct{ sse bool }

func (u *uiSink) begin(g *generation) {
	if !u.sse {
		return
	}
	h := g.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	g.w.WriteHeader(http.StatusOK)
	g.event("message-start", map[string]any{"messageId": g.msg.ID, "userMessageId": g.user.ID, "model": g.a.Model})
	g.w.(http.Flusher).Flush() // commit point: both messages are durable before this goes out
}

func (u *uiSink) stream(g *generation, name string, data map[string]any) {
	if !u.sse {
		return
	}
	g.event(name, data)
	g.w.(http.Flusher).Flush()
}

func (u *uiSink) end(g *generation) {
	if u.sse {
		// Buffered until the turn's writes are durable (G5).
		g.event("message-end", map[string]any{"message": g.msg})
		return
	}
	cairn.WriteJSON(g.w, http.StatusOK, g.msg)
}

func (u *uiSink) fail(g *generation, err error) {
	if u.sse {
		g.event("error", map[string]any{"messageId": g.msg.ID, "error": errorText(err)})
		return
	}
	cairn.WriteError(g.w, err)
}

// run calls the model and stores its answer. The caller holds the guard.
func (g *generation) run(ctx context.Context) {
	s, a := g.s, g.a
	if err := s.store.activate(g.user.ID); err != nil {
		cairn.WriteError(g.w, err)
		return
	}
	history, err := s.store.recent(a.MaxHistory)
	if err != nil {
		cairn.WriteError(g.w, err)
		return
	}
	g.msg = &Message{ID: newID(), Role: Assistant, Parts: []Part{}, CreatedAt: s.st.Now(), Status: Streaming, Model: a.Model}
	if err := s.store.insert(g.msg); err != nil {
		cairn.WriteError(g.w, err)
		return
	}
	g.out.begin(g)
	req := &Request{Model: a.Model, System: a.System, Messages: history}
	closing := s.st.Closing()
	// The cancel switch is armed in the turn that made the reply
	// streaming, so a cancel that sees the reply streaming stops it. The
	// generation's context is detached from the request's: a client that
	// goes away does not stop it.
	gctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	s.mu.Lock()
	s.stop, s.stopped = stop, false
	s.mu.Unlock()
	var result genResult
	err = s.st.Release(func(context.Context) error {
		result = g.call(gctx, req, closing)
		return nil
	})
	if err != nil {
		// The instance was reset meanwhile: its successor marks the
		// message failed (see interrupt); storage is off limits here.
		s.disarm()
		g.out.fail(g, err)
		return
	}
	g.msg.Parts = result.parts
	g.msg.Usage = result.usage
	g.msg.Status = result.status
	g.msg.Error = result.err
	g.finish = result.finish
	if err := s.store.update(g.msg); err != nil {
		g.out.fail(g, err)
		return
	}
	g.out.end(g)
}

// disarm removes the cancel switch and reports whether a client used it.
func (s *session) disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopped := s.stopped
	s.stop, s.stopped = nil, false
	return stopped
}

// genResult is the outcome of a model call.
type genResult struct {
	parts  []Part
	usage  *Usage
	status Status
	err    string
	finish string // the provider's finish reason, when complete
}

// call runs the model outside the turn, streaming events to the client as
// they arrive. The generation goes on if the client leaves; it stops when
// ctx ends (POST /cancel), the runtime closes (both cancelled) or the
// agent's timeout passes.
func (g *generation) call(ctx context.Context, req *Request, closing <-chan struct{}) genResult {
	pctx, cancel := context.WithTimeout(ctx, g.a.Timeout)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	shutdown := make(chan struct{})
	go func() {
		select {
		case <-closing:
			close(shutdown)
			cancel()
		case <-stop:
		}
	}()

	var res genResult
	var b partsBuilder
	ended := false
	for ev := range g.a.Provider.Stream(pctx, req) {
		switch ev.Type {
		case EventText:
			b.text(PartText, ev.Text)
			g.stream("text-delta", map[string]any{"delta": ev.Text})
		case EventReasoning:
			b.text(PartReasoning, ev.Text)
			g.stream("reasoning-delta", map[string]any{"delta": ev.Text})
		case EventToolCallDelta:
			tc := ev.ToolCall
			g.stream("tool-call-delta", map[string]any{"index": tc.Index, "toolCallId": tc.ID, "toolName": tc.Name, "inputDelta": tc.Input})
		case EventToolCall:
			p := b.toolCall(ev.ToolCall)
			g.stream("tool-call", map[string]any{"toolCallId": p.ToolCallID, "toolName": p.ToolName, "input": p.Input})
		case EventUsage:
			u := *ev.Usage
			res.usage = &u
		case EventDone:
			res.status = Complete
			res.finish = ev.FinishReason
			ended = true
		case EventError:
			res.status = Failed
			res.err = errorText(ev.Err)
			select {
			case <-shutdown:
				res.status, res.err = Cancelled, errorText(errShutdown)
			default:
			}
			ended = true
		}
		if ended {
			break
		}
	}
	if !ended {
		res.status, res.err = Failed, fmt.Sprintf("provider %s ended its stream without finishing", g.a.Provider.Name())
	}
	// Read and cleared in one step, so that a cancel either counts (and
	// the reply is cancelled, even if the model had just finished) or
	// finds no generation.
	if g.s.disarm() {
		res.status, res.err = Cancelled, errorText(errCancelled)
	}
	res.parts = b.done()
	return res
}

// stream sends an event to the client while the turn is released (it
// goes straight out).
func (g *generation) stream(name string, data map[string]any) {
	g.out.stream(g, name, data)
}

// event writes one SSE event: its id is the assistant message's ID and
// the event's number, data a JSON object with "type" and "messageId".
func (g *generation) event(name string, data map[string]any) {
	data["type"] = name
	if _, ok := data["messageId"]; !ok && g.msg != nil {
		data["messageId"] = g.msg.ID
	}
	b, err := json.Marshal(data)
	if err != nil {
		b = []byte(`{"type":"error","error":"encode event"}`)
	}
	g.seq++
	id := strconv.Itoa(g.seq)
	if g.msg != nil {
		id = g.msg.ID + ":" + id
	}
	fmt.Fprintf(g.w, "id: %s\nevent: %s\ndata: %s\n\n", id, name, b)
}

// partsBuilder assembles a message's parts from provider events: runs of
// text (or reasoning) deltas become one part each.
type partsBuilder struct {
	parts   []Part
	curType string // type of the text run in cur, if any
	cur     strings.Builder
}

func (b *partsBuilder) text(typ, s string) {
	if b.curType != typ {
		b.flush()
		b.curType = typ
	}
	b.cur.WriteString(s)
}

func (b *partsBuilder) flush() {
	if b.curType != "" {
		b.parts = append(b.parts, Part{Type: b.curType, Text: b.cur.String()})
		b.cur.Reset()
		b.curType = ""
	}
}

func (b *partsBuilder) toolCall(tc *ToolCall) Part {
	b.flush()
	input := json.RawMessage(tc.Input)
	if strings.TrimSpace(tc.Input) == "" {
		input = json.RawMessage("{}")
	} else if !json.Valid(input) {
		input, _ = json.Marshal(tc.Input)
	}
	p := Part{Type: PartToolCall, ToolCallID: tc.ID, ToolName: tc.Name, Input: input}
	b.parts = append(b.parts, p)
	return p
}

// done returns the parts.
func (b *partsBuilder) done() []Part {
	b.flush()
	if b.parts == nil {
		return []Part{}
	}
	return b.parts
}
