package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/builtin"
	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// Config is the server's configuration. Flags override the environment,
// which overrides the config file, which overrides the defaults.
type Config struct {
	Addr        string            `json:"addr"`
	Data        string            `json:"data"`
	Durability  string            `json:"durability"`
	Sync        string            `json:"sync"`
	IdleTimeout Duration          `json:"idle_timeout"`
	MaxActive   int               `json:"max_active"`
	MaxBody     int64             `json:"max_body_bytes"`
	LogLevel    string            `json:"log_level"`
	Tokens      []cairnhttp.Token `json:"tokens"`
	Agents      []AgentConfig     `json:"agents"`
	Archive     ArchiveConfig     `json:"archive"`
}

// Duration is a time.Duration written as "60s" in JSON.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"60s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// DefaultConfig is the embedded default: local data, loopback, no auth.
func DefaultConfig() Config {
	return Config{
		Addr:        "127.0.0.1:8420",
		Data:        "cairn-data",
		Durability:  "disk",
		Sync:        "auto",
		IdleTimeout: Duration(60 * time.Second),
		MaxActive:   10000,
		MaxBody:     8 << 20,
		LogLevel:    "info",
	}
}

const serveHelp = `Usage: cairn serve [flags]

Runs the cairn server: the HTTP/WebSocket API over the objects stored in the
data directory. With no flags it listens on 127.0.0.1:8420 and keeps data in
./cairn-data, with no auth (loopback only).

Settings, by precedence: flags, then environment, then the config file
(--config, JSON; see docs/configuration.md), then defaults.

Agents (/v1/agents): the config file's "agents" list; without one,
OPENAI_BASE_URL and/or OPENAI_API_KEY (and CAIRN_MODEL, default gpt-4o-mini)
point the agent "default" at an OpenAI-compatible server; failing those,
ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL, CAIRN_MODEL, default
claude-sonnet-4-5) point it at Anthropic; with none of them it uses the
offline echo provider.

Archive: agent sessions' old messages and expired sessions go to DATA/archive,
or to S3 with --archive-s3-endpoint and --archive-s3-bucket (keys in
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); see docs/configuration.md.

Flags:
`

// tokenFlags collects repeated --token values.
type tokenFlags []string

func (t *tokenFlags) String() string     { return strings.Join(*t, ",") }
func (t *tokenFlags) Set(v string) error { *t = append(*t, v); return nil }

// parseToken reads NAME:SECRET:SCOPE where SCOPE is "admin" or a
// comma-separated list of namespaces ("*" for all).
func parseToken(s string) (cairnhttp.Token, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return cairnhttp.Token{}, fmt.Errorf("token %q: want NAME:SECRET:SCOPE (SCOPE: admin, or namespaces separated by commas)", redact(s))
	}
	if len(parts[1]) < 16 {
		return cairnhttp.Token{}, fmt.Errorf("token %q: the secret must be at least 16 characters", parts[0])
	}
	t := cairnhttp.Token{Name: parts[0], Secret: parts[1]}
	if parts[2] == "admin" {
		t.Admin = true
	} else {
		t.Namespaces = strings.Split(parts[2], ",")
	}
	return t, nil
}

func redact(s string) string {
	if i := strings.Index(s, ":"); i >= 0 {
		return s[:i] + ":…"
	}
	return "…"
}

// loadConfig builds the configuration from args, the environment and the
// config file.
func (m *Main) loadConfig(args []string) (Config, *flag.FlagSet, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() { fmt.Fprint(m.Stderr, serveHelp); fs.PrintDefaults() }
	configPath := fs.String("config", "", "JSON config file (env CAIRN_CONFIG)")
	addr := fs.String("addr", cfg.Addr, "listen address HOST:PORT (env CAIRN_ADDR); a non-loopback address needs a token")
	data := fs.String("data", cfg.Data, "data directory (env CAIRN_DATA)")
	durability := fs.String("durability", cfg.Durability, "when a write is acknowledged: disk (fsynced; survives power loss) or process (reached the OS; survives kill -9) (env CAIRN_DURABILITY)")
	syncMode := fs.String("sync", cfg.Sync, "how disk durability is reached: auto (one syncfs for a batch of objects, fdatasync for one), syncfs (always; a data directory on its own filesystem) or files (fdatasync each object's WAL) (env CAIRN_SYNC)")
	idle := fs.Duration("idle-timeout", time.Duration(cfg.IdleTimeout), "evict an object from memory after this long without events")
	maxActive := fs.Int("max-active", cfg.MaxActive, "objects kept in memory at most (least recently used are evicted)")
	maxBody := fs.Int64("max-body-bytes", cfg.MaxBody, "largest request body accepted")
	logLevel := fs.String("log-level", cfg.LogLevel, "debug, info, warn or error (env CAIRN_LOG_LEVEL)")
	archiveFlags := addArchiveFlags(fs)
	var tokens tokenFlags
	fs.Var(&tokens, "token", "bearer token NAME:SECRET:SCOPE, SCOPE being admin or namespaces separated by commas; repeatable (env CAIRN_TOKEN: an admin token's secret)")
	if err := fs.Parse(args); err != nil {
		return cfg, fs, err
	}
	if fs.NArg() > 0 {
		return cfg, fs, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	path := *configPath
	if path == "" {
		path = m.Getenv("CAIRN_CONFIG")
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fs, fmt.Errorf("config: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fs, fmt.Errorf("config %s: %w", path, err)
		}
	}
	env := func(name string, dst *string) {
		if v := m.Getenv(name); v != "" {
			*dst = v
		}
	}
	env("CAIRN_ADDR", &cfg.Addr)
	env("CAIRN_DATA", &cfg.Data)
	env("CAIRN_DURABILITY", &cfg.Durability)
	env("CAIRN_SYNC", &cfg.Sync)
	env("CAIRN_LOG_LEVEL", &cfg.LogLevel)
	if v := m.Getenv("CAIRN_TOKEN"); v != "" {
		cfg.Tokens = append(cfg.Tokens, cairnhttp.Token{Name: "env", Secret: v, Admin: true})
	}
	if set["addr"] {
		cfg.Addr = *addr
	}
	if set["data"] {
		cfg.Data = *data
	}
	if set["durability"] {
		cfg.Durability = *durability
	}
	if set["sync"] {
		cfg.Sync = *syncMode
	}
	if set["idle-timeout"] {
		cfg.IdleTimeout = Duration(*idle)
	}
	if set["max-active"] {
		cfg.MaxActive = *maxActive
	}
	if set["max-body-bytes"] {
		cfg.MaxBody = *maxBody
	}
	if set["log-level"] {
		cfg.LogLevel = *logLevel
	}
	archiveFlags.apply(m, &cfg, set)
	for _, s := range tokens {
		t, err := parseToken(s)
		if err != nil {
			return cfg, fs, err
		}
		cfg.Tokens = append(cfg.Tokens, t)
	}
	for _, t := range cfg.Tokens {
		if len(t.Secret) < 16 {
			return cfg, fs, fmt.Errorf("token %q: the secret must be at least 16 characters", t.Name)
		}
	}
	if cfg.MaxActive <= 0 || cfg.IdleTimeout <= 0 || cfg.MaxBody <= 0 {
		return cfg, fs, errors.New("max-active, idle-timeout and max-body-bytes must be positive")
	}
	return cfg, fs, nil
}

// errUsage is a configuration error: exit code 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func (m *Main) runServe(ctx context.Context, args []string) int {
	cfg, _, err := m.loadConfig(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintln(m.Stderr, "cairn serve:", err)
		return ExitUsage
	}
	if err := m.serve(ctx, cfg, nil); err != nil {
		fmt.Fprintln(m.Stderr, "cairn serve:", err)
		var ue errUsage
		if errors.As(err, &ue) {
			return ExitUsage
		}
		return ExitFailure
	}
	return ExitOK
}

// serve runs the server until ctx ends, then shuts down gracefully. If
// ready is not nil it receives the listening address.
func (m *Main) serve(ctx context.Context, cfg Config, ready chan<- string) error {
	level, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	durability, err := cairn.ParseDurability(cfg.Durability)
	if err != nil {
		return err
	}
	sm, err := sqlite.ParseSyncMode(cfg.Sync)
	if err != nil {
		return errUsage{err.Error()}
	}
	dataDir, err := filepath.Abs(cfg.Data)
	if err != nil {
		return err
	}
	// Refuse an unsafe listener before touching the data directory.
	if err := (&cairnhttp.Server{Tokens: cfg.Tokens}).CheckListen(cfg.Addr); err != nil {
		return errUsage{cairn.ErrorMessage(err)}
	}

	eng, err := sqlite.OpenWith(dataDir, durability, sqlite.Options{Sync: sm})
	if err != nil {
		return err
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = durability
	rt.IdleTimeout = time.Duration(cfg.IdleTimeout)
	rt.MaxActive = cfg.MaxActive
	if limit := sqlite.MaxObjects(); rt.MaxActive > limit {
		logger.Warn("max-active lowered to fit the open-file limit", "max_active", limit, "asked", cfg.MaxActive,
			"files_per_object", sqlite.FilesPerObject)
		rt.MaxActive = limit
	}
	rt.Logger = logger
	for name, class := range builtin.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			eng.Close()
			return err
		}
	}
	for name, class := range coord.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			eng.Close()
			return err
		}
	}
	locks, err := coord.NewLocks(rt)
	if err != nil {
		eng.Close()
		return err
	}
	agents, err := m.agentService(cfg)
	if err != nil {
		eng.Close()
		return errUsage{err.Error()}
	}
	arc, arcWhere, err := m.archiveStore(ctx, cfg.Archive, dataDir)
	if err != nil {
		eng.Close()
		return err
	}
	agents.Archive = arc
	if _, err := agents.Register(rt); err != nil {
		eng.Close()
		return err
	}
	metrics := cairnhttp.NewMetrics(rt)
	if err := registerAgentMetrics(metrics, agents); err != nil {
		eng.Close()
		return err
	}
	if err := rt.Open(); err != nil {
		eng.Close()
		return err
	}
	srv := cairnhttp.NewServer(rt)
	srv.Tokens = cfg.Tokens
	srv.MaxBodyBytes = cfg.MaxBody
	srv.Logger = logger
	srv.Metrics = metrics
	srv.Routes = append(srv.Routes, agentRoutes(agents)...)
	srv.Routes = append(srv.Routes, agentSDKRoutes(agents)...)
	srv.Routes = append(srv.Routes, mcpRoutes(rt, agents, cfg, logger)...)
	srv.Routes = append(srv.Routes, consoleRoutes()...)
	for _, p := range coord.LocksRoutes {
		srv.Routes = append(srv.Routes, cairnhttp.Route{Pattern: p, Handler: locks, Namespace: "locks", Name: "locks"})
	}
	closeRuntime := func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := rt.Close(cctx)
		if cerr := agents.Close(); cerr != nil {
			logger.Warn("closing the agents' tool servers", "err", cerr)
		}
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		closeRuntime()
		return err
	}
	auth := "off (loopback only)"
	if len(cfg.Tokens) > 0 {
		auth = strconv.Itoa(len(cfg.Tokens)) + " token(s)"
	}
	fmt.Fprintf(m.Stdout, "cairn %s listening on http://%s\n  data:       %s\n  archive:    %s\n  durability: %s\n  auth:       %s\n",
		Version, ln.Addr(), dataDir, arcWhere, durability, auth)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		closeRuntime()
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serr := srv.Shutdown(sctx)
	cerr := closeRuntime()
	<-errc
	if serr != nil || cerr != nil {
		return errors.Join(serr, cerr)
	}
	logger.Info("stopped")
	return nil
}
