package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
)

// The Cloudflare Agents SDK's WebSocket protocol (npm package "agents",
// 0.32: AgentClient and the chat transport), spoken at
// /agents/{agent}/{session} by a session's hibernatable WebSockets. See
// docs/agents-sdk.md for what is covered.

// The frame types of the protocol (and cairn's own, prefixed "cairn_").
const (
	frameIdentity     = "cf_agent_identity"
	frameState        = "cf_agent_state"
	frameStateError   = "cf_agent_state_error"
	frameMCPServers   = "cf_agent_mcp_servers"
	frameRPC          = "rpc"
	frameChatRequest  = "cf_agent_use_chat_request"
	frameChatResponse = "cf_agent_use_chat_response"
	frameChatMessages = "cf_agent_chat_messages"
	frameChatClear    = "cf_agent_chat_clear"
	frameChatCancel   = "cf_agent_chat_request_cancel"
	frameResumeReq    = "cf_agent_stream_resume_request"
	frameResuming     = "cf_agent_stream_resuming"
	frameResumeAck    = "cf_agent_stream_resume_ack"
	frameResumeNone   = "cf_agent_stream_resume_none"
	frameStreamPend   = "cf_agent_stream_pending"
	frameToolApproval = "cf_agent_tool_approval"
	frameToolResult   = "cf_agent_tool_result"
	frameMsgUpdated   = "cf_agent_message_updated"
	frameStatePatch   = "cairn_state_patch"
	frameSchedule     = "cairn_schedule"
	frameError        = "cairn_error"
)

// sdkTag tags the sockets that speak the protocol.
const sdkTag = "sdk"

// sdkPrefix is the path, in a session, of the protocol's routes.
const sdkPrefix = "/sdk"

// sdkHistory bounds the messages sent as a transcript (get-messages,
// cf_agent_chat_messages, getMessages).
const sdkHistory = 200

// sendTimeout bounds one frame's send to a slow client; a client that
// takes longer is disconnected (it may reconnect and resume).
const sendTimeout = 10 * time.Second

// maxQueued bounds the frames waiting for one socket.
const maxQueued = 8192

// sockInfo is what a socket keeps in its attachment.
type sockInfo struct {
	Patches bool `json:"patches,omitempty"` // takes cairn_state_patch frames
}

func socketInfo(ws *cairn.WebSocket) sockInfo {
	var si sockInfo
	json.Unmarshal(ws.Attachment(), &si)
	return si
}

// SDKHandler serves the Agents SDK's routes, to be mounted at "/agents/"
// (see http.Server.Routes; auth is the mounting server's):
//
//	/agents/{agent}/{session}                WebSocket: the agents protocol
//	GET /agents/{agent}/{session}/get-messages   the transcript as UIMessages
//
// {agent} is the agent's name or its kebab-case form (what AgentClient
// sends for a class name such as "ChatAgent": "chat-agent"). A request
// is delivered to the session's object, at path /sdk and below.
func (s *Service) SDKHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(w http.ResponseWriter, r *http.Request) {
		name, ok := s.sdkAgent(r.PathValue("agent"))
		if !ok {
			cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no agent %q", truncate(r.PathValue("agent"), 100)))
			return
		}
		s.forward(w, r, name, strings.TrimSuffix("sdk/"+r.PathValue("path"), "/"), false)
	}
	mux.HandleFunc("/agents/{agent}/{session}", h)
	mux.HandleFunc("/agents/{agent}/{session}/{path...}", h)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// sdkAgent finds the agent a client names: by name, or by the kebab-case
// form AgentClient makes of a class name.
func (s *Service) sdkAgent(name string) (string, bool) {
	if _, ok := s.agents[name]; ok {
		return name, true
	}
	for _, n := range s.order {
		if kebab(n) == name {
			return n, true
		}
	}
	return "", false
}

// kebab is the agents package's camelCaseToKebabCase.
func kebab(s string) string {
	if s == strings.ToUpper(s) && s != strings.ToLower(s) {
		return strings.ReplaceAll(strings.ToLower(s), "_", "-")
	}
	var b strings.Builder
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			b.WriteByte('-')
			b.WriteRune(c + 'a' - 'A')
			continue
		}
		b.WriteRune(c)
	}
	out := strings.TrimPrefix(b.String(), "-")
	out = strings.ReplaceAll(out, "_", "-")
	return strings.TrimSuffix(out, "-")
}

// serveSDK serves the routes this file and its siblings add to a session
// (state, schedules, approvals, the Agents SDK's), and the jobs the
// session gives itself; it reports whether it served r.
func (s *session) serveSDK(w http.ResponseWriter, r *http.Request) bool {
	if j, ok := r.Context().Value(jobKey{}).(*job); ok {
		s.runJob(r, j)
		return true
	}
	p := r.URL.Path
	switch {
	case p == "/state":
		s.serveState(w, r)
	case p == "/schedules":
		s.serveSchedules(w, r, "")
	case strings.HasPrefix(p, "/schedules/"):
		s.serveSchedules(w, r, strings.TrimPrefix(p, "/schedules/"))
	case p == "/approvals":
		s.serveApprovals(w, r, "")
	case strings.HasPrefix(p, "/approvals/"):
		s.serveApprovals(w, r, strings.TrimPrefix(p, "/approvals/"))
	case p == sdkPrefix:
		s.acceptSDK(w, r)
	case p == sdkPrefix+"/get-messages":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET", r.Method))
			return true
		}
		msgs, err := s.transcript()
		if err != nil {
			cairn.WriteError(w, err)
			return true
		}
		cairn.WriteJSON(w, http.StatusOK, msgs)
	case strings.HasPrefix(p, sdkPrefix+"/"):
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no route for %s %s", r.Method, p))
	default:
		return false
	}
	return true
}

// transcript returns the last sdkHistory messages as UIMessages, oldest
// first.
func (s *session) transcript() ([]UIMessage, error) {
	msgs, _, err := s.store.page("", sdkHistory)
	if err != nil {
		return nil, err
	}
	out := make([]UIMessage, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		out = append(out, ToUIMessage(&msgs[i]))
	}
	return out, nil
}

// acceptSDK accepts a WebSocket that speaks the agents protocol and sends
// the connect frames: identity, the state (if it was ever set), the MCP
// servers (none are managed by clients), and, if a reply is streaming,
// an offer to resume it. ?state_patches=1 asks for cairn_state_patch
// frames instead of whole states.
func (s *session) acceptSDK(w http.ResponseWriter, r *http.Request) {
	info := sockInfo{Patches: r.URL.Query().Get("state_patches") == "1"}
	att, _ := json.Marshal(info)
	ws, err := s.st.AcceptWebSocket(r, cairn.SocketOptions{Tags: []string{sdkTag}, Attachment: att})
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	ctx := r.Context()
	snap, err := stateDoc.Get(s.st)
	if err != nil {
		ws.Close(ctx, 1011, "state unavailable")
		return
	}
	_, session, _ := strings.Cut(s.st.Name(), "/")
	id := map[string]any{"type": frameIdentity, "name": session, "agent": kebab(s.name)}
	if snap.Version > 0 {
		id["stateFollows"] = true
	}
	send(ctx, ws, id)
	if snap.Version > 0 {
		ws.Send(ctx, cairn.Message{Text: true, Data: stateFrame(snap.Value, snap.Version)})
	}
	send(ctx, ws, map[string]any{"type": frameMCPServers, "mcp": map[string]any{
		"servers": map[string]any{}, "tools": []any{}, "prompts": []any{}, "resources": []any{}}})
	if id := s.chat().activeID(); id != "" {
		send(ctx, ws, map[string]any{"type": frameResuming, "id": id})
	}
}

// send sends a frame, gated by ctx's turn.
func send(ctx context.Context, ws *cairn.WebSocket, frame map[string]any) {
	ws.Send(ctx, cairn.Message{Text: true, Data: mustJSON(frame)})
}

// WebSocketMessage implements cairn.WebSocketHandler: one frame of the
// agents protocol. Frames it does not know are ignored, as the SDK's
// servers do.
func (s *session) WebSocketMessage(ctx context.Context, ws *cairn.WebSocket, m cairn.Message) error {
	s.touch() // a frame is activity: the session's TTL starts again
	if !m.Text {
		return nil
	}
	var f struct {
		Type       string          `json:"type"`
		ID         string          `json:"id"`
		State      json.RawMessage `json:"state"`
		Method     string          `json:"method"`
		Args       json.RawMessage `json:"args"`
		ProbeID    string          `json:"probeId"`
		ToolCallID string          `json:"toolCallId"`
		Approved   *bool           `json:"approved"`
		Init       struct {
			Method string `json:"method"`
			Body   string `json:"body"`
		} `json:"init"`
	}
	if json.Unmarshal(m.Data, &f) != nil {
		return nil
	}
	switch f.Type {
	case frameState:
		c, err := stateDoc.Replace(s.st, f.State)
		if err != nil {
			send(ctx, ws, map[string]any{"type": frameStateError, "error": cairn.ErrorMessage(err)})
			return nil
		}
		if c.Changed {
			s.pushState(ctx, c, ws)
		}
	case frameRPC:
		s.rpc(ctx, ws, f.ID, f.Method, f.Args)
	case frameChatRequest:
		s.chatRequest(ctx, ws, f.ID, f.Init.Method, f.Init.Body)
	case frameChatCancel:
		s.chat().cancel(s, f.ID)
	case frameChatClear:
		return s.clearChat(ctx, ws)
	case frameResumeReq:
		s.chat().resumeRequest(ctx, ws, f.ProbeID)
	case frameResumeAck:
		s.chat().ack(ws, f.ID)
	case frameToolApproval:
		if f.Approved == nil || f.ToolCallID == "" {
			send(ctx, ws, map[string]any{"type": frameError, "error": "cf_agent_tool_approval needs toolCallId and approved"})
			return nil
		}
		if _, err := s.decideFrom(ctx, ws, f.ToolCallID, *f.Approved, ""); err != nil {
			send(ctx, ws, map[string]any{"type": frameError, "error": cairn.ErrorMessage(err), "toolCallId": f.ToolCallID})
		}
	case frameToolResult:
		send(ctx, ws, map[string]any{"type": frameError, "error": "client-side tools are not supported: the agent's tools run on the server"})
	}
	return nil
}

// WebSocketClose implements cairn.WebSocketHandler.
func (s *session) WebSocketClose(ctx context.Context, ws *cairn.WebSocket, code int, reason string) error {
	s.chat().detach(ws)
	return nil
}

// chatRequest starts a chat turn: the request's last user message is sent
// as POST /messages would, in a job of the session's own (so that this
// socket's next frames, a cancel say, are read meanwhile).
func (s *session) chatRequest(ctx context.Context, ws *cairn.WebSocket, id, method, body string) {
	fail := func(err error) {
		send(ctx, ws, map[string]any{"type": frameChatResponse, "id": id, "body": cairn.ErrorMessage(err), "done": false, "error": true})
		send(ctx, ws, map[string]any{"type": frameChatResponse, "id": id, "body": "", "done": true, "outcome": "error"})
	}
	if id == "" || len(id) > 256 {
		send(ctx, ws, map[string]any{"type": frameError, "error": "cf_agent_use_chat_request needs an id of at most 256 bytes"})
		return
	}
	if method != "" && method != http.MethodPost {
		fail(cairn.Errorf(cairn.Invalid, "chat request method %q; only POST", truncate(method, 20)))
		return
	}
	if s.agent == nil {
		fail(cairn.Errorf(cairn.NotFound, "agent %q is not configured", s.name))
		return
	}
	text, ids, err := lastUserText(body, s.agent.MaxTextBytes)
	if err != nil {
		fail(err)
		return
	}
	s.enqueue(&job{reqID: id, ws: ws, text: text, origin: ids})
}

// clearChat deletes the session's messages (cf_agent_chat_clear), after
// stopping the generation in flight, and tells the other clients.
func (s *session) clearChat(ctx context.Context, from *cairn.WebSocket) error {
	s.stopGeneration()
	if err := s.clearMessages(); err != nil {
		return err
	}
	for _, ws := range s.st.WebSockets(sdkTag) {
		if ws != from {
			send(ctx, ws, map[string]any{"type": frameChatClear})
		}
	}
	return nil
}

// stopGeneration stops the generation in flight, as POST /cancel does,
// and reports whether there was one.
func (s *session) stopGeneration() bool {
	s.mu.Lock()
	stop := s.stop
	if stop != nil {
		s.stopped = true
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	return stop != nil
}

// RPC: the methods a client may call with {type:"rpc",id,method,args}.
//
//	getMessages([limit])          the last messages (default and at most 200) as UIMessages
//	getState()                    the state (null if never set)
//	setState(state)               replace it; {version}; pushed to every client
//	listSchedules()               the schedules (see Schedule)
//	schedule(ScheduleRequest)     add one; the Schedule
//	cancelSchedule(id)            true if it existed
//	cancel()                      stop the reply being generated; true if one was
//	approve(toolCallId, approved[, reason])   decide a pending approval; the reply
func (s *session) rpc(ctx context.Context, ws *cairn.WebSocket, id, method string, raw json.RawMessage) {
	var args []json.RawMessage
	if len(raw) > 0 && json.Unmarshal(raw, &args) != nil {
		args = nil
	}
	arg := func(i int, v any) error {
		if i >= len(args) {
			return cairn.Errorf(cairn.Invalid, "%s needs argument %d", method, i+1)
		}
		if err := json.Unmarshal(args[i], v); err != nil {
			return cairn.Errorf(cairn.Invalid, "%s: argument %d: %v", method, i+1, err)
		}
		return nil
	}
	var result any
	var err error
	switch method {
	case "getMessages":
		limit := sdkHistory
		if len(args) > 0 {
			if err = arg(0, &limit); err == nil && (limit < 1 || limit > sdkHistory) {
				err = cairn.Errorf(cairn.Invalid, "limit must be 1 to %d", sdkHistory)
			}
		}
		if err == nil {
			var msgs []UIMessage
			if msgs, err = s.transcript(); err == nil {
				result = msgs[max(0, len(msgs)-limit):]
			}
		}
	case "getState":
		var snap stateSnapshot
		if snap, err = getState(s); err == nil {
			result = snap.Value
		}
	case "setState":
		var v json.RawMessage
		if err = arg(0, &v); err == nil {
			c, cerr := stateDoc.Replace(s.st, v)
			if err = cerr; err == nil {
				if c.Changed {
					s.pushState(ctx, c, nil)
				}
				result = map[string]int64{"version": c.Version}
			}
		}
	case "listSchedules":
		result, err = s.listSchedules()
	case "schedule":
		var in ScheduleRequest
		if err = arg(0, &in); err == nil {
			result, err = s.addSchedule(in)
		}
	case "cancelSchedule":
		var sid string
		if err = arg(0, &sid); err == nil {
			result, err = s.cancelSchedule(sid)
		}
	case "cancel":
		result = s.stopGeneration()
	case "approve":
		var callID, reason string
		var ok bool
		if err = arg(0, &callID); err == nil {
			err = arg(1, &ok)
		}
		if err == nil && len(args) > 2 {
			err = arg(2, &reason)
		}
		if err == nil {
			var m *Message
			if m, err = s.decideFrom(ctx, ws, callID, ok, reason); err == nil {
				result = ToUIMessage(m)
			}
		}
	default:
		err = cairn.Errorf(cairn.NotFound, "Method %s does not exist", truncate(method, 100))
	}
	if err != nil {
		send(ctx, ws, map[string]any{"type": frameRPC, "id": id, "success": false, "error": cairn.ErrorMessage(err)})
		return
	}
	send(ctx, ws, map[string]any{"type": frameRPC, "id": id, "success": true, "done": true, "result": result})
}

type stateSnapshot = struct {
	Value   json.RawMessage
	Version int64
}

func getState(s *session) (stateSnapshot, error) {
	snap, err := stateDoc.Get(s.st)
	return stateSnapshot{Value: snap.Value, Version: snap.Version}, err
}

// Jobs: work a session gives itself as an event of its own, so that the
// socket whose frame asked for it is not held while it runs (a socket's
// frames are delivered one at a time). Jobs run one after the other, in
// the order they were given, by a goroutine that lives while there are
// jobs; each is delivered through the session's stub, so it finds the
// session whatever happened to the instance meanwhile.

type jobKey struct{}

// job is a chat request to answer (text set) or a reply to continue after
// its approvals were decided (msgID set).
type job struct {
	reqID  string           // the client's request id, for the response frames
	ws     *cairn.WebSocket // who asked, if a socket did
	text   string
	origin []string // the client's ids of the request's user messages
	msgID  string
}

// enqueue queues j and starts the goroutine that runs the jobs if none
// runs.
func (s *session) enqueue(j *job) {
	c := s.chat()
	c.mu.Lock()
	c.jobs = append(c.jobs, j)
	c.queued[j.reqID] = true
	start := !c.pumping
	c.pumping = true
	c.mu.Unlock()
	if !start {
		return
	}
	stub, err := s.svc.ns.GetByName(s.st.Name())
	if err != nil {
		c.mu.Lock()
		c.jobs, c.pumping = nil, false
		clear(c.queued)
		c.mu.Unlock()
		return
	}
	go c.pump(stub)
}

// pump runs the queued jobs, one event each, until none is left.
func (c *chatState) pump(stub *cairn.Stub) {
	for {
		c.mu.Lock()
		if len(c.jobs) == 0 {
			c.pumping = false
			c.mu.Unlock()
			return
		}
		j := c.jobs[0]
		c.jobs = c.jobs[1:]
		c.mu.Unlock()
		ctx := context.WithValue(context.Background(), jobKey{}, j)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/", nil)
		w := &captureWriter{}
		if err := stub.Fetch(w, req); err != nil {
			// The session could not run it (the runtime is closing):
			// done all the same, and probes waiting on it are answered.
			c.jobDone(j.reqID)
			if j.ws == nil {
				continue
			}
			j.ws.Send(context.Background(), cairn.Message{Text: true, Data: mustJSON(map[string]any{
				"type": frameChatResponse, "id": j.reqID, "body": cairn.ErrorMessage(err), "done": true, "error": true, "outcome": "error"})})
		}
	}
}

// runJob runs a job in its own event.
func (s *session) runJob(r *http.Request, j *job) {
	c := s.chat()
	defer c.jobDone(j.reqID)
	w := &captureWriter{}
	sink := s.socketSink(nil, j.reqID, j.ws, j.origin)
	sink.continuation = j.msgID != ""
	if j.msgID != "" {
		s.continueReply(w, r, j.msgID, sink)
	} else if s.agent != nil {
		s.generate(w, r, s.agent, j.text, sink)
	} else {
		w.WriteHeader(http.StatusNotFound)
	}
	if !sink.began && j.ws != nil {
		// Refused before its stream began: tell the client why.
		msg := "the request failed"
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(w.body.Bytes(), &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		if w.status < 400 {
			send(r.Context(), j.ws, map[string]any{"type": frameChatResponse, "id": j.reqID, "body": "", "done": true, "outcome": "skipped"})
			return
		}
		send(r.Context(), j.ws, map[string]any{"type": frameChatResponse, "id": j.reqID, "body": msg, "done": false, "error": true})
		send(r.Context(), j.ws, map[string]any{"type": frameChatResponse, "id": j.reqID, "body": "", "done": true, "outcome": "error"})
	}
}

// jobRequest is the request a generation the session starts itself (a
// schedule's) runs with: nobody is on the other end to go away.
func jobRequest(ctx context.Context) *http.Request {
	req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, "/", nil)
	return req
}

// captureWriter is the ResponseWriter of a generation with no HTTP client:
// it keeps the status and body, for the error a generation answers with
// before its stream begins.
type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header {
	if c.header == nil {
		c.header = make(http.Header)
	}
	return c.header
}

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len() < 64<<10 {
		c.body.Write(p)
	}
	return len(p), nil
}

func (c *captureWriter) Flush() {}

// chatState is a session's part of the chat protocol, in memory: the
// stream being generated (and the last one, for late acknowledgements),
// the sockets following them, and the queued jobs. The sockets themselves
// survive eviction of the instance; a new instance starts with no stream.
type chatState struct {
	mu       sync.Mutex
	active   *chatStream
	last     *chatStream
	outs     map[*cairn.WebSocket]*outQueue
	awaiting map[*cairn.WebSocket]string // sockets told to wait (stream pending), with their probe ids
	jobs     []*job
	queued   map[string]bool // request ids of jobs not yet done
	pumping  bool
}

// chat returns the session's chat state, made on first use.
func (s *session) chat() *chatState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sdk == nil {
		s.sdk = &chatState{outs: map[*cairn.WebSocket]*outQueue{}, awaiting: map[*cairn.WebSocket]string{}, queued: map[string]bool{}}
	}
	return s.sdk
}

func (c *chatState) activeID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != nil {
		return c.active.id
	}
	return ""
}

// queue returns ws's outgoing queue. c.mu is held.
func (c *chatState) queueLocked(ws *cairn.WebSocket) *outQueue {
	q := c.outs[ws]
	if q == nil {
		q = &outQueue{ws: ws}
		c.outs[ws] = q
	}
	return q
}

// detach forgets a socket that closed.
func (c *chatState) detach(ws *cairn.WebSocket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.outs, ws)
	delete(c.awaiting, ws)
	for _, st := range []*chatStream{c.active, c.last} {
		if st != nil {
			delete(st.attached, ws)
			delete(st.followers, ws)
		}
	}
}

// cancel stops the generation of request id, if it is the one in flight,
// or drops it from the queue.
func (c *chatState) cancel(s *session, id string) {
	c.mu.Lock()
	active := c.active != nil && c.active.id == id
	for i, j := range c.jobs {
		if j.reqID == id {
			c.jobs = append(c.jobs[:i], c.jobs[i+1:]...)
			delete(c.queued, id)
			if j.ws != nil {
				q := c.queueLocked(j.ws)
				q.push(mustJSON(map[string]any{"type": frameChatResponse, "id": id, "body": "", "done": true, "outcome": "aborted"}))
				defer q.drain()
			}
			break
		}
	}
	c.mu.Unlock()
	if active {
		s.stopGeneration()
	}
}

// resumeRequest answers a client's probe for a stream to resume.
func (c *chatState) resumeRequest(ctx context.Context, ws *cairn.WebSocket, probe string) {
	c.mu.Lock()
	q := c.answerProbeLocked(ws, probe)
	c.mu.Unlock()
	q.drain()
}

// answerProbeLocked queues the answer to probe of ws: the stream to
// resume, or that one is pending (ws then waits in awaiting), or none.
// c.mu held; the caller drains the queue it returns.
func (c *chatState) answerProbeLocked(ws *cairn.WebSocket, probe string) *outQueue {
	frame := map[string]any{}
	if probe != "" {
		frame["probeId"] = probe
	}
	switch {
	case c.active != nil:
		frame["type"], frame["id"] = frameResuming, c.active.id
		// Until it acknowledges, the socket gets no live chunks: the
		// replay then brings all of them, in order (a client that saw
		// later chunks first would take the replayed ones as applied).
		delete(c.active.attached, ws)
	case c.last != nil && c.last.followers[ws]:
		// A continuation this socket followed ended before its probe
		// came: a client that approved a tool sends the approval and
		// then probes for the continuation, which ignores the live
		// chunks until the probe is answered, and a quick reply can end
		// in between. Offered once: the acknowledgement replays it whole.
		frame["type"], frame["id"] = frameResuming, c.last.id
		delete(c.last.followers, ws)
	case len(c.queued) > 0:
		frame["type"] = frameStreamPend
		for id := range c.queued {
			frame["id"] = id
			break
		}
		c.awaiting[ws] = probe
	default:
		frame["type"], frame["reason"] = frameResumeNone, "idle"
	}
	q := c.queueLocked(ws)
	q.push(mustJSON(frame))
	return q
}

// jobDone forgets a job that ended. Once none is left and no stream runs,
// the sockets told that one was pending get their answer now (the job may
// have ended without a stream, or its stream ended before its probe).
func (c *chatState) jobDone(reqID string) {
	c.mu.Lock()
	delete(c.queued, reqID)
	var qs []*outQueue
	if len(c.queued) == 0 && c.active == nil {
		for ws, probe := range c.awaiting {
			delete(c.awaiting, ws)
			qs = append(qs, c.answerProbeLocked(ws, probe))
		}
	}
	c.mu.Unlock()
	for _, q := range qs {
		q.drain()
	}
}

// ack answers a client's acknowledgement of a stream offered for resuming:
// every chunk so far (replay: true), then, if the stream goes on,
// replayComplete and the live chunks; if it ended, its terminal frames.
func (c *chatState) ack(ws *cairn.WebSocket, id string) {
	c.mu.Lock()
	q := c.queueLocked(ws)
	delete(c.awaiting, ws)
	var st *chatStream
	for _, x := range []*chatStream{c.active, c.last} {
		if x != nil && x.id == id {
			st = x
			break
		}
	}
	if st == nil {
		q.push(mustJSON(map[string]any{"type": frameChatResponse, "id": id, "body": "", "done": true, "replay": true}))
	} else {
		for i, body := range st.log {
			q.push(st.frame(body, i, true))
		}
		if st.ended {
			for _, f := range st.terminal {
				q.push(f)
			}
		} else {
			f := map[string]any{"type": frameChatResponse, "id": id, "body": "", "done": false, "replay": true, "replayComplete": true}
			if st.continuation {
				f["continuation"] = true
			}
			q.push(mustJSON(f))
			st.attached[ws] = true
		}
	}
	c.mu.Unlock()
	q.drain()
}

// chatStream is the chunk stream of one reply, as the chat protocol
// carries it: the chunks so far (for clients that resume it) and the
// sockets following it.
type chatStream struct {
	id           string
	continuation bool
	origin       []string
	conv         *uiConverter
	log          []string // chunk bodies, in order: chunk i has seq i
	attached     map[*cairn.WebSocket]bool
	ended        bool
	terminal     [][]byte
	// followers are the sockets attached when a continuation ended: one
	// of them that probes afterwards is offered it again (resumeRequest).
	followers map[*cairn.WebSocket]bool
}

// frame is the response frame of chunk body number seq.
func (st *chatStream) frame(body string, seq int, replay bool) []byte {
	f := map[string]any{"type": frameChatResponse, "id": st.id, "body": body, "done": false, "seq": seq}
	if replay {
		f["replay"] = true
	}
	if st.continuation {
		f["continuation"] = true
	}
	return mustJSON(f)
}

// outQueue is a socket's queue of outgoing chat frames. Frames are pushed
// under chatState.mu, in the order they must go out, and sent by whoever
// drains: one drainer at a time, outside chatState.mu.
type outQueue struct {
	ws     *cairn.WebSocket
	mu     sync.Mutex
	frames [][]byte
	busy   bool
	dead   bool
}

func (q *outQueue) push(f []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dead {
		return
	}
	if len(q.frames) >= maxQueued {
		q.dead, q.frames = true, nil
		go q.ws.Close(context.Background(), 1013, "too slow: reconnect and resume")
		return
	}
	q.frames = append(q.frames, f)
}

// drain sends the queued frames, unless another goroutine is at it. It
// must not be called while the frames may depend on writes of a turn not
// yet durable.
func (q *outQueue) drain() {
	q.mu.Lock()
	if q.busy {
		q.mu.Unlock()
		return
	}
	q.busy = true
	for len(q.frames) > 0 && !q.dead {
		f := q.frames[0]
		q.frames = q.frames[1:]
		q.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		err := q.ws.Send(ctx, cairn.Message{Text: true, Data: f})
		cancel()
		q.mu.Lock()
		if err != nil {
			q.dead, q.frames = true, nil
			go q.ws.Close(context.Background(), 1011, "send failed")
		}
	}
	q.busy = false
	q.mu.Unlock()
}

// socketSink renders a generation to the session's WebSocket clients, and
// to primary (the HTTP client's sink) if set.
type socketSink struct {
	primary sink
	s       *session
	reqID   string
	ws      *cairn.WebSocket
	origin  []string
	stream  *chatStream
	began   bool
	// continuation: the reply goes on after its approvals; clients
	// append to the message they have.
	continuation bool
}

// socketSink returns a sink that streams a generation to the session's
// WebSocket clients: reqID is the request id they know it by (one is
// made if empty), from the socket that asked (if any), origin the
// client's ids of its user messages.
func (s *session) socketSink(primary sink, reqID string, from *cairn.WebSocket, origin []string) *socketSink {
	return &socketSink{primary: primary, s: s, reqID: reqID, ws: from, origin: origin}
}

func (k *socketSink) sse() bool { return k.primary != nil && k.primary.sse() }

// begin is called in the turn: the frames are queued, and go out with the
// first event (released, so the messages they name are durable).
func (k *socketSink) begin(g *generation, ev *streamEvent) {
	if k.primary != nil {
		k.primary.begin(g, ev)
	}
	k.began = true
	id := k.reqID
	if id == "" {
		id = "cairn-" + g.msg.ID
	}
	cont := k.continuation
	origin := k.origin
	if origin == nil && g.user != nil {
		origin = []string{g.user.ID}
	}
	st := &chatStream{id: id, continuation: cont, origin: origin, conv: newUIConverter(g.msg.ID, cont), attached: map[*cairn.WebSocket]bool{}}
	c := k.s.chat()
	c.mu.Lock()
	c.active = st
	for _, ws := range k.s.st.WebSockets(sdkTag) {
		st.attached[ws] = true
	}
	for ws, probe := range c.awaiting {
		f := map[string]any{"type": frameResuming, "id": id}
		if probe != "" {
			f["probeId"] = probe
		}
		c.queueLocked(ws).push(mustJSON(f))
		delete(st.attached, ws) // it acknowledges, then gets the replay
	}
	clear(c.awaiting)
	k.stream = st
	k.pushLocked(c, ev)
	c.mu.Unlock()
}

// pushLocked converts ev and queues its chunks for the attached sockets.
func (k *socketSink) pushLocked(c *chatState, ev *streamEvent) {
	st := k.stream
	for _, ch := range st.conv.chunks(ev) {
		body := string(mustJSON(ch))
		st.log = append(st.log, body)
		f := st.frame(body, len(st.log)-1, false)
		for ws := range st.attached {
			c.queueLocked(ws).push(f)
		}
	}
}

// drainAll sends what is queued for the stream's sockets.
func (k *socketSink) drainAll() {
	c := k.s.chat()
	c.mu.Lock()
	qs := make([]*outQueue, 0, len(c.outs))
	for _, q := range c.outs {
		qs = append(qs, q)
	}
	c.mu.Unlock()
	for _, q := range qs {
		q.drain()
	}
}

func (k *socketSink) event(g *generation, ev *streamEvent) {
	if k.primary != nil {
		k.primary.event(g, ev)
	}
	if k.stream == nil {
		return
	}
	c := k.s.chat()
	c.mu.Lock()
	k.pushLocked(c, ev)
	c.mu.Unlock()
	k.drainAll()
}

// end is called in the turn with the stored reply: its last chunks and
// terminal frames are queued, then sent once the turn's writes are
// durable; the other clients get the transcript.
func (k *socketSink) end(g *generation, ev *streamEvent) {
	if k.primary != nil {
		k.primary.end(g, ev)
	}
	if k.stream == nil {
		return
	}
	m := g.msg
	st := k.stream
	c := k.s.chat()
	c.mu.Lock()
	k.pushLocked(c, ev)
	done := map[string]any{"type": frameChatResponse, "id": st.id, "body": "", "done": true}
	if st.origin != nil {
		done["messageIds"] = st.origin
	}
	if st.continuation {
		done["continuation"] = true
	}
	switch m.Status {
	case Cancelled:
		done["outcome"] = "aborted"
	case Failed:
		done["outcome"] = "error"
		e := map[string]any{"type": frameChatResponse, "id": st.id, "body": m.Error, "done": false, "error": true}
		if st.continuation {
			e["continuation"] = true
		}
		st.terminal = append(st.terminal, mustJSON(e))
	default:
		done["outcome"] = "completed"
	}
	st.terminal = append(st.terminal, mustJSON(done))
	followed := len(st.attached) > 0
	k.finishLocked(c)
	c.mu.Unlock()

	var transcript []byte
	if others := len(k.s.st.WebSockets(sdkTag)); others > 1 || (others == 1 && k.ws == nil) {
		if msgs, err := k.s.transcript(); err == nil {
			transcript = mustJSON(map[string]any{"type": frameChatMessages, "messages": msgs})
		}
	}
	if !followed && transcript == nil {
		return // no client to tell: the turn need not be given up
	}
	sockets := k.s.st.WebSockets(sdkTag)
	k.s.st.Release(func(context.Context) error {
		k.drainAll()
		if transcript != nil {
			for _, ws := range sockets {
				if ws != k.ws {
					ws.Send(context.Background(), cairn.Message{Text: true, Data: transcript})
				}
			}
		}
		return nil
	})
}

// finishLocked queues the stream's terminal frames and retires it.
func (k *socketSink) finishLocked(c *chatState) {
	st := k.stream
	st.ended = true
	for ws := range st.attached {
		q := c.queueLocked(ws)
		for _, f := range st.terminal {
			q.push(f)
		}
	}
	if st.continuation {
		st.followers = st.attached
	}
	st.attached = nil
	if c.active == st {
		c.active = nil
	}
	c.last = st
}

// fail ends the stream with an error (the session was reset, or storage
// failed): nothing more is to be made durable.
func (k *socketSink) fail(g *generation, err error) {
	if k.primary != nil {
		k.primary.fail(g, err)
	}
	if k.stream == nil {
		return
	}
	st := k.stream
	c := k.s.chat()
	c.mu.Lock()
	st.terminal = append(st.terminal,
		mustJSON(map[string]any{"type": frameChatResponse, "id": st.id, "body": errorText(err), "done": false, "error": true}),
		mustJSON(map[string]any{"type": frameChatResponse, "id": st.id, "body": "", "done": true, "outcome": "error"}))
	k.finishLocked(c)
	c.mu.Unlock()
	k.drainAll()
}
