package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
)

// Namespace is the namespace Register puts sessions in.
const Namespace = "agent"

// DefaultAgent is the name of the agent a Service has when none is
// configured.
const DefaultAgent = "default"

// Agent is one configured agent: a model, a system prompt and limits,
// shared by all of its sessions.
type Agent struct {
	// Name addresses the agent in URLs: 1-64 ASCII letters, digits, '.',
	// '_' and '-', starting with a letter or digit.
	Name string
	// Provider calls the model. Nil means Echo.
	Provider Provider
	// Model is the provider's model name ("gpt-4o-mini"); "echo" for Echo.
	Model string
	// System is the system prompt, if any.
	System string
	// MaxHistory is how many of the latest messages are sent to the model
	// (the latest complete messages of the hot window). Default 100.
	MaxHistory int
	// MaxTextBytes caps the text of one user message. Default 4 MiB.
	MaxTextBytes int
	// Timeout bounds one generation. Default 10 minutes.
	Timeout time.Duration
	// Tools are the Go functions the model may call.
	Tools []Tool
	// Toolsets are sources of more tools, asked for their list at each
	// model round (MCP servers).
	Toolsets []Toolset
	// MaxToolRounds bounds the model rounds of one reply's tool loop: a
	// reply still calling tools after that many rounds ends with status
	// error. Default 8.
	MaxToolRounds int
	// CancelOnDisconnect stops a generation when the client of its POST
	// goes away: the reply is stored cancelled, with the output so far.
	// By default the generation goes on, and a client may come back for
	// the reply (GET /messages/{id}/stream, or the history).
	CancelOnDisconnect bool
	// RequireApproval names tools whose calls need a person's approval,
	// whatever their source (Tools, a Toolset such as an MCP server, a
	// built-in), as if their NeedsApproval were set.
	RequireApproval []string
	// ApprovalTimeout is how long a call of a tool that needs approval
	// waits for a person's decision; then it is denied. Default 24 hours.
	ApprovalTimeout time.Duration

	// Cold storage (with Service.Archive set; see archive.go).

	// HotMessages is how many of a session's latest messages stay in its
	// database; older ones move to the archive, ArchiveBatch at a time,
	// once more than HotMessages + ArchiveBatch are hot. At least
	// MaxHistory, so that the model's context is always hot. Default
	// DefaultHotMessages (200), or MaxHistory if that is more.
	HotMessages int
	// ArchiveBatch is the most messages one archived chunk holds (a chunk
	// also stops at 4 MiB of JSON). Default DefaultArchiveBatch (200):
	// a few hundred KiB of typical chat, where zstd compresses well.
	ArchiveBatch int
	// SessionTTL is how long a session may stay idle before it expires:
	// it is archived whole and its storage deleted, by its own alarm.
	// Default DefaultSessionTTL (30 days); NeverExpire (any negative
	// value) keeps sessions forever.
	SessionTTL time.Duration
	// DiscardExpired makes a request to an expired session start a fresh
	// one, deleting the expired session's archive, instead of restoring
	// it (the default).
	DiscardExpired bool
}

// AgentInfo describes an agent in GET /v1/agents.
type AgentInfo struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
}

// Service is the agent layer: its configured agents, the class of their
// sessions, and the HTTP routes under /v1/agents.
//
// Each session is one object of namespace "agent", named
// agent + "/" + session (agent names hold no '/'), so that one namespace
// and one token scope cover every agent, and an agent's sessions are listed
// together by name.
type Service struct {
	// MaxBodyBytes caps a request body on the routes. Default 8 MiB.
	MaxBodyBytes int64
	// Archive is where sessions' old messages and expired sessions go.
	// Nil (the default) keeps every message hot and sessions forever.
	// Set it before the runtime opens.
	Archive archive.Store
	// ChunkCacheBytes bounds the archived chunks kept decoded in memory
	// for reads, shared by all sessions. Default 64 MiB.
	ChunkCacheBytes int64

	chunks  *chunkCache
	stats   serviceStats
	usageNS *cairn.Namespace
	// hook, if set, is called at the steps of archival, expiry and
	// deletion (tests kill the process there).
	hook func(step string)

	agents map[string]*Agent
	order  []string
	ns     *cairn.Namespace
}

// NewService returns a service for agents (defaults filled in). With no
// agents it has one, DefaultAgent, on the Echo provider.
func NewService(agents ...Agent) (*Service, error) {
	if len(agents) == 0 {
		agents = []Agent{{Name: DefaultAgent}}
	}
	s := &Service{MaxBodyBytes: 8 << 20, ChunkCacheBytes: 64 << 20, agents: make(map[string]*Agent)}
	for _, a := range agents {
		if err := validAgentName(a.Name); err != nil {
			return nil, err
		}
		if _, dup := s.agents[a.Name]; dup {
			return nil, cairn.Errorf(cairn.Conflict, "agent %q is configured twice", a.Name)
		}
		if a.Provider == nil {
			a.Provider = Echo{}
		}
		if a.Model == "" {
			if _, ok := a.Provider.(Echo); !ok {
				return nil, cairn.Errorf(cairn.Invalid, "agent %q: a model is required", a.Name)
			}
			a.Model = "echo"
		}
		if a.MaxHistory <= 0 {
			a.MaxHistory = 100
		}
		if a.MaxTextBytes <= 0 {
			a.MaxTextBytes = 4 << 20
		}
		if a.Timeout <= 0 {
			a.Timeout = 10 * time.Minute
		}
		if a.MaxToolRounds <= 0 {
			a.MaxToolRounds = 8
		}
		if a.ApprovalTimeout <= 0 {
			a.ApprovalTimeout = 24 * time.Hour
		}
		if err := coldDefaults(&a); err != nil {
			return nil, err
		}
		if err := checkTools(a.Name, a.Tools); err != nil {
			return nil, err
		}
		s.agents[a.Name] = &a
		s.order = append(s.order, a.Name)
	}
	return s, nil
}

func validAgentName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return cairn.Errorf(cairn.Invalid, "agent name must be 1 to 64 bytes")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return cairn.Errorf(cairn.Invalid, "agent name must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// Agents lists the configured agents in configuration order.
func (s *Service) Agents() []AgentInfo {
	out := make([]AgentInfo, 0, len(s.order))
	for _, n := range s.order {
		a := s.agents[n]
		out = append(out, AgentInfo{Name: a.Name, Provider: a.Provider.Name(), Model: a.Model})
	}
	return out
}

// Close releases what the configured agents hold outside their sessions:
// each Toolset that is an io.Closer (an MCP server's connection and
// subprocess) is closed. Call it after the runtime has closed. It returns
// the first error.
func (s *Service) Close() error {
	var first error
	for _, n := range s.order {
		for _, ts := range s.agents[n].Toolsets {
			if c, ok := ts.(io.Closer); ok {
				if err := c.Close(); err != nil && first == nil {
					first = err
				}
			}
		}
	}
	return first
}

// Class returns the class of sessions. Register it under Namespace (or
// call Register) so that Session and Handler find it.
func (s *Service) Class() cairn.Class {
	return cairn.Class{New: s.newSession, Migrations: migrations}
}

// Register registers the class under Namespace on rt. Call it before
// rt.Open.
func (s *Service) Register(rt *cairn.Runtime) (*cairn.Namespace, error) {
	ns, err := rt.Register(Namespace, s.Class())
	if err != nil {
		return nil, err
	}
	s.ns = ns
	if err := s.registerUsage(rt); err != nil {
		return nil, err
	}
	return ns, nil
}

// ObjectName returns the object name of a session of an agent.
func ObjectName(agent, session string) string { return agent + "/" + session }

// Session returns the stub of a session of a configured agent. Its HTTP
// handler serves GET and POST /messages, GET /messages/{id}/stream, POST
// /cancel and POST /chat/completions (see the package documentation).
func (s *Service) Session(agent, session string) (*cairn.Stub, error) {
	if s.ns == nil {
		return nil, cairn.Errorf(cairn.Unavailable, "the agent class is not registered")
	}
	if _, ok := s.agents[agent]; !ok {
		if err := validAgentName(agent); err != nil {
			return nil, err
		}
		return nil, cairn.Errorf(cairn.NotFound, "no agent %q", agent)
	}
	if session == "" {
		return nil, cairn.Errorf(cairn.Invalid, "session name must not be empty")
	}
	return s.ns.GetByName(ObjectName(agent, session))
}

// Handler serves the agent API, to be mounted at "/v1/agents" and
// "/v1/agents/" (see http.Server.Routes):
//
//	GET  /v1/agents                              the configured agents
//	POST /v1/agents/{agent}/{session}/messages   send {"text": "..."}
//	GET  /v1/agents/{agent}/{session}/messages   history, newest first
//	GET  /v1/agents/{agent}/{session}/messages/{id}/stream   resume a reply's stream
//	POST /v1/agents/{agent}/{session}/cancel     stop the generation in flight
//	POST /v1/agents/{agent}/{session}/chat/completions   OpenAI-compatible
//	GET  /v1/agents/{agent}/{session}/export     the whole history as JSONL
//	GET  /v1/agents/{agent}/{session}/usage      the session's bytes, hot and archived
//	POST /v1/agents/{agent}/{session}/archive    archive the session now (it expires)
//	DELETE /v1/agents/{agent}/{session}          delete it forever, archive included
//	GET  /v1/agents/{agent}/usage                the agent's bytes, hot and archived
//
// A request under a session is delivered to the session's object with
// the path after the session name. Auth is the mounting server's.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, r *http.Request) {
		cairn.WriteJSON(w, http.StatusOK, map[string]any{"agents": s.Agents()})
	})
	mux.HandleFunc("GET /v1/agents/{agent}/usage", s.serveUsage)
	mux.HandleFunc("/v1/agents/{agent}/{session}/{path...}", s.fetch)
	mux.HandleFunc("DELETE /v1/agents/{agent}/{session}", s.fetch) // delete forever
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// fetch forwards a request under a session to its object.
func (s *Service) fetch(w http.ResponseWriter, r *http.Request) {
	s.forward(w, r, r.PathValue("agent"), r.PathValue("path"), true)
}

// forward delivers r to the object of agent's session
// (r.PathValue("session")) as a request for path. With detachPost, a
// POST's turn outlives the client's connection.
func (s *Service) forward(w http.ResponseWriter, r *http.Request, agent, path string, detachPost bool) {
	stub, err := s.Session(agent, r.PathValue("session"))
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	// Read the body before the turn, so that a slow client holds no object.
	r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
	body, err := cairn.ReadBody(r)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	r2 := cairn.ForwardedRequest(r, body, path)
	if detachPost && r.Method == http.MethodPost {
		// A message, once read, is the session's to answer: its turn and
		// output gate do not end with the client's connection (that would
		// stop a tool loop between rounds). The handler finds the
		// client's own context by clientKey, for CancelOnDisconnect.
		ctx := context.WithValue(context.WithoutCancel(r.Context()), clientKey{}, r.Context())
		r2 = r2.WithContext(ctx)
	}
	if err := stub.Fetch(w, r2); err != nil && !errors.Is(err, cairn.ErrResponseStarted) {
		cairn.WriteError(w, err)
	}
}

// agentOf returns the agent a session object belongs to, from its name.
func (s *Service) agentOf(objectName string) (*Agent, string) {
	name, _, ok := strings.Cut(objectName, "/")
	if !ok {
		return nil, ""
	}
	return s.agents[name], name
}
