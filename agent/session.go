package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	stop    func()
	stopped bool

	// The stream of the reply being generated, for readers that resume
	// it; guarded by mu.
	live *live

	// The Agents SDK's chat protocol (sdk.go), made on first use; guarded
	// by mu.
	sdk *chatState

	// Cold storage (archive.go, expire.go).
	cold coldState
}

func (s *Service) newSession(st *cairn.State) (any, error) {
	a, name := s.agentOf(st.Name())
	ss := &session{svc: s, st: st, store: store{st: st, cache: &msgCache{}, svc: s}, agent: a, name: name}
	// A generation is never in flight when its object activates (a
	// released turn holds the object), so a streaming message is one the
	// process left behind when it stopped.
	if err := ss.store.interrupt(); err != nil {
		return nil, err
	}
	// An empty session may be an expired one: restore it.
	if err := ss.activateCold(); err != nil {
		return nil, err
	}
	return ss, nil
}

// ServeHTTP serves GET and POST /messages, GET /messages/{id}/stream,
// POST /cancel and POST /chat/completions.
func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.serveCold(w, r) {
		return // export, usage, archive, delete: see export.go
	}
	if s.serveSDK(w, r) {
		return // state, schedules, approvals, the Agents SDK: see sdk.go
	}
	if id, ok := streamPath(r.URL.Path); ok {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET", r.Method))
			return
		}
		s.resume(w, r, id)
		return
	}
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

// streamPath matches /messages/{id}/stream.
func streamPath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/messages/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/stream")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// Page is a page of history, newest first. Next, if set, is the cursor
// (?before=) of the following, older page: opaque to clients (a message
// ID while the page ends in the hot window, "s" and a sequence number in
// the archive).
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
	// Archived messages are read with the turn released.
	res, err := s.store.pageAt(q.Get("before"), limit, s.st.Release)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	if res.msgs == nil {
		res.msgs = []Message{}
	}
	cairn.WriteJSON(w, http.StatusOK, Page{Messages: res.msgs, Next: res.next()})
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
	stream, err := wantsSSE(w, r)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	s.generate(w, r, a, in.Text, s.socketSink(&uiSink{events: stream}, "", nil, nil))
}

// cancel serves POST /cancel: it stops the generation in flight, if any.
// Its reply is then stored with status cancelled and the output so far.
func (s *session) cancel(w http.ResponseWriter) {
	cairn.WriteJSON(w, http.StatusOK, map[string]bool{"cancelled": s.stopGeneration()})
}

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
		CreatedAt: s.now(), Status: status}
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
	g.run(r)
}

// now returns the time for a new message: UTC, in the milliseconds it is
// stored in, so that a message reads the same before and after storage.
func (s *session) now() time.Time { return s.st.Now().UTC().Truncate(time.Millisecond) }

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
			return err
		}
		select {
		case <-closing:
			// Handed the guard as the runtime began to close: the
			// message is not sent to the model, whichever came first.
			s.nextLocked()
			return errShutdown
		default:
		}
		return nil
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

// wantsSSE reports whether the client asked for an event stream. It is
// an error if it did and w cannot stream.
func wantsSSE(w http.ResponseWriter, r *http.Request) (bool, error) {
	for _, v := range r.Header.Values("Accept") {
		for _, t := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				if _, ok := w.(http.Flusher); !ok {
					return true, cairn.Errorf(cairn.Internal, "streaming is not supported")
				}
				return true, nil
			}
		}
	}
	return false, nil
}

// generation answers one user message: a tool loop of model rounds.
type generation struct {
	s      *session
	a      *Agent
	w      http.ResponseWriter
	user   *Message
	out    sink
	msg    *Message // the assistant message
	live   *live    // its stream
	log    *slog.Logger
	finish string // the provider's finish reason of the last round, once complete
}

// sink renders a generation to its client: the messages API's JSON or
// SSE (uiSink), or the chat completions shapes (chatSink). Errors before
// begin are written by the generation as plain API errors.
type sink interface {
	// sse reports whether the sink writes the stream's own events.
	sse() bool
	// begin is called in the turn once both messages are durable, with
	// the message-start event.
	begin(g *generation, ev *streamEvent)
	// event is called, turn released, with each event as it arrives.
	event(g *generation, ev *streamEvent)
	// end answers with g.msg, stored, in the turn; ev is message-end.
	end(g *generation, ev *streamEvent)
	// fail answers with err, after begin.
	fail(g *generation, err error)
}

// uiSink answers POST /messages: the stored message as JSON, or, with
// sse, the events of the AI SDK-like stream.
type uiSink struct{ events bool }

func (u *uiSink) sse() bool { return u.events }

func (u *uiSink) begin(g *generation, ev *streamEvent) {
	if !u.events {
		return
	}
	sseHeader(g.w)
	g.w.Write(ev.sse())
	g.w.(http.Flusher).Flush() // commit point: both messages are durable before this goes out
}

func (u *uiSink) event(g *generation, ev *streamEvent) {
	if !u.events {
		return
	}
	g.w.Write(ev.sse())
	g.w.(http.Flusher).Flush()
}

func (u *uiSink) end(g *generation, ev *streamEvent) {
	if u.events {
		// Buffered until the turn's writes are durable (G5).
		g.w.Write(ev.sse())
		return
	}
	cairn.WriteJSON(g.w, http.StatusOK, g.msg)
}

func (u *uiSink) fail(g *generation, err error) {
	if u.events {
		g.w.Write(g.live.errorEvent(err).sse())
		return
	}
	cairn.WriteError(g.w, err)
}

// Why a generation stopped early: the causes of its context.
var (
	errCancelled    = cairn.Errorf(cairn.Conflict, "the generation was cancelled by a client")
	errDisconnected = cairn.Errorf(cairn.Conflict, "the generation was cancelled: its client disconnected")
	errTimeout      = cairn.Errorf(cairn.Timeout, "the generation took longer than the agent's timeout")
)

// run answers the user message, holding the guard: in the turn it stores
// the reply as streaming; then, for each model round, it releases the
// turn while the model runs and the round's tool calls are answered, and
// stores the round's parts when it has the turn back, so that a crash
// keeps the rounds that finished; the last turn stores the reply's final
// status.
func (g *generation) run(r *http.Request) {
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
	g.msg = &Message{ID: newID(), Role: Assistant, Parts: []Part{}, CreatedAt: s.now(), Status: Streaming, Model: a.Model}
	if err := s.store.insert(g.msg); err != nil {
		cairn.WriteError(g.w, err)
		return
	}
	g.live = newLive(g.msg.ID, g.user.ID, a.Model)
	g.loop(r, history, 1, nil)
}

// loop runs the reply's tool loop from model round first on, then stores
// and answers the reply with its final status. pre, if set, runs first,
// outside the turn, before round first: it answers the calls of a round
// that parked for approvals (see approval.go) and says whether the loop
// goes on (status Streaming).
func (g *generation) loop(r *http.Request, history []Message, first int, pre func(ctx context.Context) roundResult) {
	s, a := g.s, g.a
	g.log = s.st.Runtime().Logger
	s.touch() // a generation is activity, whoever started it
	s.mu.Lock()
	s.live = g.live
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.live == g.live {
			s.live = nil
		}
		s.mu.Unlock()
	}()
	g.out.begin(g, g.live.start())

	// The generation's context is detached from the request's: by
	// default a client that goes away does not stop it. Its cause says
	// what did: POST /cancel, the runtime closing, the client leaving
	// (with CancelOnDisconnect), or the agent's timeout.
	gctx, stop := context.WithCancelCause(context.WithoutCancel(r.Context()))
	defer stop(nil)
	gctx, cancelTimeout := context.WithTimeoutCause(gctx, a.Timeout, errTimeout)
	defer cancelTimeout()
	if a.CancelOnDisconnect {
		unwatch := context.AfterFunc(clientContext(r), func() { stop(errDisconnected) })
		defer unwatch()
	}
	closing := s.st.Closing()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-closing:
			stop(errShutdown)
		case <-done:
		}
	}()
	// The cancel switch is armed in the turn that made the reply
	// streaming, so a cancel that sees the reply streaming stops it.
	s.mu.Lock()
	s.stop, s.stopped = func() { stop(errCancelled) }, false
	s.mu.Unlock()

	var res roundResult
	usage := g.msg.Usage
	for round := first; ; round++ {
		ran := false
		err := s.st.Release(func(context.Context) error {
			ran = true
			if pre != nil && round == first {
				if res = pre(gctx); res.status != Streaming {
					return nil
				}
			}
			res = g.round(gctx, history, round)
			return nil
		})
		if err != nil && (ran || !isContextError(err)) {
			// The instance was reset meanwhile: its successor marks the
			// message failed (see interrupt); storage is off limits here.
			s.disarm()
			g.live.abort()
			g.out.fail(g, err)
			return
		}
		if !ran {
			// The request's own context ended while the turn's writes
			// became durable (a route that does not detach it): the
			// client is gone, and the round never ran.
			stop(errDisconnected)
			res = roundResult{status: Cancelled, err: errorText(errDisconnected)}
		}
		usage = addUsage(usage, res.usage)
		if res.status != Streaming || gctx.Err() != nil || round >= a.MaxToolRounds {
			break
		}
		// Between rounds: the finished rounds are stored before the next
		// model call.
		g.msg.Parts, g.msg.Rounds = g.live.snapshot()
		g.msg.Usage = usage
		if err := s.store.update(g.msg); err != nil {
			s.disarm()
			g.live.abort()
			g.out.fail(g, err)
			return
		}
	}
	g.settle(&res, s.disarm(), context.Cause(gctx))
	g.msg.Parts, g.msg.Rounds = g.live.snapshot()
	g.msg.Usage = usage
	g.msg.Status = res.status
	g.msg.Error = res.err
	g.finish = res.finish
	if res.status == AwaitingApproval {
		if err := g.parkApprovals(); err != nil {
			g.live.abort()
			g.out.fail(g, err)
			return
		}
	}
	if err := s.store.update(g.msg); err != nil {
		g.live.abort()
		g.out.fail(g, err)
		return
	}
	if err := s.afterReply(); err != nil {
		// Archival is scheduled again by the next reply.
		g.log.Warn("schedule archival", "session", s.st.Name(), "err", err)
	}
	end, subs := g.live.end(g.msg)
	s.mu.Lock()
	s.live = nil
	s.mu.Unlock()
	g.out.end(g, end)
	if len(subs) > 0 {
		// Resumed readers get message-end once the reply is durable, as
		// this request's client does.
		s.st.Release(func(context.Context) error {
			deliver(end, subs)
			return nil
		})
	}
}

// settle decides the reply's final status from the last round's and why
// the generation's context ended, if it did.
func (g *generation) settle(res *roundResult, stopped bool, cause error) {
	switch {
	case stopped:
		// A client's cancel counts even if the model had just finished:
		// its answer said the generation was cancelled.
		res.status, res.err = Cancelled, errorText(errCancelled)
	case res.status == AwaitingApproval:
		// Parked: durable whatever stops the process now.
	case res.status == Complete:
	case cause == errShutdown || cause == errDisconnected:
		res.status, res.err = Cancelled, errorText(cause)
	case cause == errTimeout && res.status != Failed:
		res.status, res.err = Failed, errorText(cause)+fmt.Sprintf(" (%s)", g.a.Timeout)
	case res.status == Streaming:
		// The loop ran out of rounds with the model still calling tools.
		res.status = Failed
		res.err = fmt.Sprintf("the model was still calling tools after %d rounds, the agent's limit (MaxToolRounds)", g.a.MaxToolRounds)
	}
}

// isContextError reports whether err is a context's error.
func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func addUsage(total, u *Usage) *Usage {
	if u == nil {
		return total
	}
	if total == nil {
		return &Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens}
	}
	return &Usage{InputTokens: total.InputTokens + u.InputTokens, OutputTokens: total.OutputTokens + u.OutputTokens}
}

// disarm removes the cancel switch and reports whether a client used it.
func (s *session) disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopped := s.stopped
	s.stop, s.stopped = nil, false
	return stopped
}

// roundResult is the outcome of one model round.
type roundResult struct {
	usage *Usage
	// status is Streaming if the round's tool calls were answered and the
	// loop may go on, else the reply's status as the round left it.
	status Status
	err    string
	finish string // the provider's finish reason, when complete
}

// round runs one model round outside the turn: it offers the model the
// round's tools and the history with the reply so far, streams what comes
// back to the client as it arrives, and answers the tool calls the model
// made, if it finished with any. It stops when ctx ends.
func (g *generation) round(ctx context.Context, history []Message, round int) roundResult {
	tb := g.toolbox(ctx)
	req := &Request{Model: g.a.Model, System: g.a.System, Messages: history, Tools: tb.specs}
	if round > 1 {
		parts, rounds := g.live.snapshot()
		inProgress := *g.msg
		inProgress.Parts, inProgress.Rounds = parts, rounds
		req.Messages = append(history[:len(history):len(history)], inProgress)
	}
	g.emit(g.live.startRound())
	parked := false
	defer func() {
		if !parked { // a parked round ends when its approvals are answered
			g.emit(g.live.endRound())
		}
	}()

	var res roundResult
	var calls []Part
	ended := false
	for ev := range g.a.Provider.Stream(ctx, req) {
		switch ev.Type {
		case EventText:
			g.emit(g.live.text(PartText, ev.Text))
		case EventReasoning:
			g.emit(g.live.text(PartReasoning, ev.Text))
		case EventToolCallDelta:
			g.emit(g.live.toolCallDelta(ev.ToolCall))
		case EventToolCall:
			p, e := g.live.toolCall(ev.ToolCall)
			calls = append(calls, p)
			g.emit(e)
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
			ended = true
		}
		if ended {
			break
		}
	}
	if !ended {
		res.status, res.err = Failed, fmt.Sprintf("provider %s ended its stream without finishing", g.a.Provider.Name())
	}
	if res.status != Complete || len(calls) == 0 {
		return res
	}
	if round >= g.a.MaxToolRounds {
		// Not run: the model would not see the results. Each call still
		// gets one, so that the reply's rounds stay well formed.
		for _, c := range calls {
			g.emit(g.live.toolResult(errorResult(c, fmt.Sprintf("not run: the reply reached its limit of %d model rounds", g.a.MaxToolRounds))))
		}
		res.status = Streaming
		return res
	}
	if g.runCalls(ctx, calls, tb) {
		parked = true
		res.status = AwaitingApproval
		return res
	}
	res.status = Streaming
	return res
}

// emit sends an event of the generation's stream to its client, while
// the turn is released (it goes straight out). Resumed readers have it
// already.
func (g *generation) emit(ev *streamEvent) {
	if ev != nil {
		g.out.event(g, ev)
	}
}
