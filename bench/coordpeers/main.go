// Command coordpeers measures cairn's lock against the tools a user would
// otherwise pick for a distributed lock, in one run over loopback: Redis
// (SET NX PX and a compare-and-delete script, durable with appendfsync
// always, and with everysec for reference) and etcd's concurrency.Mutex
// (embedded etcd, fsync on). cairn is measured four ways: "cairn" calls
// the lock table (namespace locks, coord.LockTableClass) over one RPC
// WebSocket per client (GET /v1/rpc, as Redis and etcd clients keep one
// connection), with the server in this process; "cairn-serve" is the same
// against `cairn serve` in a process of its own (built from this
// repository), as redis-server runs; "cairn-http" calls the lock table's
// REST routes (/v1/locks/{name}/acquire, one HTTP request per call); and
// "cairn-objects" calls a Lock object per lock (namespace lock) over the
// socket. Each system gets --clients concurrent clients doing
// acquire+release round trips for --duration, on one lock and on 1,000
// locks taken round robin; the table shows round trips per second, the
// latency of a round trip and the ratio to cairn. With --rounds N the
// whole sequence runs N times, so that every system meets the machine's
// slow and fast spells alike, and the table gives medians: of round trips
// per second, and of the ratio to cairn measured in the same round.
//
// It is a module of its own so that etcd's dependencies stay out of
// cairn's go.mod. Run it from its directory:
//
//	cd bench/coordpeers && go run . [flags]
//
// Redis is skipped (said so in the output) if redis-server is not on the
// PATH: `apt-get install redis-server`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/sqlite"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "coordpeers:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	clients    int
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	locks      []int
	systems    []string
	redis      string
	data       string
	cpuprofile string
	durability string
	sync       string
	trace      string
	cairnBin   string // the cairn binary for cairn-serve, built by run
}

// writerOrNil returns f as an io.Writer, nil if f is nil.
func writerOrNil(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("coordpeers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients per system, each with its own connection")
	fs.IntVar(&o.rounds, "rounds", 1, "times to run every system and lock count, one after the other; the table gives medians")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per system and lock count")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before each measurement")
	locks := fs.String("locks", "1,1000", "lock counts to run, separated by commas (round robin over the locks)")
	systems := fs.String("systems", "cairn,cairn-serve,cairn-http,cairn-objects,redis-always,redis-everysec,etcd", "systems to run, separated by commas")
	fs.StringVar(&o.redis, "redis-server", "redis-server", "the redis-server binary")
	fs.StringVar(&o.data, "data", "", "directory for the systems' data (default: a temporary directory, removed at the end)")
	fs.StringVar(&o.durability, "cairn-durability", "disk", "cairn's durability: disk (fsync before answering, the fair comparison) or process (to see what fsync costs)")
	fs.StringVar(&o.sync, "cairn-sync", "auto", "how cairn makes commits durable at disk: auto, syncfs or files (sqlite.SyncMode)")
	fs.StringVar(&o.trace, "trace", "", "write an execution trace (go tool trace) of the measured part of the in-process cairn runs to this file; keep --duration short")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured part of the cairn runs (server and clients: one process) to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*locks, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("--locks: %q is not a positive count", s)
		}
		o.locks = append(o.locks, n)
	}
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "cairn", "cairn-serve", "cairn-http", "cairn-objects", "redis-always", "redis-everysec", "etcd":
			o.systems = append(o.systems, s)
		default:
			return o, fmt.Errorf("--systems: unknown system %q", s)
		}
	}
	if o.durability != "disk" && o.durability != "process" {
		return o, fmt.Errorf("--cairn-durability: want disk or process, not %q", o.durability)
	}
	if _, err := sqlite.ParseSyncMode(o.sync); err != nil {
		return o, fmt.Errorf("--cairn-sync: %w", err)
	}
	if o.clients < 1 || o.rounds < 1 || o.duration <= 0 || o.warmup < 0 {
		return o, errors.New("--clients, --rounds and --duration must be positive")
	}
	return o, nil
}

// A system is a lock service under test, started by this program.
type system interface {
	// dial returns client i's connection.
	dial(ctx context.Context, i int) (locker, error)
	close() error
}

// A locker is one client: roundTrip acquires the named lock, waiting for
// it as the system's usual client does, and releases it.
type locker interface {
	roundTrip(ctx context.Context, lock string) error
	close() error
}

// row is one line of the table.
type row struct {
	system string
	locks  int
	note   string   // why it was skipped, or a remark
	res    []result // one per round
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.data == "" {
		if o.data, err = os.MkdirTemp("", "coordpeers-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.data)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if slices.Contains(o.systems, "cairn-serve") {
		if o.cairnBin, err = buildCairn(ctx, o.data); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "coordpeers: %d clients, %s per run after %s warmup, %d CPUs, %s; cairn durability %s, sync %s; data in %s\n",
		o.clients, o.duration, o.warmup, runtime.NumCPU(), runtime.Version(), o.durability, o.sync, o.data)

	var rows []*row
	for round := range o.rounds {
		if o.rounds > 1 {
			fmt.Fprintf(stdout, "round %d of %d\n", round+1, o.rounds)
		}
		for i, name := range o.systems {
			for j, n := range o.locks {
				if round == 0 {
					rows = append(rows, &row{system: name, locks: n})
				}
				if err := runOne(ctx, rows[i*len(o.locks)+j], o, stdout, log); err != nil {
					return err
				}
			}
		}
	}
	fmt.Fprintln(stdout)
	printTable(stdout, rows)
	return nil
}

// runOne measures r's system on r's lock count once, printing the result.
func runOne(ctx context.Context, r *row, o options, stdout io.Writer, log *slog.Logger) error {
	name, n := r.system, r.locks
	if ctx.Err() != nil {
		return ctx.Err()
	}
	dir, err := os.MkdirTemp(o.data, name+"-")
	if err != nil {
		return err
	}
	sys, note, err := start(ctx, name, dir, o, log)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if sys == nil {
		r.note = note
		fmt.Fprintf(stdout, "%-15s %5d locks: skipped: %s\n", name, n, note)
		return nil
	}
	var prof *os.File
	if strings.HasPrefix(name, "cairn") && o.cpuprofile != "" {
		if prof, err = os.Create(fmt.Sprintf("%s.%s.%d", o.cpuprofile, name, n)); err != nil {
			sys.close()
			return err
		}
	}
	var tf *os.File
	if strings.HasPrefix(name, "cairn") && o.trace != "" {
		if tf, err = os.Create(fmt.Sprintf("%s.%s.%d", o.trace, name, n)); err != nil {
			sys.close()
			return err
		}
	}
	res, err := measure(ctx, sys, n, o, writerOrNil(prof), writerOrNil(tf))
	if prof != nil {
		prof.Close()
	}
	if tf != nil {
		tf.Close()
	}
	if cerr := sys.close(); err == nil && cerr != nil {
		err = fmt.Errorf("stop %s: %w", name, cerr)
	}
	if err != nil {
		return fmt.Errorf("%s, %d locks: %w", name, n, err)
	}
	fmt.Fprintf(stdout, "%-15s %5d locks: %8.0f round trips/s  p50 %-8s p99 %-8s cpu %4.0fus/rt (%d errors)\n",
		name, n, res.rps(), ms(res.p50), ms(res.p99), float64(res.cpuPerOp())/1e3, res.errors)
	if res.diag != "" {
		fmt.Fprintf(stdout, "%-15s %5d locks:   %s\n", "", n, res.diag)
	}
	r.res = append(r.res, res)
	return nil
}

// start starts the named system in dir. A nil system with a note means it
// is skipped.
func start(ctx context.Context, name, dir string, o options, log *slog.Logger) (system, string, error) {
	switch name {
	case "cairn", "cairn-http", "cairn-objects":
		kind := clientKind{socket: name != "cairn-http", objects: name == "cairn-objects"}
		s, err := startCairn(dir, o.durability, o.sync, kind, log)
		return s, "", err
	case "cairn-serve":
		s, err := startServe(ctx, o.cairnBin, dir, o.durability, o.sync)
		return s, "", err
	case "redis-always", "redis-everysec":
		return startRedis(ctx, o.redis, dir, strings.TrimPrefix(name, "redis-"), o.clients)
	case "etcd":
		s, err := startEtcd(dir)
		return s, "", err
	}
	return nil, "", fmt.Errorf("unknown system %q", name)
}

// lockName is the i-th of n locks.
func lockName(n, i int) string { return "bench-" + strconv.Itoa(n) + "-" + strconv.Itoa(i) }

// measure runs o.clients clients against sys on n locks.
// If prof is not nil, the measured time is CPU-profiled into it; if tw is
// not nil, traced into it (runtime/trace).
func measure(ctx context.Context, sys system, n int, o options, prof, tw io.Writer) (result, error) {
	clients := make([]locker, o.clients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range clients {
		c, err := sys.dial(ctx, i)
		if err != nil {
			return result{}, fmt.Errorf("client %d: %w", i, err)
		}
		clients[i] = c
	}
	// Touch every lock once first, so that creating them (a cairn object
	// and its database, an etcd key prefix) is not measured.
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, len(clients))
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := c.roundTrip(ctx, lockName(n, i)); err != nil {
					errc <- fmt.Errorf("first round trip on %s: %w", lockName(n, i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return result{}, err
	default:
	}

	// The closed loop: each client starts its next round trip as soon as
	// the last one ended, on the next lock of a shared round robin.
	next.Store(0)
	var measuring, stop atomic.Bool
	lats := make([][]time.Duration, len(clients))
	errs := make([]int, len(clients))
	var firstErr error
	var errOnce sync.Once
	for ci, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && ctx.Err() == nil {
				lock := lockName(n, int(next.Add(1)-1)%n)
				t0 := time.Now()
				err := c.roundTrip(ctx, lock)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs[ci]++
					errOnce.Do(func() { firstErr = err })
					continue
				}
				lats[ci] = append(lats[ci], d)
			}
		}()
	}
	sleep(ctx, o.warmup)
	if prof != nil {
		pprof.StartCPUProfile(prof)
	}
	if tw != nil {
		if err := trace.Start(tw); err != nil {
			return result{}, err
		}
	}
	var diagEnd func() string
	if d, ok := sys.(diagnoser); ok {
		diagEnd = d.diag()
	}
	cpu0 := cpuTime()
	measuring.Store(true)
	t0 := time.Now()
	sleep(ctx, o.duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0
	var diag string
	if diagEnd != nil {
		diag = diagEnd()
	}
	if prof != nil {
		pprof.StopCPUProfile()
	}
	if tw != nil {
		trace.Stop()
	}
	stop.Store(true)
	wg.Wait()
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	var all []time.Duration
	res := result{elapsed: elapsed, cpu: cpu, diag: diag}
	for i := range clients {
		all = append(all, lats[i]...)
		res.errors += errs[i]
	}
	slices.Sort(all)
	res.n = len(all)
	if len(all) > 0 {
		res.p50 = all[len(all)*50/100]
		res.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	if res.errors > 0 && res.n == 0 {
		return res, fmt.Errorf("every round trip failed: %w", firstErr)
	}
	if res.errors > 0 {
		fmt.Fprintf(os.Stderr, "coordpeers: %d round trips failed; the first: %v\n", res.errors, firstErr)
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// result is one measurement.
type result struct {
	n        int // successful round trips
	errors   int
	elapsed  time.Duration
	p50, p99 time.Duration
	cpu      time.Duration // CPU time of this process while measured
	diag     string        // what the system says about the measured time
}

// A diagnoser can say what happened inside it while measured: diag is
// called at the start and returns what to call at the end.
type diagnoser interface {
	diag() func() string
}

// cpuPerOp is the CPU time of this process per successful round trip.
func (r result) cpuPerOp() time.Duration {
	if r.n == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.n)
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// printTable prints the rows as a Markdown table, with each system's
// throughput as a ratio to cairn's on the same lock count in the same
// round. Over several rounds each figure is the median (the latencies are
// those of the median run), with the range after it.
func printTable(w io.Writer, rows []*row) {
	cairn := map[int][]result{}
	for _, r := range rows {
		if r.system == "cairn" && r.note == "" {
			cairn[r.locks] = r.res
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| system\t locks\t round trips/s\t p50\t p99\t throughput vs cairn\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t")
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(tw, "| %s\t %d\t skipped: %s\t\t\t\t\n", r.system, r.locks, r.note)
			continue
		}
		var rps, ratios []float64
		for i, res := range r.res {
			rps = append(rps, res.rps())
			if c := cairn[r.locks]; i < len(c) && c[i].rps() > 0 {
				ratios = append(ratios, res.rps()/c[i].rps())
			}
		}
		mid := r.res[0]
		for _, res := range r.res {
			if res.rps() == median(rps) {
				mid = res
			}
		}
		ratio := "-"
		if len(ratios) > 0 {
			ratio = fmt.Sprintf("%.2fx", median(ratios)) + spread(ratios, "%.2f")
		}
		fmt.Fprintf(tw, "| %s\t %d\t %.0f%s\t %s\t %s\t %s\t\n", r.system, r.locks, median(rps), spread(rps, "%.0f"), ms(mid.p50), ms(mid.p99), ratio)
	}
	tw.Flush()
}

// median returns the middle value of xs (the lower middle of an even
// count, so that it is one of the values measured).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// spread returns " (min-max)" of xs in format f, or "" for one value.
func spread(xs []float64, f string) string {
	if len(xs) < 2 {
		return ""
	}
	return fmt.Sprintf(" ("+f+"-"+f+")", slices.Min(xs), slices.Max(xs))
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
