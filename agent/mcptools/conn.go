package mcptools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/internal/procgroup"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// conn is one connection to the server: one subprocess, or one HTTP
// session. Its goroutines (the watcher, and the waiter of a subprocess)
// are counted in the Server's wait group.
type conn struct {
	s       *Server
	cs      *mcp.ClientSession
	proc    *proc // nil over HTTP
	started time.Time

	// ctx ends when the connection does: calls on it are bound to it.
	ctx    context.Context
	cancel context.CancelFunc

	done     chan struct{} // closed once the connection is over and its subprocess gone
	stopOnce sync.Once
	stale    atomic.Bool // a list_changed notification came

	endMu   sync.Mutex
	endedAt time.Time
	reason  error // why it ended
	dropped bool  // ended on purpose (Close, a replaced session), not by a failure

	// Guarded by s.mu.
	tools    []agent.Tool
	listedAt time.Time
	listing  chan struct{} // closed when the listing in flight ends
}

// end records that the connection ended for reason (the first reason
// wins; a nil reason only reads) and cancels its context. It returns what
// was recorded.
func (c *conn) end(reason error) (time.Time, error, bool) {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	if c.reason == nil && reason != nil {
		c.endedAt, c.reason = c.s.Now(), reason
		c.dropped = errors.Is(reason, errDropped)
		c.cancel()
	}
	if c.reason == nil {
		return c.s.Now(), errors.New("connection closed"), false
	}
	return c.endedAt, c.reason, c.dropped
}

// errDropped is the reason of a connection ended on purpose.
var errDropped = errors.New("connection closed by cairn")

// ended reports whether the connection has ended or is ending.
func (c *conn) ended() bool { return c.ctx.Err() != nil }

// describe says why the connection ended: how the subprocess exited if
// it did, and what it last wrote on standard error.
func (c *conn) describe() string {
	_, reason, _ := c.end(nil)
	if c.proc != nil && !errors.Is(reason, errDropped) {
		select {
		case <-c.proc.exited:
			reason = c.proc.exitErr
		default:
		}
	}
	return reason.Error() + c.why()
}

// why returns the last lines the subprocess wrote on standard error, as a
// suffix of an error message, or "".
func (c *conn) why() string {
	if c.proc == nil {
		return ""
	}
	if t := c.proc.stderr.last(); t != "" {
		return "; stderr: " + t
	}
	return ""
}

// dial starts a connection: the subprocess or the HTTP session, the MCP
// initialization, and the watcher that notices its end.
func (s *Server) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	c := &conn{s: s, done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	client := mcp.NewClient(&mcp.Implementation{Name: "cairn", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{}, // cairn offers no roots, sampling or elicitation
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			c.stale.Store(true)
		},
		Logger: s.Logger.With("mcp_server", s.cfg.Name),
	})
	var t mcp.Transport
	if s.cfg.Command != "" {
		p, err := s.start(c)
		if err != nil {
			c.cancel()
			return nil, s.errorf("start %s: %v", s.cfg.Command, err)
		}
		c.proc = p
		t = &mcp.IOTransport{Reader: p.stdout, Writer: countWrites{p.stdin, &p.writes}}
	} else {
		hc := s.HTTPClient
		if hc == nil {
			hc = &http.Client{}
		}
		if len(s.cfg.Headers) > 0 {
			hc2 := *hc
			hc2.Transport = &headerTransport{base: hc.Transport, headers: s.cfg.Headers}
			hc = &hc2
		}
		// One reconnect of a broken event stream: a dead server is then
		// noticed within about a second, not after the SDK's five tries.
		t = &mcp.StreamableClientTransport{Endpoint: s.cfg.URL, HTTPClient: hc, MaxRetries: 1}
	}
	c.started = s.Now()
	cs, err := client.Connect(ctx, t, nil)
	if err != nil {
		if c.proc != nil {
			c.proc.closePipes()
			c.proc.stop(s.StopTimeout)
			err = fmt.Errorf("%v (%v)", err, c.proc.exitErr)
		}
		c.cancel()
		return nil, s.errorf("connect: %v%s", err, c.why())
	}
	c.cs = cs
	s.wg.Add(1)
	go c.watch()
	return c, nil
}

// watch waits for the session to end, for whatever reason, then stops
// the subprocess and marks the connection done.
func (c *conn) watch() {
	defer c.s.wg.Done()
	err := c.cs.Wait()
	if err == nil {
		err = errors.New("connection closed")
	}
	c.end(err)
	if c.proc != nil {
		c.proc.closePipes()
		c.proc.stop(c.s.StopTimeout)
	}
	close(c.done)
	if _, _, dropped := c.end(nil); !dropped {
		c.s.Logger.Warn("mcp server connection ended", "server", c.s.cfg.Name, "err", c.describe())
	}
}

// shutdown ends the connection on purpose: calls in flight fail, the
// session is closed, the subprocess stopped (standard input closed, then
// SIGTERM, then SIGKILL, StopTimeout apart). It waits for all that.
func (c *conn) shutdown() {
	c.stopOnce.Do(func() {
		c.end(errDropped)
		// Close waits for calls in flight, which the cancel above ended.
		c.cs.Close()
	})
	<-c.done
}

// headerTransport adds the configured headers to each request.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
}

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.headers {
		r.Header.Set(k, v)
	}
	base := h.base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// proc is a stdio server's subprocess.
type proc struct {
	cmd     *exec.Cmd
	stdin   *os.File // our ends of its pipes
	stdout  *os.File
	stderr  *tail
	exited  chan struct{} // closed when it has exited and been reaped
	exitErr error         // how it exited, set before exited is closed
	writes  atomic.Int64  // writes to its standard input (messages sent), for tests
}

// countWrites counts the writes to w.
type countWrites struct {
	*os.File
	n *atomic.Int64
}

func (w countWrites) Write(p []byte) (int, error) {
	w.n.Add(1)
	return w.File.Write(p)
}

// start starts the subprocess of c, and a goroutine that reaps it and
// ends c when it exits: a server that dies is noticed even if a child of
// its own keeps its standard output open.
func (s *Server) start(c *conn) (*proc, error) {
	cmd := exec.Command(s.cfg.Command, s.cfg.Args...)
	cmd.Env = childEnv(os.Getenv, s.cfg.Env)
	p := &proc{cmd: cmd, stderr: &tail{log: s.Logger, server: s.cfg.Name}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	procgroup.Lead(cmd)
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	p.stdin, p.stdout = inW, outR
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exited")
		} else {
			err = fmt.Errorf("exited: %v", err)
		}
		p.exitErr = err
		close(p.exited)
		c.end(err)
		p.closePipes() // the session's reads end now
	}()
	return p, nil
}

// closePipes closes our ends of the pipes: the server reads end of file.
func (p *proc) closePipes() {
	p.stdin.Close()
	p.stdout.Close()
}

// stop waits for the subprocess to exit after its input was closed,
// sends SIGTERM, then SIGKILL, timeout apart, and then kills what is left
// of its process group (children it started).
func (p *proc) stop(timeout time.Duration) {
	wait := func() bool {
		select {
		case <-p.exited:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	if !wait() {
		procgroup.Signal(p.cmd, false)
		if !wait() {
			procgroup.Signal(p.cmd, true)
			<-p.exited
		}
	}
	procgroup.Signal(p.cmd, true)
}

// inheritedEnv are the variables a subprocess gets from cairn's
// environment.
var inheritedEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TMPDIR", "TZ"}

// childEnv returns the environment of a subprocess: the inherited
// variables that are set, then env (which wins).
func childEnv(getenv func(string) string, env map[string]string) []string {
	var out []string
	for _, k := range inheritedEnv {
		if _, set := env[k]; set {
			continue
		}
		if v := getenv(k); v != "" {
			out = append(out, k+"="+v)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// bind returns ctx, also cancelled when the connection ends.
func (c *conn) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// lost returns the error of an operation that failed with err because
// the connection ended under it, or nil if it did not (the server
// answered with an error, or the connection lives on).
func (c *conn) lost(what string, err error) error {
	var werr *jsonrpc.Error
	if errors.As(err, &werr) {
		return nil // the server answered
	}
	// The session may have seen the end before the watcher: give it a
	// moment, and a subprocess that closed its output time to exit, so
	// that the error says how it ended.
	select {
	case <-c.ctx.Done():
	case <-time.After(time.Second):
		return nil
	}
	if c.proc != nil {
		select {
		case <-c.proc.exited:
		case <-time.After(time.Second):
		}
	}
	if _, reason, _ := c.end(nil); errors.Is(reason, errDropped) {
		return c.s.errorf("%s: %w", what, errClosed)
	}
	return c.s.errorf("%s: connection lost: %s", what, c.describe())
}

// list returns the tools, listing them if the cache is stale (one listing
// at a time; others wait for it).
func (c *conn) list(ctx context.Context) ([]agent.Tool, error) {
	s := c.s
	for {
		s.mu.Lock()
		fresh := c.tools != nil && !c.stale.Load() && s.Now().Sub(c.listedAt) < s.RefreshInterval
		if fresh {
			tools := c.tools
			s.mu.Unlock()
			return tools, nil
		}
		if ch := c.listing; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, s.errorf("list tools: %w", ctx.Err())
			}
		}
		ch := make(chan struct{})
		c.listing = ch
		s.mu.Unlock()

		c.stale.Store(false) // a notification from now on makes this listing stale
		tools, err := c.fetch(ctx)

		s.mu.Lock()
		c.listing = nil
		close(ch)
		if err == nil {
			c.tools, c.listedAt = tools, s.Now()
		}
		s.mu.Unlock()
		return tools, err
	}
}

// fetch lists the server's tools and makes agent tools of them.
func (c *conn) fetch(ctx context.Context) ([]agent.Tool, error) {
	s := c.s
	ctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()
	ctx, unbind := c.bind(ctx)
	defer unbind()
	tools := []agent.Tool{}
	used := make(map[string]bool)
	for t, err := range c.cs.Tools(ctx, nil) {
		if err != nil {
			if lerr := c.lost("list tools", err); lerr != nil {
				return nil, lerr
			}
			return nil, s.errorf("list tools: %v", err)
		}
		name := toolName(s.cfg.Name, t.Name, used)
		if name == "" {
			s.Logger.Warn("mcp tool left out: its name collides with another's", "server", s.cfg.Name, "tool", t.Name)
			continue
		}
		used[name] = true
		var schema json.RawMessage
		if t.InputSchema != nil {
			b, err := json.Marshal(t.InputSchema)
			if err != nil {
				return nil, s.errorf("tool %s: input schema: %v", t.Name, err)
			}
			schema = b
		}
		desc := t.Description
		if desc == "" {
			desc = t.Title
		}
		mcpName := t.Name
		tools = append(tools, agent.Tool{
			Name:        name,
			Description: desc,
			InputSchema: schema,
			Call: func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
				return s.call(ctx, mcpName, input)
			},
		})
	}
	return tools, nil
}

// call calls tool name of the server with input.
func (s *Server) call(ctx context.Context, name string, input json.RawMessage) (json.RawMessage, error) {
	for attempt := 0; ; attempt++ {
		c, err := s.conn(ctx)
		if err != nil {
			return nil, err
		}
		out, err := c.call(ctx, name, input)
		if err != nil && attempt == 0 && ctx.Err() == nil {
			switch {
			case errors.Is(err, mcp.ErrSessionMissing):
				// The HTTP server forgot the session (it restarted): the
				// call was not processed. Replace the connection and send
				// it again.
				c.shutdown()
				continue
			case errors.Is(err, mcp.ErrConnectionClosed) && c.ended():
				// The call was not sent: the connection was closing.
				continue
			}
		}
		return out, err
	}
}

func (c *conn) call(ctx context.Context, name string, input json.RawMessage) (json.RawMessage, error) {
	s := c.s
	what := "tool " + name
	var args any
	if len(input) > 0 && string(input) != "null" {
		if !json.Valid(input) {
			return nil, s.errorf("%s: input is not valid JSON", what)
		}
		args = input
	}
	cctx, unbind := c.bind(ctx)
	defer unbind()
	res, err := c.cs.CallTool(cctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		if ctx.Err() != nil {
			return nil, s.errorf("%s: %w", what, ctx.Err())
		}
		if errors.Is(err, mcp.ErrSessionMissing) {
			return nil, s.errorf("%s: %w", what, err)
		}
		if lerr := c.lost(what, err); lerr != nil {
			if errors.Is(err, mcp.ErrConnectionClosed) {
				return nil, fmt.Errorf("%w (%w)", lerr, mcp.ErrConnectionClosed)
			}
			return nil, lerr
		}
		return nil, s.errorf("%s: %v", what, err)
	}
	out, text := output(res)
	if res.IsError {
		if text == "" {
			text = string(out)
		}
		return nil, s.errorf("%s failed: %s", what, text)
	}
	return out, nil
}
