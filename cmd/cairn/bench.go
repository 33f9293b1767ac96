package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/bench"
	"github.com/cairn-dev/cairn/bench/workerd"
)

const benchHelp = `Usage: cairn bench [flags]

Runs named workloads against cairn and, with --workerd or --workerd-url,
against the same workloads on workerd (Cloudflare's Durable Objects runtime),
in one invocation, and prints each one's throughput and latency percentiles,
the ratio cairn/workerd, and cairn's throughput as a fraction of a
hello-world net/http handler's (the ceiling for HTTP on this machine).

Each workload is a closed loop: --connections keep-alive connections, each
sending its next request as soon as its previous response is read, for
--duration after --warmup. Objects get fresh names at every run. Non-2xx
responses count as errors. The exit code is 1 if cairn or the hello-world
handler answered with an error.

With no --cairn, a cairn server is started in this process on a temporary
data directory, as 'cairn serve' would run it. --workerd installs miniflare 4
with npm into --workerd-dir on first use (it brings the workerd binary), and
needs Node.js 18 or later.

Workloads (--workloads, separated by commas; default all):
%s
Flags:
`

// benchWorkload is one named workload: what each request does, on how
// many objects.
type benchWorkload struct {
	Name, Desc  string
	op          string // the session class's route
	method      string
	objects     int // requests go round robin over this many objects
	body        []byte
	contentType string
	prime       bool // put the value read first
	warmup      bool // false where the first requests are the point (creation)
}

var benchValue = bytes.Repeat([]byte("x"), 1024)

var benchWorkloads = []benchWorkload{
	{Name: "put", Desc: "1 object, KV put of 1 KiB", op: "put", method: "POST", objects: 1, body: benchValue, contentType: "application/octet-stream", warmup: true},
	{Name: "sqlput", Desc: "1 object, SQL upsert (INSERT OR REPLACE) of 1 KiB", op: "sqlput", method: "POST", objects: 1, body: benchValue, contentType: "application/octet-stream", warmup: true},
	{Name: "put1000", Desc: "1,000 objects round robin, KV put of 1 KiB, creating them (no warmup)", op: "put", method: "POST", objects: 1000, body: benchValue, contentType: "application/octet-stream"},
	{Name: "get", Desc: "1 object, KV get of a 1 KiB value", op: "get", method: "GET", objects: 1, prime: true, warmup: true},
	{Name: "chat1", Desc: "the seed's chat on 1 session: read the whole history, append 2 messages, write it back", op: "chat", method: "POST", objects: 1, body: []byte(`{"text":"hello"}`), contentType: "application/json", warmup: true},
	{Name: "chat200", Desc: "the seed's chat on 200 sessions round robin", op: "chat", method: "POST", objects: 200, body: []byte(`{"text":"hello"}`), contentType: "application/json", warmup: true},
}

// benchTarget is a server the workloads run against.
type benchTarget struct {
	name      string
	url       string // base URL
	header    map[string]string
	path      func(object, op string) string
	serverCPU func() time.Duration // for a server in other processes
}

func cairnTarget(base, token string) benchTarget {
	t := benchTarget{name: "cairn", url: base, path: func(object, op string) string {
		return "/v1/objects/session/" + url.PathEscape(object) + "/" + op
	}}
	if token != "" {
		t.header = map[string]string{"Authorization": "Bearer " + token}
	}
	return t
}

func workerdTarget(base string) benchTarget {
	return benchTarget{name: "workerd", url: base, path: func(object, op string) string {
		return "/" + op + "?session=" + url.QueryEscape(object)
	}}
}

// benchStats is one run's figures, as reported.
type benchStats struct {
	RPS        float64 `json:"rps"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	P50ms      float64 `json:"p50_ms"`
	P90ms      float64 `json:"p90_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	// Cores busy on average while measured (-1: unknown): this process
	// (load generator, and the server when in-process), the server's own
	// processes, and everything else on the machine (noise).
	CPUSelf   float64 `json:"cpu_self_cores"`
	CPUServer float64 `json:"cpu_server_cores"`
	CPUOthers float64 `json:"cpu_others_cores"`
}

func newBenchStats(r bench.Result, err error) *benchStats {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s := &benchStats{
		RPS: r.RPS(), Requests: r.Requests, Errors: r.Errors, FirstError: r.FirstError,
		Seconds: r.Elapsed.Seconds(),
		P50ms:   ms(r.Latency.Quantile(0.50)), P90ms: ms(r.Latency.Quantile(0.90)),
		P99ms: ms(r.Latency.Quantile(0.99)), MaxMs: ms(r.Latency.Max()),
		CPUSelf: r.CPU.Self, CPUServer: r.CPU.Server, CPUOthers: r.CPU.Others(),
	}
	if r.Elapsed == 0 {
		s.CPUSelf, s.CPUServer, s.CPUOthers = -1, -1, -1
	}
	if err != nil {
		s.Errors++
		if s.FirstError == "" {
			s.FirstError = err.Error()
		}
	}
	return s
}

type benchRow struct {
	Name            string      `json:"name"`
	Desc            string      `json:"description"`
	Cairn           *benchStats `json:"cairn"`
	Workerd         *benchStats `json:"workerd,omitempty"`
	CairnPerWorkerd float64     `json:"cairn_per_workerd,omitempty"`
	CairnPerHello   float64     `json:"cairn_per_hello,omitempty"`
}

type benchReport struct {
	Date    string `json:"date"`
	Machine struct {
		OS         string `json:"os"`
		Arch       string `json:"arch"`
		CPUs       int    `json:"cpus"`
		GOMAXPROCS int    `json:"gomaxprocs"`
		Go         string `json:"go"`
	} `json:"machine"`
	Duration     string `json:"duration"`
	Warmup       string `json:"warmup"`
	Connections  int    `json:"connections"`
	ChatRequests int64  `json:"chat_requests,omitempty"`
	Cairn        struct {
		URL        string `json:"url"`
		InProcess  bool   `json:"in_process"`
		Durability string `json:"durability,omitempty"`
	} `json:"cairn"`
	Workerd struct {
		Requested bool   `json:"requested"`
		Available bool   `json:"available"`
		URL       string `json:"url,omitempty"`
		Version   string `json:"miniflare_version,omitempty"`
		Reason    string `json:"unavailable_reason,omitempty"`
	} `json:"workerd"`
	Hello     *benchStats `json:"hello"`
	Workloads []benchRow  `json:"workloads"`
	Targets   struct {
		// Cairn at least 20x workerd on every workload (null without workerd).
		Workerd20x *bool    `json:"cairn_20x_workerd"`
		Below20x   []string `json:"below_20x,omitempty"`
		// Cairn's 1-object put at least half of hello-world's throughput.
		PutHalfHello *bool `json:"put_within_2x_hello"`
	} `json:"targets"`
}

func (m *Main) runBench(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	var names []string
	for _, w := range benchWorkloads {
		names = append(names, fmt.Sprintf("  %-8s %s\n", w.Name, w.Desc))
	}
	fs.Usage = func() { fmt.Fprintf(m.Stderr, benchHelp, strings.Join(names, "")); fs.PrintDefaults() }
	cairnURL := fs.String("cairn", "", "base URL of a running cairn server (default: start one in this process)")
	token := fs.String("token", "", "bearer token for --cairn (env CAIRN_TOKEN)")
	durability := fs.String("durability", "disk", "durability of the in-process server: disk or process")
	startWorkerd := fs.Bool("workerd", false, "start the workerd peer (installs miniflare 4 with npm on first use)")
	workerdURL := fs.String("workerd-url", "", "base URL of a workerd peer already running (shared/peers/workerd)")
	defaultDir, _ := workerd.DefaultDir()
	workerdDir := fs.String("workerd-dir", defaultDir, "where miniflare is installed and the peer's scripts are written")
	duration := fs.Duration("duration", 8*time.Second, "measured time of each workload on each server")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "unmeasured load before each measured run (not for put1000)")
	connections := fs.Int("connections", 64, "concurrent keep-alive connections (requests in flight)")
	chatRequests := fs.Int64("chat-requests", 0, "end chat1 and chat200 after this many requests per server, with no warmup, instead of after --duration: their histories then end equally long (the chat's cost grows with its history)")
	list := fs.String("workloads", "", "workloads to run, separated by commas (default all)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process (load generator, and the in-process cairn) for each run to `prefix`-WORKLOAD-SERVER.prof")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(m.Stderr, "cairn bench: "+format+"\n", a...)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments: %v", fs.Args())
	}
	if *connections <= 0 || *duration <= 0 || *warmup < 0 || *chatRequests < 0 {
		return usageErr("--connections and --duration must be positive, --warmup and --chat-requests not negative")
	}
	if *startWorkerd && *workerdURL != "" {
		return usageErr("--workerd and --workerd-url exclude each other")
	}
	workloads := benchWorkloads
	if *list != "" {
		workloads = nil
		for _, name := range strings.Split(*list, ",") {
			name = strings.TrimSpace(name)
			found := false
			for _, w := range benchWorkloads {
				if w.Name == name {
					workloads = append(workloads, w)
					found = true
				}
			}
			if !found {
				return usageErr("unknown workload %q (want: %s)", name, benchNames())
			}
		}
	}
	for _, u := range []string{*cairnURL, *workerdURL} {
		if u != "" && !strings.HasPrefix(u, "http://") {
			return usageErr("%q: only http:// URLs are supported", u)
		}
	}
	if *token == "" {
		*token = m.Getenv("CAIRN_TOKEN")
	}

	var rep benchReport
	rep.Date = time.Now().UTC().Format(time.RFC3339)
	rep.Machine.OS, rep.Machine.Arch, rep.Machine.Go = runtime.GOOS, runtime.GOARCH, runtime.Version()
	rep.Machine.CPUs, rep.Machine.GOMAXPROCS = runtime.NumCPU(), runtime.GOMAXPROCS(0)
	rep.Duration, rep.Warmup, rep.Connections, rep.ChatRequests = duration.String(), warmup.String(), *connections, *chatRequests

	// The servers. The in-process cairn has no auth, so the token is for
	// --cairn only.
	rep.Cairn.URL = *cairnURL
	cairnToken := strings.TrimSpace(*token)
	if *cairnURL == "" {
		u, stop, err := m.benchCairn(ctx, *durability)
		if err != nil {
			fmt.Fprintln(m.Stderr, "cairn bench: start cairn:", err)
			return ExitFailure
		}
		defer stop()
		rep.Cairn.URL, rep.Cairn.InProcess, rep.Cairn.Durability = u, true, *durability
		cairnToken = ""
	}
	cairnT := cairnTarget(rep.Cairn.URL, cairnToken)

	helloURL, stopHello, err := benchHello()
	if err != nil {
		fmt.Fprintln(m.Stderr, "cairn bench: start hello-world server:", err)
		return ExitFailure
	}
	defer stopHello()

	var workerdT *benchTarget
	rep.Workerd.Requested = *startWorkerd || *workerdURL != ""
	switch {
	case *workerdURL != "":
		t := workerdTarget(*workerdURL)
		workerdT = &t
		rep.Workerd.Available, rep.Workerd.URL = true, *workerdURL
	case *startWorkerd:
		fmt.Fprintf(m.Stderr, "starting workerd (miniflare 4 in %s)...\n", *workerdDir)
		var peer *workerd.Peer
		if *workerdDir == "" {
			err = errors.New("no cache directory: set --workerd-dir")
		} else {
			peer, err = workerd.Start(ctx, *workerdDir, m.Stderr)
		}
		if err != nil {
			rep.Workerd.Reason = err.Error()
			fmt.Fprintf(m.Stderr, "cairn bench: workerd peer unavailable, measuring cairn only: %v\n", err)
		} else {
			defer peer.Close()
			t := workerdTarget(peer.URL)
			t.serverCPU = func() time.Duration { return bench.GroupCPU(peer.PID()) }
			workerdT = &t
			rep.Workerd.Available, rep.Workerd.URL, rep.Workerd.Version = true, peer.URL, peer.Version
		}
	default:
		rep.Workerd.Reason = "not requested (--workerd or --workerd-url)"
	}

	runID := benchRunID()
	run := func(t benchTarget, w benchWorkload) *benchStats {
		fmt.Fprintf(m.Stderr, "%-8s on %-7s ", w.Name, t.name)
		var s *benchStats
		if *cpuprofile != "" {
			stop, err := benchProfile(fmt.Sprintf("%s-%s-%s.prof", *cpuprofile, w.Name, t.name))
			if err != nil {
				fmt.Fprintln(m.Stderr, "\ncairn bench: cpu profile:", err)
			} else {
				defer stop()
				s = m.benchRun(ctx, t, w, runID, *connections, *warmup, *duration, *chatRequests)
				stop()
			}
		}
		if s == nil {
			s = m.benchRun(ctx, t, w, runID, *connections, *warmup, *duration, *chatRequests)
		}
		fmt.Fprintf(m.Stderr, "%8.0f req/s  p50 %s  p99 %s", s.RPS, benchDur(s.P50ms), benchDur(s.P99ms))
		if s.Errors > 0 {
			fmt.Fprintf(m.Stderr, "  %d errors (first: %s)", s.Errors, s.FirstError)
		}
		fmt.Fprintln(m.Stderr)
		return s
	}

	hello := benchTarget{name: "hello", url: helloURL, path: func(string, string) string { return "/" }}
	rep.Hello = run(hello, benchWorkload{Name: "hello", op: "", method: "GET", objects: 1, warmup: true})
	exit := ExitOK
	if rep.Hello.Errors > 0 {
		exit = ExitFailure
	}
	for _, w := range workloads {
		if ctx.Err() != nil {
			break
		}
		row := benchRow{Name: w.Name, Desc: w.Desc}
		row.Cairn = run(cairnT, w)
		if row.Cairn.Errors > 0 {
			exit = ExitFailure
		}
		if workerdT != nil {
			row.Workerd = run(*workerdT, w)
			if row.Workerd.RPS > 0 {
				row.CairnPerWorkerd = row.Cairn.RPS / row.Workerd.RPS
			}
		}
		if rep.Hello.RPS > 0 {
			row.CairnPerHello = row.Cairn.RPS / rep.Hello.RPS
		}
		rep.Workloads = append(rep.Workloads, row)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(m.Stderr, "cairn bench: interrupted")
		return ExitFailure
	}

	if workerdT != nil {
		ok := true
		for _, r := range rep.Workloads {
			if r.CairnPerWorkerd < 20 {
				ok = false
				rep.Targets.Below20x = append(rep.Targets.Below20x, fmt.Sprintf("%s %.1fx", r.Name, r.CairnPerWorkerd))
			}
		}
		rep.Targets.Workerd20x = &ok
	}
	for _, r := range rep.Workloads {
		if r.Name == "put" {
			ok := r.CairnPerHello >= 0.5
			rep.Targets.PutHalfHello = &ok
		}
	}

	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		m.benchPrint(rep)
	}
	return exit
}

func benchNames() string {
	var s []string
	for _, w := range benchWorkloads {
		s = append(s, w.Name)
	}
	return strings.Join(s, ", ")
}

// benchRunID makes object names fresh at every run.
func benchRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// benchRun runs workload w against t.
func (m *Main) benchRun(ctx context.Context, t benchTarget, w benchWorkload, runID string, conns int, warmup, duration time.Duration, chatRequests int64) *benchStats {
	object := func(i int) string { return fmt.Sprintf("bench-%s-%s-%d", runID, w.Name, i) }
	if w.prime {
		if err := benchPrime(ctx, t, object(0)); err != nil {
			return newBenchStats(bench.Result{}, fmt.Errorf("prime: %w", err))
		}
	}
	load := bench.Load{URL: t.url, Header: t.header, Connections: conns, Duration: duration, ServerCPU: t.serverCPU}
	if w.warmup {
		load.Warmup = warmup
	}
	if w.op == "chat" && chatRequests > 0 {
		load.Warmup, load.MaxRequests = 0, chatRequests
	}
	for i := range w.objects {
		load.Requests = append(load.Requests, bench.Request{Method: w.method, Path: t.path(object(i), w.op), ContentType: w.contentType, Body: w.body})
	}
	res, err := bench.Run(ctx, load)
	return newBenchStats(res, err)
}

// benchProfile starts a CPU profile into path; stop may be called twice.
func benchProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }, nil
}

// benchPrime writes the value the get workload reads (the session's first
// put writes key k1, the one get reads).
func benchPrime(ctx context.Context, t benchTarget, object string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(t.url, "/")+t.path(object, "put"), bytes.NewReader(benchValue))
	if err != nil {
		return err
	}
	for k, v := range t.header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// benchCairn starts a cairn server in this process, as `cairn serve` runs
// it, on a loopback port and a temporary data directory, and returns its
// URL and a function that stops it and removes the data.
func (m *Main) benchCairn(ctx context.Context, durability string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "cairn-bench-")
	if err != nil {
		return "", nil, err
	}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = dir
	cfg.Durability = durability
	cfg.LogLevel = "warn"
	// serve announces itself on Stdout, which is the report's.
	sm := &Main{Stdin: m.Stdin, Stdout: io.Discard, Stderr: m.Stderr, Getenv: m.Getenv}
	sctx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- sm.serve(sctx, cfg, ready) }()
	select {
	case addr := <-ready:
		stop := func() {
			cancel()
			if err := <-errc; err != nil {
				fmt.Fprintln(m.Stderr, "cairn bench: stop cairn:", err)
			}
			os.RemoveAll(dir)
		}
		return "http://" + addr, stop, nil
	case err := <-errc:
		cancel()
		os.RemoveAll(dir)
		return "", nil, err
	}
}

// benchHello starts the hello-world net/http server: the ceiling of HTTP
// on this machine, for the same load generator.
func benchHello() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hello := []byte("hello world")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(hello)
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// benchDur renders milliseconds with about three significant digits.
func benchDur(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 10:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1fms", ms)
	case ms < 10000:
		return fmt.Sprintf("%.0fms", ms)
	}
	return fmt.Sprintf("%.1fs", ms/1000)
}

func (m *Main) benchPrint(rep benchReport) {
	out := m.Stdout
	fmt.Fprintf(out, "cairn bench, %s, %s/%s, %d CPUs (GOMAXPROCS %d), %s\n",
		rep.Date, rep.Machine.OS, rep.Machine.Arch, rep.Machine.CPUs, rep.Machine.GOMAXPROCS, rep.Machine.Go)
	where := rep.Cairn.URL
	if rep.Cairn.InProcess {
		where = "in-process, durability " + rep.Cairn.Durability
	}
	fmt.Fprintf(out, "%s per run after %s warmup, %d connections; ", rep.Duration, rep.Warmup, rep.Connections)
	if rep.ChatRequests > 0 {
		fmt.Fprintf(out, "chats: %d requests per server, no warmup; ", rep.ChatRequests)
	}
	fmt.Fprintf(out, "cairn %s; ", where)
	switch {
	case rep.Workerd.Available && rep.Workerd.Version != "":
		fmt.Fprintf(out, "workerd via miniflare %s\n", rep.Workerd.Version)
	case rep.Workerd.Available:
		fmt.Fprintf(out, "workerd at %s\n", rep.Workerd.URL)
	default:
		fmt.Fprintf(out, "workerd UNAVAILABLE: %s\n", rep.Workerd.Reason)
	}
	fmt.Fprintln(out)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-18s\tcairn req/s\tp50\tp99\tworkerd req/s\tp50\tp99\tcairn/workerd\tcairn/hello\terrors c/w\t\n", "workload")
	cell := func(s *benchStats) string {
		if s == nil {
			return "-\t-\t-"
		}
		return fmt.Sprintf("%.0f\t%s\t%s", s.RPS, benchDur(s.P50ms), benchDur(s.P99ms))
	}
	ratio := func(x float64) string {
		if x <= 0 {
			return "-"
		}
		if x < 10 {
			return fmt.Sprintf("%.2fx", x)
		}
		return fmt.Sprintf("%.1fx", x)
	}
	errs := func(r benchRow) string {
		w := "-"
		if r.Workerd != nil {
			w = fmt.Sprint(r.Workerd.Errors)
		}
		return fmt.Sprintf("%d/%s", r.Cairn.Errors, w)
	}
	fmt.Fprintf(tw, "%-18s\t%s\t%s\t-\t1.00x\t%d/-\t\n", "hello (net/http)", cell(rep.Hello), cell(nil), rep.Hello.Errors)
	for _, r := range rep.Workloads {
		fmt.Fprintf(tw, "%-18s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, cell(r.Cairn), cell(r.Workerd), ratio(r.CairnPerWorkerd), ratio(r.CairnPerHello), errs(r))
	}
	tw.Flush()

	// Where the CPU went: whether a run saturated the machine, and whether
	// something else on it was busy meanwhile.
	fmt.Fprintf(out, "\nCPU, cores busy on average while measured (of %d):\n", rep.Machine.CPUs)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-18s\tcairn run: bench+cairn\tothers\tworkerd run: bench\tworkerd\tothers\t\n", "workload")
	cores := func(x float64) string {
		if x < 0 {
			return "?"
		}
		return fmt.Sprintf("%.2f", x)
	}
	noisy := 0.0
	cpuCells := func(s *benchStats, server bool) string {
		if s == nil {
			if server {
				return "-\t-\t-"
			}
			return "-\t-"
		}
		noisy = max(noisy, s.CPUOthers)
		if server {
			return cores(s.CPUSelf) + "\t" + cores(s.CPUServer) + "\t" + cores(s.CPUOthers)
		}
		return cores(s.CPUSelf) + "\t" + cores(s.CPUOthers)
	}
	fmt.Fprintf(tw, "%-18s\t%s\t%s\t\n", "hello (net/http)", cpuCells(rep.Hello, false), cpuCells(nil, true))
	for _, r := range rep.Workloads {
		fmt.Fprintf(tw, "%-18s\t%s\t%s\t\n", r.Name, cpuCells(r.Cairn, false), cpuCells(r.Workerd, true))
	}
	tw.Flush()
	if noisy > 0.25 {
		fmt.Fprintf(out, "WARNING: other processes kept up to %.2f cores busy during a run: figures are noisy; rerun on a quiet machine\n", noisy)
	}

	first := true
	note := func(who, name string, s *benchStats) {
		if s == nil || s.Errors == 0 {
			return
		}
		if first {
			fmt.Fprintln(out, "\nerrors:")
			first = false
		}
		fmt.Fprintf(out, "  %s on %s: %d of %d requests; first: %s\n", name, who, s.Errors, s.Requests, s.FirstError)
	}
	note("hello", "hello", rep.Hello)
	for _, r := range rep.Workloads {
		note("cairn", r.Name, r.Cairn)
		note("workerd", r.Name, r.Workerd)
	}

	fmt.Fprintln(out, "\ntargets:")
	switch t := rep.Targets.Workerd20x; {
	case t == nil:
		fmt.Fprintln(out, "  cairn >= 20x workerd on every workload: not measured (workerd unavailable)")
	case *t:
		fmt.Fprintln(out, "  cairn >= 20x workerd on every workload: met")
	default:
		fmt.Fprintf(out, "  cairn >= 20x workerd on every workload: MISSED (%s)\n", strings.Join(rep.Targets.Below20x, ", "))
	}
	switch t := rep.Targets.PutHalfHello; {
	case t == nil:
		fmt.Fprintln(out, "  cairn put within 2x of hello-world: not measured (put not run)")
	default:
		for _, r := range rep.Workloads {
			if r.Name == "put" {
				verdict := "met"
				if !*t {
					verdict = "MISSED"
				}
				fmt.Fprintf(out, "  cairn put within 2x of hello-world: %s (%.2f of hello's req/s)\n", verdict, r.CairnPerHello)
			}
		}
	}
}
