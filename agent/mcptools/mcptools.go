// Package mcptools offers the tools of MCP servers to cairn's agents: a
// Server is an agent.Toolset backed by one MCP server, reached over stdio
// (a subprocess cairn starts) or streamable HTTP, through the official MCP
// Go SDK.
//
// # Lifecycle
//
// A Server connects lazily, on the first call of Tools, and keeps the
// connection for later rounds and calls. The tool list is cached; it is
// fetched again when the server sends notifications/tools/list_changed,
// and every RefreshInterval in any case. A connection that ends (the
// subprocess exited or was killed, the HTTP session is gone) is noticed
// at once: calls in flight on it fail promptly with an error, and the next
// Tools or Call connects again, starting the subprocess anew. Reconnects
// back off: the first after a connection that lived is immediate, then
// each consecutive failure (a start that failed, or a connection that
// ended within StableAfter of starting) doubles the wait from MinBackoff
// up to MaxBackoff, during which Tools and calls fail at once with a
// message that says when the next try is. Close ends the connection and
// kills the subprocess (its whole process group, on Unix).
//
// # Tools
//
// Each tool of the MCP server becomes an agent.Tool named
// "{server}_{tool}", with every character outside [A-Za-z0-9_-] replaced
// by '_' and names over 64 bytes cut to 55 and suffixed with '_' and 8 hex
// digits of a hash of the original names (so is a name that would
// collide with another's). Description and input schema are the MCP
// tool's. Call sends tools/call with the model's input and the caller's
// context; its output is JSON:
//
//   - the result's structured content, if there is any;
//   - else, if every content part is text, the texts joined by newlines,
//     as a JSON string;
//   - else an array of the parts: {"type":"text","text"}, images and audio
//     as {"type","mimeType","bytes"} (the data left out: a model cannot
//     read base64), resource links as {"type":"resource_link","uri",
//     "name","mimeType"}, embedded resources as {"type":"resource","uri",
//     "mimeType","text"} (or "bytes" for a blob).
//
// A result marked isError, a protocol error, a lost connection and a
// context that ended are all Go errors whose message starts with
// "mcp server {name}: ", so the model (which sees the message) and the
// logs can tell which server failed and why.
//
// # Subprocess environment
//
// A stdio server gets only PATH, HOME, USER, LOGNAME, SHELL, TERM, LANG,
// LC_ALL, TMPDIR and TZ from cairn's environment (as the MCP reference
// clients do), plus Config.Env: cairn's own secrets (API keys, tokens) do
// not leak to third-party servers unless configured. Its standard error is
// logged at debug level, and its last lines are quoted in the error when
// it fails to start or exits.
package mcptools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/agent"
)

// Config says how to reach one MCP server: Command (with Args and Env)
// for a stdio subprocess, or URL (with Headers) for streamable HTTP.
type Config struct {
	// Name names the server in tool names, logs and errors: 1 to 32 ASCII
	// letters, digits, '_' and '-'.
	Name string
	// Command is the program to run (looked up in PATH), Args its
	// arguments, Env variables added to its environment.
	Command string
	Args    []string
	Env     map[string]string
	// URL is the streamable HTTP endpoint ("https://host/mcp"); Headers
	// are sent with every request (e.g. Authorization).
	URL     string
	Headers map[string]string
}

func (c *Config) validate() error {
	if len(c.Name) == 0 || len(c.Name) > 32 {
		return fmt.Errorf("mcp server name %q: must be 1 to 32 bytes", c.Name)
	}
	for i := 0; i < len(c.Name); i++ {
		if !nameByte(c.Name[i]) {
			return fmt.Errorf("mcp server name %q: only ASCII letters, digits, '_' and '-' are allowed", c.Name)
		}
	}
	switch {
	case c.Command != "" && c.URL != "":
		return fmt.Errorf("mcp server %s: set command or url, not both", c.Name)
	case c.Command == "" && c.URL == "":
		return fmt.Errorf("mcp server %s: set command (stdio) or url (streamable HTTP)", c.Name)
	case c.URL != "":
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("mcp server %s: url %q must be an http or https URL", c.Name, c.URL)
		}
		if len(c.Args) > 0 || len(c.Env) > 0 {
			return fmt.Errorf("mcp server %s: args and env are for a command, not a url", c.Name)
		}
	default:
		if len(c.Headers) > 0 {
			return fmt.Errorf("mcp server %s: headers are for a url, not a command", c.Name)
		}
	}
	return nil
}

// Server is one MCP server as an agent.Toolset. It is safe for concurrent
// use: one Server serves every session of its agents.
type Server struct {
	// ConnectTimeout bounds starting and initializing a connection, and
	// listing tools. Default 30 s.
	ConnectTimeout time.Duration
	// RefreshInterval is how long a tool list is used before it is
	// fetched again, if the server sends no list_changed notification
	// first. Default 5 minutes.
	RefreshInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting after
	// consecutive failures. Defaults 1 s and 1 minute.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a connection must have lived for its end
	// not to count as a failure (the next connect is then immediate).
	// Default 30 s.
	StableAfter time.Duration
	// StopTimeout is how long Close waits for a subprocess to exit after
	// its standard input is closed, before SIGTERM (and as long again
	// before SIGKILL). Default 2 s.
	StopTimeout time.Duration
	// HTTPClient makes the requests of a URL server. Default: a client
	// of its own on http.DefaultTransport.
	HTTPClient *http.Client
	// Logger receives the subprocess's standard error (debug) and
	// connection events. Default slog.Default().
	Logger *slog.Logger
	// Now tells the time, for backoff and refresh. Default time.Now.
	Now func() time.Time

	cfg Config

	life     context.Context // ends when Close is called: a connect in flight stops
	shut     context.CancelFunc
	mu       sync.Mutex
	cur      *conn         // the connection, live or ended; nil if none
	dialing  chan struct{} // closed when the connect in flight ends
	failures int           // consecutive failures, for backoff
	retryAt  time.Time     // no connect before this
	lastErr  error         // why the last connection failed or ended
	closed   bool
	wg       sync.WaitGroup // watchers of connections
}

// New returns a Server for cfg, with defaults set. It does not connect:
// the first Tools does.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	life, shut := context.WithCancel(context.Background())
	return &Server{
		life:            life,
		shut:            shut,
		ConnectTimeout:  30 * time.Second,
		RefreshInterval: 5 * time.Minute,
		MinBackoff:      time.Second,
		MaxBackoff:      time.Minute,
		StableAfter:     30 * time.Second,
		StopTimeout:     2 * time.Second,
		Logger:          slog.Default(),
		Now:             time.Now,
		cfg:             cfg,
	}, nil
}

// Name returns the server's configured name.
func (s *Server) Name() string { return s.cfg.Name }

// Tools returns the server's tools, connecting first if needed, from the
// cached list unless it is stale (see the package documentation). An
// error means the server cannot be reached now; a later call tries again.
func (s *Server) Tools(ctx context.Context) ([]agent.Tool, error) {
	for attempt := 0; ; attempt++ {
		c, err := s.conn(ctx)
		if err != nil {
			return nil, err
		}
		tools, err := c.list(ctx)
		if err == nil {
			return tools, nil
		}
		// A connection that ended under the listing is replaced once.
		if attempt > 0 || !c.ended() || ctx.Err() != nil {
			return nil, err
		}
	}
}

// Close ends the connection, if any, and kills the subprocess; it waits
// for them to be gone. Calls in flight fail. Later calls of Tools and of
// the tools' Call fail. Close is idempotent.
func (s *Server) Close() error {
	s.shut()
	s.mu.Lock()
	s.closed = true
	c := s.cur
	s.cur = nil
	dialing := s.dialing
	s.mu.Unlock()
	if dialing != nil {
		<-dialing // its connection, if any, is then shut down by its dialer
	}
	if c != nil {
		c.shutdown()
	}
	s.wg.Wait()
	return nil
}

var errClosed = errors.New("closed")

// errorf returns an error whose message starts with the server's name.
func (s *Server) errorf(format string, args ...any) error {
	return fmt.Errorf("mcp server %s: "+format, append([]any{s.cfg.Name}, args...)...)
}

// conn returns a live connection, connecting if there is none (one
// connect at a time; others wait for it), unless a backoff is running.
func (s *Server) conn(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, s.errorf("%w", errClosed)
		}
		if c := s.cur; c != nil {
			if !c.ended() {
				s.mu.Unlock()
				return c, nil
			}
			if err := s.retireLocked(c); err != nil {
				s.mu.Unlock()
				s.logFailure(err)
				continue
			}
		}
		if ch := s.dialing; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, s.errorf("waiting for the connection: %w", ctx.Err())
			}
		}
		if now := s.Now(); now.Before(s.retryAt) {
			wait, n, last := s.retryAt.Sub(now).Round(time.Millisecond), s.failures, s.lastErr
			s.mu.Unlock()
			return nil, s.errorf("unavailable after %d failure(s), next try in %v; last error: %v", n, wait, last)
		}
		ch := make(chan struct{})
		s.dialing = ch
		s.mu.Unlock()

		c, err := s.dial(ctx)

		s.mu.Lock()
		s.dialing = nil
		close(ch)
		if err != nil {
			closed := s.closed
			counted := ctx.Err() == nil && !closed // the caller giving up says nothing of the server
			if counted {
				s.failLocked(err)
			}
			s.mu.Unlock()
			if closed {
				return nil, s.errorf("%w", errClosed)
			}
			if counted {
				s.logFailure(err)
			}
			return nil, err
		}
		if s.closed {
			s.mu.Unlock()
			c.shutdown()
			return nil, s.errorf("%w", errClosed)
		}
		s.cur = c
		s.mu.Unlock()
		s.Logger.Info("mcp server connected", "server", s.cfg.Name)
		return c, nil
	}
}

// retireLocked forgets an ended connection and counts its end as a
// failure, which it returns, unless it lived StableAfter (the count
// starts again) or was ended on purpose (nil).
func (s *Server) retireLocked(c *conn) error {
	s.cur = nil
	endedAt, _, dropped := c.end(nil)
	if dropped {
		return nil // replaced on purpose (its session was gone), not a crash
	}
	if endedAt.Sub(c.started) >= s.StableAfter {
		s.failures = 0
	}
	err := errors.New(c.describe())
	s.failLocked(err)
	return err
}

// failLocked counts a failure and sets the backoff.
func (s *Server) failLocked(err error) {
	s.failures++
	s.lastErr = err
	s.retryAt = s.Now().Add(s.backoff(s.failures))
}

// logFailure logs a failure counted by failLocked.
func (s *Server) logFailure(err error) {
	s.mu.Lock()
	n, at := s.failures, s.retryAt
	s.mu.Unlock()
	s.Logger.Warn("mcp server unavailable", "server", s.cfg.Name, "failures", n, "retry_at", at, "err", err)
}

// backoff returns the wait after n consecutive failures: none after the
// first, then MinBackoff doubling up to MaxBackoff.
func (s *Server) backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := s.MinBackoff
	for i := 2; i < n && d < s.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.MaxBackoff)
}
