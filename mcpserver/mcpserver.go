// Package mcpserver serves cairn as an MCP server over streamable HTTP, so
// that other agents can use it: send a message to an agent session and
// read its history, and take locks, run for leader, announce presence and
// share work queues. `cairn serve` mounts it at /mcp.
//
// The tools call cairn's Go APIs in-process: the coordination classes
// through their stubs' RPC methods (Stub.Call), and agent sessions through
// their stubs' HTTP handler (Stub.Fetch with an in-memory recorder: the
// session has no Go API of its own), exactly as the HTTP routes do. A tool
// is offered only if its namespace is registered on the runtime.
//
//	agents_list                                       the configured agents
//	agent_send      agent, session, text               the reply: message id, status, text
//	agent_history   agent, session, before?, limit?    a page of messages, newest first
//	lock_acquire    lock, owner, ttl_ms, wait_ms?, request_id?
//	lock_renew      lock, owner, token, ttl_ms
//	lock_release    lock, owner, token, request_id?
//	lock_inspect    lock
//	leader_campaign group, candidate, ttl_ms, wait_ms?, request_id?
//	leader_resign   group, candidate, term, request_id?
//	leader_current  group
//	presence_heartbeat room, member, ttl_ms, metadata?
//	presence_list   room
//	queue_enqueue   queue, body, delay_ms?, dedup_key?
//	queue_claim     queue, max?, visibility_ms?, request_id?
//	queue_ack       queue, id, receipt
//	queue_nack      queue, id, receipt, delay_ms?, reason?
//
// Results are JSON objects (the same as the HTTP API's), as the tool
// result's structured content and as its text. Errors are tool results
// with isError set and the text "{code}: {message}", the code being one of
// cairn's error codes (invalid, conflict, not_found, timeout, ...); for
// agent_send, a reply that failed or was cancelled is an error too, whose
// text names the stored message.
//
// The endpoint is stateless (no MCP session is kept between requests), so
// it needs no sticky routing and holds no memory per client; server to
// client requests (sampling, elicitation) are not used. Auth is the
// mounting server's.
package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/coord"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Server is cairn's MCP endpoint over one runtime.
type Server struct {
	// MaxBodyBytes caps a request body. Default 8 MiB.
	MaxBodyBytes int64
	// Version is reported to clients as the server's version.
	Version string
	// Logger receives the MCP handler's errors. Default slog.Default().
	Logger *slog.Logger

	rt     *cairn.Runtime
	agents *agent.Service
}

// New returns the MCP server of rt, with defaults set. agents may be nil
// (no agent tools). Call Handler after the classes are registered.
func New(rt *cairn.Runtime, agents *agent.Service) *Server {
	return &Server{MaxBodyBytes: 8 << 20, Version: "dev", Logger: slog.Default(), rt: rt, agents: agents}
}

// MCP returns a new MCP server with the tools, for any transport.
func (s *Server) MCP() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "cairn", Version: s.Version}, &mcp.ServerOptions{
		Instructions: "cairn: durable agent sessions and coordination (locks, leader election, presence, work queues). " +
			"Leases (locks, leadership, presence) expire after ttl_ms unless renewed; pass a request_id to make a retried call safe.",
		Logger: s.Logger,
	})
	if s.agents != nil {
		s.agentTools(srv)
	}
	if s.registered("lock") {
		s.lockTools(srv)
	}
	if s.registered("leader") {
		s.leaderTools(srv)
	}
	if s.registered("presence") {
		s.presenceTools(srv)
	}
	if s.registered("queue") {
		s.queueTools(srv)
	}
	return srv
}

// Handler returns the streamable HTTP handler of the MCP endpoint, to be
// mounted at one path (any; cairn serve uses /mcp).
func (s *Server) Handler() http.Handler {
	srv := s.MCP()
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Stateless:                    true,
		JSONResponse:                 false,
		Logger:                       s.Logger,
		MaxRequestBodyBytes:          s.MaxBodyBytes,
		PropagateRequestCancellation: true,
	})
}

func (s *Server) registered(ns string) bool {
	_, err := s.rt.Namespace(ns)
	return err == nil
}

// call calls method of the object name of namespace ns and returns its
// result, decoded as a Res.
func call[Res any](ctx context.Context, s *Server, ns, name, method string, arg any) (Res, error) {
	var res Res
	n, err := s.rt.Namespace(ns)
	if err != nil {
		return res, err
	}
	stub, err := n.GetByName(name)
	if err != nil {
		return res, err
	}
	err = stub.Call(ctx, method, arg, &res)
	return res, err
}

// add registers a tool whose handler returns a JSON-marshalable result or
// an error; the error's text is "{code}: {message}".
func add[In any](srv *mcp.Server, name, desc string, h func(ctx context.Context, in In) (any, error)) {
	mcp.AddTool(srv, &mcp.Tool{Name: name, Description: desc},
		func(ctx context.Context, _ *mcp.CallToolRequest, in In) (*mcp.CallToolResult, any, error) {
			out, err := h(ctx, in)
			if err != nil {
				return nil, nil, err
			}
			return nil, out, nil
		})
}

// Agent tools.

type agentSendArgs struct {
	Agent   string `json:"agent" jsonschema:"the agent's name (see agents_list)"`
	Session string `json:"session" jsonschema:"the session's name: any string; a new name starts a new conversation"`
	Text    string `json:"text" jsonschema:"the user message"`
}

// SendResult is the result of agent_send.
type SendResult struct {
	MessageID string `json:"message_id"` // the assistant's reply
	Status    string `json:"status"`
	Text      string `json:"text"`
}

type agentHistoryArgs struct {
	Agent   string `json:"agent" jsonschema:"the agent's name"`
	Session string `json:"session" jsonschema:"the session's name"`
	Before  string `json:"before,omitempty" jsonschema:"a message id: return the messages before it (the next field of the previous page)"`
	Limit   int    `json:"limit,omitempty" jsonschema:"messages per page, 1 to 200; default 50"`
}

func (s *Server) agentTools(srv *mcp.Server) {
	add(srv, "agents_list", "Lists the configured agents: name, provider and model.",
		func(ctx context.Context, _ struct{}) (any, error) {
			return map[string]any{"agents": s.agents.Agents()}, nil
		})
	add(srv, "agent_send", "Sends a message to an agent session and waits for the agent's reply. "+
		"The session keeps the conversation: later messages to the same agent and session continue it.",
		func(ctx context.Context, in agentSendArgs) (any, error) {
			body, err := json.Marshal(agent.SendRequest{Text: in.Text})
			if err != nil {
				return nil, err
			}
			var m agent.Message
			if err := s.session(ctx, in.Agent, in.Session, http.MethodPost, "/messages", body, &m); err != nil {
				return nil, err
			}
			if m.Status != agent.Complete {
				return nil, cairn.Errorf(cairn.Unavailable, "the reply (message %s) ended with status %s: %s", m.ID, m.Status, m.Error)
			}
			return SendResult{MessageID: m.ID, Status: string(m.Status), Text: m.Text()}, nil
		})
	add(srv, "agent_history", "Reads an agent session's messages, newest first, a page at a time: "+
		"pass the result's next as before to get the older page.",
		func(ctx context.Context, in agentHistoryArgs) (any, error) {
			q := url.Values{}
			if in.Before != "" {
				q.Set("before", in.Before)
			}
			if in.Limit != 0 {
				q.Set("limit", strconv.Itoa(in.Limit))
			}
			path := "/messages"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var p agent.Page
			if err := s.session(ctx, in.Agent, in.Session, http.MethodGet, path, nil, &p); err != nil {
				return nil, err
			}
			if p.Messages == nil {
				p.Messages = []agent.Message{}
			}
			return p, nil
		})
}

// session makes a request to the HTTP handler of an agent session, in
// process, and decodes its JSON answer into res; an error answer becomes
// a *cairn.Error with its code.
func (s *Server) session(ctx context.Context, agentName, session, method, target string, body []byte, res any) error {
	stub, err := s.agents.Session(agentName, session)
	if err != nil {
		return err
	}
	r := httptest.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	if err := stub.Fetch(w, r); err != nil {
		return err
	}
	if w.Code >= 300 {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(w.Body.Bytes(), &e) == nil && e.Error.Code != "" {
			return cairn.Errorf(cairn.Code(e.Error.Code), "%s", e.Error.Message)
		}
		return cairn.Errorf(cairn.Internal, "agent session answered %d", w.Code)
	}
	if err := json.Unmarshal(w.Body.Bytes(), res); err != nil {
		return cairn.Errorf(cairn.Internal, "decode the agent session's answer: %v", err)
	}
	return nil
}

// Lock tools.

type lockAcquireArgs struct {
	Lock      string `json:"lock" jsonschema:"the lock's name: the resource it protects"`
	Owner     string `json:"owner" jsonschema:"who takes it: unique per client"`
	TTLMs     int64  `json:"ttl_ms" jsonschema:"lease length in milliseconds (1 to 86400000); renew before it runs out"`
	WaitMs    int64  `json:"wait_ms,omitempty" jsonschema:"how long to wait in line if the lock is held, in milliseconds; 0 fails at once with conflict"`
	RequestID string `json:"request_id,omitempty" jsonschema:"makes a retry return the same grant"`
}

type lockRenewArgs struct {
	Lock  string `json:"lock" jsonschema:"the lock's name"`
	Owner string `json:"owner" jsonschema:"the holder"`
	Token int64  `json:"token" jsonschema:"the token of the grant"`
	TTLMs int64  `json:"ttl_ms" jsonschema:"the new lease runs this long from now, in milliseconds"`
}

type lockReleaseArgs struct {
	Lock      string `json:"lock" jsonschema:"the lock's name"`
	Owner     string `json:"owner" jsonschema:"the holder"`
	Token     int64  `json:"token" jsonschema:"the token of the grant"`
	RequestID string `json:"request_id,omitempty" jsonschema:"makes a retry succeed again"`
}

type lockName struct {
	Lock string `json:"lock" jsonschema:"the lock's name"`
}

func (s *Server) lockTools(srv *mcp.Server) {
	add(srv, "lock_acquire", "Takes a lock (a lease with a fencing token that strictly increases per lock). "+
		"Errors: conflict if it is held (and wait_ms is 0), timeout if the wait ran out.",
		func(ctx context.Context, in lockAcquireArgs) (any, error) {
			return call[coord.AcquireResult](ctx, s, "lock", in.Lock, "Acquire", coord.AcquireArgs{Owner: in.Owner, TTLMs: in.TTLMs, WaitMs: in.WaitMs, RequestID: in.RequestID})
		})
	add(srv, "lock_renew", "Extends a held lock's lease. Conflict if the token is no longer current.",
		func(ctx context.Context, in lockRenewArgs) (any, error) {
			return call[coord.AcquireResult](ctx, s, "lock", in.Lock, "Renew", coord.RenewArgs{Owner: in.Owner, Token: in.Token, TTLMs: in.TTLMs})
		})
	add(srv, "lock_release", "Gives a lock back. Conflict if the token is no longer current (the lease ran out).",
		func(ctx context.Context, in lockReleaseArgs) (any, error) {
			return call[coord.ReleaseResult](ctx, s, "lock", in.Lock, "Release", coord.ReleaseArgs{Owner: in.Owner, Token: in.Token, RequestID: in.RequestID})
		})
	add(srv, "lock_inspect", "Shows a lock's holder (null if free), last token and waiters.",
		func(ctx context.Context, in lockName) (any, error) {
			res, err := call[coord.LockInfo](ctx, s, "lock", in.Lock, "Inspect", nil)
			if res.Waiters == nil {
				res.Waiters = []coord.Waiter{}
			}
			return res, err
		})
}

// Leader tools.

type campaignArgs struct {
	Group     string `json:"group" jsonschema:"the election group"`
	Candidate string `json:"candidate" jsonschema:"who runs: unique per client"`
	TTLMs     int64  `json:"ttl_ms" jsonschema:"lease length in milliseconds; campaign again before it runs out to stay leader"`
	WaitMs    int64  `json:"wait_ms,omitempty" jsonschema:"how long to wait in line to be elected, in milliseconds"`
	RequestID string `json:"request_id,omitempty" jsonschema:"makes a retry return the same answer"`
}

type resignArgs struct {
	Group     string `json:"group" jsonschema:"the election group"`
	Candidate string `json:"candidate" jsonschema:"the leader"`
	Term      int64  `json:"term" jsonschema:"the leader's term"`
	RequestID string `json:"request_id,omitempty" jsonschema:"makes a retry succeed again"`
}

type groupName struct {
	Group string `json:"group" jsonschema:"the election group"`
}

func (s *Server) leaderTools(srv *mcp.Server) {
	add(srv, "leader_campaign", "Runs for leader of a group: elected if there is none (or once the leader resigns "+
		"or its lease lapses, within wait_ms); a leader that campaigns again renews its lease. The result says who leads.",
		func(ctx context.Context, in campaignArgs) (any, error) {
			return call[coord.CampaignResult](ctx, s, "leader", in.Group, "Campaign", coord.CampaignArgs{Candidate: in.Candidate, TTLMs: in.TTLMs, WaitMs: in.WaitMs, RequestID: in.RequestID})
		})
	add(srv, "leader_resign", "Gives up leadership. Conflict if the term is not the current one.",
		func(ctx context.Context, in resignArgs) (any, error) {
			return call[coord.ResignResult](ctx, s, "leader", in.Group, "Resign", coord.ResignArgs{Candidate: in.Candidate, Term: in.Term, RequestID: in.RequestID})
		})
	add(srv, "leader_current", "Shows a group's current leader (empty if none) and term.",
		func(ctx context.Context, in groupName) (any, error) {
			return call[coord.CampaignResult](ctx, s, "leader", in.Group, "Get", nil)
		})
}

// Presence tools.

type heartbeatArgs struct {
	Room     string `json:"room" jsonschema:"the room"`
	Member   string `json:"member" jsonschema:"who is present: unique per client"`
	TTLMs    int64  `json:"ttl_ms" jsonschema:"present this long from now, in milliseconds; heartbeat again before it runs out"`
	Metadata any    `json:"metadata,omitempty" jsonschema:"any JSON value about the member (up to 16 KiB); absent leaves it unchanged"`
}

type roomName struct {
	Room string `json:"room" jsonschema:"the room"`
}

func (s *Server) presenceTools(srv *mcp.Server) {
	add(srv, "presence_heartbeat", "Marks a member present in a room until ttl_ms from now (joins it if absent).",
		func(ctx context.Context, in heartbeatArgs) (any, error) {
			a := coord.HeartbeatArgs{Member: in.Member, TTLMs: in.TTLMs}
			if in.Metadata != nil {
				b, err := json.Marshal(in.Metadata)
				if err != nil {
					return nil, cairn.Errorf(cairn.Invalid, "metadata: %v", err)
				}
				a.Metadata = b
			}
			return call[coord.HeartbeatResult](ctx, s, "presence", in.Room, "Heartbeat", a)
		})
	add(srv, "presence_list", "Lists the members present in a room.",
		func(ctx context.Context, in roomName) (any, error) {
			res, err := call[coord.PresenceList](ctx, s, "presence", in.Room, "List", nil)
			if res.Members == nil {
				res.Members = []coord.Member{}
			}
			return res, err
		})
}

// Queue tools.

type enqueueArgs struct {
	Queue    string `json:"queue" jsonschema:"the queue"`
	Body     any    `json:"body" jsonschema:"the message: any JSON value, up to 256 KiB"`
	DelayMs  int64  `json:"delay_ms,omitempty" jsonschema:"not claimable before this many milliseconds"`
	DedupKey string `json:"dedup_key,omitempty" jsonschema:"enqueue once per key within 15 minutes"`
}

type claimArgs struct {
	Queue        string `json:"queue" jsonschema:"the queue"`
	Max          int    `json:"max,omitempty" jsonschema:"messages to claim, 1 to 100; default 1"`
	VisibilityMs int64  `json:"visibility_ms,omitempty" jsonschema:"hidden from other claimers this long, in milliseconds; default 30000. Ack before it runs out"`
	RequestID    string `json:"request_id,omitempty" jsonschema:"makes a retry return the same messages"`
}

type ackArgs struct {
	Queue   string `json:"queue" jsonschema:"the queue"`
	ID      int64  `json:"id" jsonschema:"the message id"`
	Receipt string `json:"receipt" jsonschema:"the receipt of the claim"`
}

type nackArgs struct {
	Queue   string `json:"queue" jsonschema:"the queue"`
	ID      int64  `json:"id" jsonschema:"the message id"`
	Receipt string `json:"receipt" jsonschema:"the receipt of the claim"`
	DelayMs *int64 `json:"delay_ms,omitempty" jsonschema:"retry after this many milliseconds; default the queue's backoff"`
	Reason  string `json:"reason,omitempty" jsonschema:"kept if the message goes to the dead letters"`
}

func (s *Server) queueTools(srv *mcp.Server) {
	add(srv, "queue_enqueue", "Adds a message to a work queue.",
		func(ctx context.Context, in enqueueArgs) (any, error) {
			b, err := json.Marshal(in.Body)
			if err != nil {
				return nil, cairn.Errorf(cairn.Invalid, "body: %v", err)
			}
			return call[coord.EnqueueResult](ctx, s, "queue", in.Queue, "Enqueue", coord.EnqueueArgs{Body: b, DelayMs: in.DelayMs, DedupKey: in.DedupKey})
		})
	add(srv, "queue_claim", "Claims messages from a work queue: each is hidden from others until visibility_ms "+
		"runs out; ack it when done, or it is delivered again.",
		func(ctx context.Context, in claimArgs) (any, error) {
			res, err := call[coord.ClaimResult](ctx, s, "queue", in.Queue, "Claim", coord.ClaimArgs{Max: in.Max, VisibilityMs: in.VisibilityMs, RequestID: in.RequestID})
			if res.Messages == nil {
				res.Messages = []coord.Message{}
			}
			return res, err
		})
	add(srv, "queue_ack", "Acknowledges a claimed message: it is done and removed.",
		func(ctx context.Context, in ackArgs) (any, error) {
			return call[coord.AckResult](ctx, s, "queue", in.Queue, "Ack", coord.AckArgs{ID: in.ID, Receipt: in.Receipt})
		})
	add(srv, "queue_nack", "Gives a claimed message back for a later retry (dead letter after the queue's max attempts).",
		func(ctx context.Context, in nackArgs) (any, error) {
			return call[coord.AckResult](ctx, s, "queue", in.Queue, "Nack", coord.NackArgs{ID: in.ID, Receipt: in.Receipt, DelayMs: in.DelayMs, Reason: in.Reason})
		})
}
