// Package http is cairn's HTTP face: the REST, SSE and WebSocket API of
// `cairn serve`, its auth, limits and metrics, and a client for the CLI.
// It is the only package that maps cairn error codes to HTTP statuses.
package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-dev/cairn"
)

// Token is a bearer token and what it may reach (G11).
type Token struct {
	Name       string   `json:"name"`
	Secret     string   `json:"secret"`               // the bearer value
	Admin      bool     `json:"admin,omitempty"`      // the admin API, metrics and every namespace
	Namespaces []string `json:"namespaces,omitempty"` // namespaces reachable; "*" for all
}

// Server serves the API of one runtime.
type Server struct {
	// Tokens are the accepted bearer tokens. With none, auth is off (the
	// listener must then be loopback: see CheckListen).
	Tokens []Token
	// MaxBodyBytes caps request bodies. Default 8 MiB.
	MaxBodyBytes int64
	// MaxMessageBytes caps one WebSocket message. Default 1 MiB.
	MaxMessageBytes int64
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout bound slow clients.
	// Defaults 10 s, 2 min, 2 min. Responses have no write timeout, so
	// that streams can last.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes caps request headers. Default 64 KiB.
	MaxHeaderBytes int
	// RPCPingInterval is how often an RPC socket (GET /v1/rpc) is pinged;
	// one that does not answer within the next interval is closed and
	// its calls canceled. Default 30 s; 0 or less: no pings.
	RPCPingInterval time.Duration
	// Logger receives request errors. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, is served at /metrics and observes requests.
	Metrics *Metrics
	// Extra routes mounted on the server's mux (e.g. the console), given
	// as pattern and handler; they get the auth of the admin API unless
	// Public is set.
	Routes []Route

	rt     *cairn.Runtime
	hashes []tokenHash
	ready  atomic.Bool

	mu       sync.Mutex
	srv      *http.Server
	shutdown bool

	// rpcSockets are the live sockets of /v1/rpc, which Shutdown closes
	// (http.Server does not track hijacked connections).
	rpcSockets rpcSockets
}

// Route is an extra route for Server.Routes. It needs the admin scope,
// unless Namespace is set (then a token that may reach that namespace, as
// the object routes ask) or Public is (no auth).
type Route struct {
	Pattern   string
	Handler   http.Handler
	Namespace string
	Public    bool
	Name      string // the route label in metrics; default "extra"
}

type tokenHash struct {
	sum [32]byte
	tok *Token
}

// NewServer returns a server for rt with defaults set.
func NewServer(rt *cairn.Runtime) *Server {
	return &Server{
		MaxBodyBytes:      8 << 20,
		MaxMessageBytes:   1 << 20,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		RPCPingInterval:   30 * time.Second,
		Logger:            slog.Default(),
		rt:                rt,
	}
}

// CheckListen refuses a non-loopback address when no tokens are configured.
func (s *Server) CheckListen(addr string) error {
	if len(s.Tokens) > 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return cairn.Errorf(cairn.Invalid, "bad listen address %q: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return cairn.Errorf(cairn.Invalid, "refusing to listen on %s without auth: configure at least one token (--token or CAIRN_TOKEN), or listen on 127.0.0.1", addr)
}

// Handler returns the server's routes with auth and limits applied.
func (s *Server) Handler() http.Handler {
	s.hashes = s.hashes[:0]
	for i := range s.Tokens {
		s.hashes = append(s.hashes, tokenHash{sha256.Sum256([]byte(s.Tokens[i].Secret)), &s.Tokens[i]})
	}
	mux := http.NewServeMux()
	handle := func(pattern, route string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(route, h))
	}
	handle("/healthz", "healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	handle("/readyz", "readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeError(w, cairn.Errorf(cairn.Unavailable, "not ready"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	if s.Metrics != nil {
		mh := s.Metrics.Handler()
		handle("/metrics", "metrics", s.admin(mh.ServeHTTP))
	}
	handle("POST /v1/objects/{ns}/{name}/rpc/{method}", "rpc", s.object(s.rpc))
	handle("/v1/rpc", "rpc-upgrade", s.serveRPC)
	handle("/v1/objects/{ns}/{name}", "fetch", s.object(s.fetch))
	handle("/v1/objects/{ns}/{name}/{path...}", "fetch", s.object(s.fetch))
	s.adminRoutes(handle)
	for _, rt := range s.Routes {
		h := s.upgrading(rt.Handler.ServeHTTP)
		switch {
		case rt.Namespace != "":
			h = s.scoped(rt.Namespace, h)
		case !rt.Public:
			h = s.admin(h)
		}
		route := rt.Name
		if route == "" {
			route = "extra"
		}
		handle(rt.Pattern, route, h)
	}
	handle("/", "notfound", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, cairn.Errorf(cairn.NotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	s.ready.Store(true)
	return s.guard(mux)
}

// guard refuses what must not reach the routes: paths that are not
// canonical (the mux would redirect them, possibly to another object or
// key) and, with auth off, requests from web pages of other sites (a
// browser's cross-site POST, DNS rebinding).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !canonical(r.URL.EscapedPath()) {
			writeError(w, cairn.Errorf(cairn.Invalid, "path is not canonical: empty, '.' or '..' segments are not allowed (escape them: %%2F, %%2E)"))
			return
		}
		if len(s.Tokens) == 0 {
			if !loopbackHost(r.Host) {
				writeErrorCode(w, http.StatusForbidden, "forbidden", "with auth off only loopback host names are served")
				return
			}
			if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
				writeErrorCode(w, http.StatusForbidden, "forbidden", "cross-origin requests are refused with auth off")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// canonical reports whether an escaped path has no empty (except a
// trailing one), "." or ".." segments.
func canonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || (seg == "" && i != len(segs)-1) {
			return false
		}
	}
	return path.Clean(p) == p || strings.HasSuffix(p, "/")
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, host)
}

// server returns the net/http server, made once.
func (s *Server) server() *http.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		s.srv = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			ReadTimeout:       s.ReadTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelDebug),
		}
	}
	return s.srv
}

// Serve serves on ln until Shutdown. After Shutdown it returns at once.
func (s *Server) Serve(ln net.Listener) error {
	srv := s.server()
	s.mu.Lock()
	down := s.shutdown
	s.mu.Unlock()
	if down {
		ln.Close()
		return nil
	}
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for requests in progress
// (or ctx). RPC sockets (/v1/rpc) take no new calls and are closed with
// 1001 once their calls in progress are answered (or ctx ends); objects'
// WebSockets are closed by the runtime's Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	srv := s.server()
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	rpc := make(chan error, 1)
	go func() { rpc <- s.rpcSockets.shutdown(ctx) }()
	err := srv.Shutdown(ctx)
	if rerr := <-rpc; err == nil {
		err = rerr
	}
	return err
}

// Auth.

type authKey struct{}

// authenticate returns the caller's token, or nil with auth off. It writes
// 401 and returns false if a token is needed and missing or wrong.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*Token, bool) {
	if len(s.hashes) == 0 {
		return nil, true
	}
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	secret = strings.TrimSpace(secret)
	if h == "" && isWebSocket(r) {
		// Browsers cannot set headers on a WebSocket: the token may
		// come as a subprotocol instead (see subprotocolToken).
		secret, ok = subprotocolToken(r)
		scheme = "Bearer"
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cairn"`)
		writeErrorCode(w, http.StatusUnauthorized, "unauthorized", "missing bearer token")
		return nil, false
	}
	sum := sha256.Sum256([]byte(secret))
	var found *Token
	for _, th := range s.hashes {
		if subtle.ConstantTimeCompare(sum[:], th.sum[:]) == 1 {
			found = th.tok
		}
	}
	if found == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cairn", error="invalid_token"`)
		writeErrorCode(w, http.StatusUnauthorized, "unauthorized", "invalid bearer token")
		return nil, false
	}
	return found, true
}

func (t *Token) allows(ns string) bool {
	if t == nil || t.Admin {
		return true
	}
	for _, n := range t.Namespaces {
		if n == "*" || n == ns {
			return true
		}
	}
	return false
}

// admin wraps a handler that needs the admin scope.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if tok != nil && !tok.Admin {
			writeErrorCode(w, http.StatusForbidden, "forbidden", "this token has no admin scope")
			return
		}
		h(w, r)
	}
}

// scoped wraps a handler that reaches objects of namespace ns: it needs a
// token allowed there, and its body is capped like the object routes'.
func (s *Server) scoped(ns string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if !tok.allows(ns) {
			writeErrorCode(w, http.StatusForbidden, "forbidden", "this token may not reach namespace "+quote(ns))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		h(w, r)
	}
}

// object wraps a handler of /v1/objects/{ns}/...: auth for the namespace,
// and the namespace and stub resolved.
func (s *Server) object(h func(w http.ResponseWriter, r *http.Request, stub *cairn.Stub)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		nsName := r.PathValue("ns")
		if !tok.allows(nsName) {
			writeErrorCode(w, http.StatusForbidden, "forbidden", "this token may not reach namespace "+quote(nsName))
			return
		}
		ns, err := s.rt.Namespace(nsName)
		if err != nil {
			writeError(w, err)
			return
		}
		stub, err := ns.GetByName(r.PathValue("name"))
		if err != nil {
			writeError(w, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		h(w, r, stub)
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// rpc serves POST /v1/objects/{ns}/{name}/rpc/{method}: the body is the
// JSON argument (empty for none), the response the JSON result.
func (s *Server) rpc(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	body, err := cairn.ReadBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(body) > 0 && !json.Valid(body) {
		writeError(w, cairn.Errorf(cairn.Invalid, "request body is not valid JSON"))
		return
	}
	out, err := stub.CallJSON(r.Context(), r.PathValue("method"), body)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
	w.Write([]byte("\n"))
}

// fetch forwards any request under /v1/objects/{ns}/{name}/ to the
// object's HTTP handler, which sees the path after the name.
func (s *Server) fetch(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	// Read the body before the turn, so that a slow client holds no object.
	body, err := cairn.ReadBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	r2 := cairn.ForwardedRequest(r, body, r.PathValue("path"))
	var up *upgrader
	if isWebSocket(r) {
		up = &upgrader{s: s, w: w, r: r}
		r2 = r2.WithContext(cairn.WithUpgrader(r2.Context(), up))
	}
	err = stub.Fetch(w, r2)
	if err != nil {
		if errors.Is(err, cairn.ErrResponseStarted) {
			s.Logger.Warn("object response failed after it started", "namespace", stub.Namespace().Name(), "object", stub.ID().String(), "err", err)
			return
		}
		if up != nil && up.conn != nil {
			return
		}
		writeError(w, err)
		return
	}
	if up != nil && up.conn != nil {
		up.serve()
	}
}

// Errors.

// Status returns the HTTP status of an error code (cairn.HTTPStatus).
func Status(code cairn.Code) int { return cairn.HTTPStatus(code) }

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	code := cairn.ErrorCode(err)
	writeErrorCode(w, Status(code), string(code), cairn.ErrorMessage(err))
}

func writeErrorCode(w http.ResponseWriter, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) { cairn.WriteJSON(w, status, v) }

// readJSON decodes a JSON request body into v (cairn.DecodeJSON).
func readJSON(r *http.Request, v any) error {
	b, err := cairn.ReadBody(r)
	if err != nil {
		return err
	}
	return cairn.DecodeJSON(b, v)
}
