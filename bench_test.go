package cairn_test

// Benchmarks of the object runtime on the SQLite engine: throughput of turns
// on one object, activation latency, object creation, memory of resident
// objects and alarm delivery. Run them with
//
//	go test -run XXX -bench . -benchtime=2s .
//
// Each writes its figures with b.ReportMetric (turns/s, objects/s,
// alarms/s, latency percentiles, bytes/object) next to ns/op.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// benchCallers is how many goroutines call at once in the concurrent
// benchmarks.
const benchCallers = 64

var benchLevels = []cairn.Durability{cairn.Process, cairn.Disk}

var benchValue1KiB = bytes.Repeat([]byte("x"), 1024)

// benchObj is the class of the benchmarks. It dispatches RPC itself
// (RPCHandler), the cheapest call path: no reflection, no JSON beyond a
// short argument.
type benchObj struct {
	st   *cairn.State
	sink *alarmSink
}

func (o *benchObj) RPC(ctx context.Context, method string, arg json.RawMessage) (any, error) {
	switch method {
	case "put": // 1 KiB under key "k"+arg
		return nil, o.st.Put("k"+string(arg), benchValue1KiB)
	case "small":
		return nil, o.st.Put("k", []byte("hello"))
	case "get":
		_, _, err := o.st.Get("k0")
		return nil, err
	case "arm": // alarm at arg, Unix nanoseconds
		n, err := strconv.ParseInt(string(arg), 10, 64)
		if err != nil {
			return nil, cairn.Errorf(cairn.Invalid, "bad time %q", arg)
		}
		return nil, o.st.SetAlarm(time.Unix(0, n))
	}
	return nil, cairn.Errorf(cairn.NotFound, "no method %q", method)
}

func (o *benchObj) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
	if o.sink != nil {
		o.sink.fire()
	}
	return nil
}

// benchTrigger has no Alarm method: setting its alarm in the past only wakes
// the runtime's alarm loop (a new earliest alarm pokes it).
type benchTrigger struct{ st *cairn.State }

func (o *benchTrigger) RPC(ctx context.Context, method string, arg json.RawMessage) (any, error) {
	return nil, o.st.SetAlarm(o.st.Now().Add(-time.Second))
}

// benchReflect serves the same put through a reflected method with the
// value in a JSON argument: what a typical class costs.
type benchReflect struct{ st *cairn.State }

type benchPutArg struct {
	Key   string
	Value []byte
}

func (o *benchReflect) Put(ctx context.Context, a benchPutArg) error { return o.st.Put(a.Key, a.Value) }

// alarmSink counts alarm deliveries and signals when a target is reached.
type alarmSink struct {
	fired  atomic.Int64
	mu     sync.Mutex
	target int64
	done   chan struct{}
}

func (s *alarmSink) fire() {
	n := s.fired.Add(1)
	s.mu.Lock()
	if s.done != nil && n >= s.target {
		close(s.done)
		s.done = nil
	}
	s.mu.Unlock()
}

// expect arms the sink for n more deliveries and returns the channel closed
// when they have happened.
func (s *alarmSink) expect(n int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.target = s.fired.Load() + int64(n)
	s.done = ch
	return ch
}

// benchClock is an injected clock that moves only when told.
type benchClock struct{ ns atomic.Int64 }

func newBenchClock() *benchClock {
	c := &benchClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *benchClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *benchClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func benchClasses(sink *alarmSink) map[string]cairn.Class {
	return map[string]cairn.Class{
		"bench":   {New: func(st *cairn.State) (any, error) { return &benchObj{st: st, sink: sink}, nil }},
		"reflect": {New: func(st *cairn.State) (any, error) { return &benchReflect{st: st}, nil }},
		"trigger": {New: func(st *cairn.State) (any, error) { return &benchTrigger{st: st}, nil }},
	}
}

func benchNamespace(b *testing.B, rt *cairn.Runtime, name string) *cairn.Namespace {
	b.Helper()
	ns, err := rt.Namespace(name)
	if err != nil {
		b.Fatal(err)
	}
	return ns
}

func benchStubs(b *testing.B, ns *cairn.Namespace, prefix string, n int) []*cairn.Stub {
	b.Helper()
	stubs := make([]*cairn.Stub, n)
	for i := range stubs {
		s, err := ns.GetByName(prefix + strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		stubs[i] = s
	}
	return stubs
}

// parallel runs fn(0..n-1) from callers goroutines and returns each call's
// latency and the first error.
func benchParallel(callers, n int, fn func(i int) error) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var errOnce sync.Once
	var first error
	var wg sync.WaitGroup
	for g := 0; g < min(callers, n); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				err := fn(i)
				lat[i] = time.Since(t0)
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("call %d: %w", i, err) })
				}
			}
		}()
	}
	wg.Wait()
	return lat, first
}

// percentile returns the q-quantile (0 < q <= 1) of d, sorting d in place.
func benchPercentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(q*float64(len(d))+0.5) - 1
	return d[max(0, min(i, len(d)-1))]
}

func benchReportLatency(b *testing.B, lat []time.Duration) {
	b.ReportMetric(float64(benchPercentile(lat, 0.50))/1e3, "p50-us")
	b.ReportMetric(float64(benchPercentile(lat, 0.99))/1e3, "p99-us")
}

// benchReportCommits reports commits per turn and turns per commit between two
// readings of the runtime's counters.
func benchReportCommits(b *testing.B, before, after cairn.Stats) {
	turns := after.Turns - before.Turns
	commits := after.Commits - before.Commits
	if turns > 0 {
		b.ReportMetric(float64(commits)/float64(turns), "commits/turn")
	}
	if commits > 0 {
		b.ReportMetric(float64(after.CommitTurns-before.CommitTurns)/float64(commits), "turns/commit")
		b.ReportMetric(float64(after.CommitNanos-before.CommitNanos)/float64(commits)/1e3, "durable-us/commit")
	}
}

// benchCPU returns the CPU time (user and system) the process has used. On
// a shared machine wall-clock rates vary with the neighbours' load; CPU per
// op much less so.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchReportCPU(b *testing.B, cpu time.Duration, ops int) {
	if ops > 0 {
		b.ReportMetric(float64(cpu)/float64(ops)/1e3, "cpu-us/op")
	}
}

// BenchmarkPut1KiB: one object, 64 callers, each turn one 1 KiB put (the
// callers overwrite 64 keys). Targets: 50,000 turns/s at process, 20,000 at
// disk.
func BenchmarkPut1KiB(b *testing.B) {
	for _, level := range benchLevels {
		b.Run(level.String(), func(b *testing.B) {
			rt := newRuntime(b, "", level, benchClasses(nil), nil)
			stub := benchStubs(b, benchNamespace(b, rt, "bench"), "hot", 1)[0]
			args := make([]json.RawMessage, benchCallers)
			for i := range args {
				args[i] = json.RawMessage(strconv.Itoa(i))
			}
			ctx := context.Background()
			// Create the object and its keys outside the timing.
			if _, err := benchParallel(benchCallers, benchCallers, func(i int) error {
				_, err := stub.CallJSON(ctx, "put", args[i])
				return err
			}); err != nil {
				b.Fatal(err)
			}
			before := rt.Stats()
			b.SetBytes(1024)
			b.ResetTimer()
			start, cpu0 := time.Now(), benchCPU()
			lat, err := benchParallel(benchCallers, b.N, func(i int) error {
				_, err := stub.CallJSON(ctx, "put", args[i%benchCallers])
				return err
			})
			elapsed, cpu := time.Since(start), benchCPU()-cpu0
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "turns/s")
			benchReportCommits(b, before, rt.Stats())
			benchReportLatency(b, lat)
			benchReportCPU(b, cpu, b.N)
		})
	}
}

// BenchmarkPut1KiBReflect is BenchmarkPut1KiB through Stub.Call and a
// reflected method taking the key and value as JSON: the path a typical
// class takes, for comparison with the cheapest path.
func BenchmarkPut1KiBReflect(b *testing.B) {
	for _, level := range benchLevels {
		b.Run(level.String(), func(b *testing.B) {
			rt := newRuntime(b, "", level, benchClasses(nil), nil)
			stub := benchStubs(b, benchNamespace(b, rt, "reflect"), "hot", 1)[0]
			ctx := context.Background()
			call := func(i int) error {
				return stub.Call(ctx, "Put", benchPutArg{Key: "k" + strconv.Itoa(i%benchCallers), Value: benchValue1KiB}, nil)
			}
			if _, err := benchParallel(benchCallers, benchCallers, call); err != nil {
				b.Fatal(err)
			}
			before := rt.Stats()
			b.SetBytes(1024)
			b.ResetTimer()
			start, cpu0 := time.Now(), benchCPU()
			lat, err := benchParallel(benchCallers, b.N, call)
			elapsed, cpu := time.Since(start), benchCPU()-cpu0
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "turns/s")
			benchReportCommits(b, before, rt.Stats())
			benchReportLatency(b, lat)
			benchReportCPU(b, cpu, b.N)
		})
	}
}

// BenchmarkActivate times the activation of an existing object that is not
// in memory: one caller, a read method on an evicted object. Targets: p50 <
// 1 ms, p99 < 5 ms.
//
// idle: the objects were evicted beforehand (EvictIdle after moving the
// clock); the timing is open + read. lru: MaxActive is full, so each
// activation first evicts the least recently used object in the caller's
// path (close, and at disk a checkpoint with fsync).
//
// The files stay in the OS page cache: this is a warm-cache activation.
func BenchmarkActivate(b *testing.B) {
	const poolMax = 500
	for _, level := range benchLevels {
		for _, mode := range []string{"idle", "lru"} {
			b.Run(level.String()+"/"+mode, func(b *testing.B) {
				clk := newBenchClock()
				pool := min(b.N, poolMax)
				rt := newRuntime(b, "", level, benchClasses(nil), func(rt *cairn.Runtime) {
					rt.Now = clk.Now
					if mode == "lru" {
						// Room for the pool plus the callers' headroom: once
						// the pool has been read once, every activation
						// evicts one object.
						rt.MaxActive = max(1, pool/2)
					}
				})
				stubs := benchStubs(b, benchNamespace(b, rt, "bench"), "obj-", pool)
				ctx := context.Background()
				if _, err := benchParallel(benchCallers, pool, func(i int) error {
					_, err := stubs[i].CallJSON(ctx, "put", json.RawMessage("0"))
					return err
				}); err != nil {
					b.Fatal(err)
				}
				evict := func() {
					clk.Add(2 * rt.IdleTimeout)
					rt.EvictIdle()
					if n := rt.Active(); n != 0 {
						b.Fatalf("%d objects still active after EvictIdle", n)
					}
				}
				evict()
				before := rt.Stats()
				lat := make([]time.Duration, b.N)
				var cpu time.Duration
				b.ResetTimer()
				cpu0 := benchCPU()
				for i := 0; i < b.N; i++ {
					j := i % pool
					if j == 0 && i > 0 && mode == "idle" {
						b.StopTimer()
						cpu += benchCPU() - cpu0
						evict()
						cpu0 = benchCPU()
						b.StartTimer()
					}
					t0 := time.Now()
					if _, err := stubs[j].CallJSON(ctx, "get", nil); err != nil {
						b.Fatal(err)
					}
					lat[i] = time.Since(t0)
				}
				b.StopTimer()
				cpu += benchCPU() - cpu0
				after := rt.Stats()
				if got := after.Activations - before.Activations; got != int64(b.N) {
					b.Fatalf("%d activations, want %d", got, b.N)
				}
				benchReportLatency(b, lat)
				benchReportCPU(b, cpu, b.N)
				if mode == "lru" {
					b.ReportMetric(float64(after.Evictions-before.Evictions)/float64(b.N), "evictions/op")
				}
			})
		}
	}
}

// BenchmarkCreate creates new objects from 64 callers: each call writes one
// 1 KiB key to an object never seen before. Target: 2,000 objects/s.
// MaxActive is 4,096 so that a long run stays within the descriptor limit;
// beyond it, creation includes LRU eviction of earlier objects.
func BenchmarkCreate(b *testing.B) {
	for _, level := range benchLevels {
		b.Run(level.String(), func(b *testing.B) {
			rt := newRuntime(b, "", level, benchClasses(nil), func(rt *cairn.Runtime) { rt.MaxActive = 4096 })
			ns := benchNamespace(b, rt, "bench")
			stubs := benchStubs(b, ns, "new-", b.N)
			ctx := context.Background()
			before := rt.Stats()
			b.ResetTimer()
			start, cpu0 := time.Now(), benchCPU()
			lat, err := benchParallel(benchCallers, b.N, func(i int) error {
				_, err := stubs[i].CallJSON(ctx, "put", json.RawMessage("0"))
				return err
			})
			elapsed, cpu := time.Since(start), benchCPU()-cpu0
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			after := rt.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "objects/s")
			b.ReportMetric(float64(after.Evictions-before.Evictions)/float64(b.N), "evictions/op")
			benchReportLatency(b, lat)
			benchReportCPU(b, cpu, b.N)
		})
	}
}

// BenchmarkIdleObjects activates 10,000 objects (each with one small write)
// and keeps them resident, then reports the memory and file descriptors
// they hold: Go heap in use, resident set size (which also counts SQLite's
// memory, allocated outside the Go heap), descriptors and memory mappings,
// per object. One op is one round; figures are from the first round.
//
// Each resident object holds descriptors, so if RLIMIT_NOFILE cannot be
// raised to fit 10,000 of them, the benchmark measures the descriptors of
// the first 64 and activates only as many objects as fit, and says so.
func BenchmarkIdleObjects(b *testing.B) {
	const want, probe, spare = 10000, 64, 256
	for _, level := range benchLevels {
		b.Run(level.String(), func(b *testing.B) {
			limit := benchRaiseNoFile(want*4 + 1000)
			n := want
			var heapPer, rssPer, fdPer, mapsPer float64
			for round := 0; round < b.N; round++ {
				b.StopTimer()
				clk := newBenchClock()
				rt := newRuntime(b, "", level, benchClasses(nil), func(rt *cairn.Runtime) {
					rt.Now = clk.Now
					rt.MaxActive = want + benchCallers
				})
				stubs := benchStubs(b, benchNamespace(b, rt, "bench"), "idle-", want)
				ctx := context.Background()
				activate := func(from, to int) {
					b.Helper()
					if _, err := benchParallel(benchCallers, to-from, func(i int) error {
						_, err := stubs[from+i].CallJSON(ctx, "small", nil)
						return err
					}); err != nil {
						b.Fatal(err)
					}
				}
				heap0, rss0, fd0, maps0 := benchMemFigures(b)
				b.StartTimer()
				activate(0, probe)
				if round == 0 {
					_, _, fdp, _ := benchMemFigures(b)
					per := max(1, int(fdp-fd0+probe-1)/probe)
					if fit := probe + (limit-int(fdp)-spare)/per; fit < want {
						n = fit
						b.Logf("RLIMIT_NOFILE is %d and cannot be raised; at %d descriptors per object, %d objects instead of %d", limit, per, n, want)
					}
				}
				activate(probe, n)
				b.StopTimer()
				if got := rt.Active(); got != n {
					b.Fatalf("%d objects active, want %d", got, n)
				}
				heap1, rss1, fd1, maps1 := benchMemFigures(b)
				if round == 0 {
					heapPer = float64(heap1-heap0) / float64(n)
					rssPer = float64(rss1-rss0) / float64(n)
					fdPer = float64(fd1-fd0) / float64(n)
					mapsPer = float64(maps1-maps0) / float64(n)
				}
				runtime.KeepAlive(stubs)
				closeBenchRuntime(b, rt)
				if round == 0 {
					_, rss2, fd2, maps2 := benchMemFigures(b)
					b.Logf("%d objects: heap %+d B, RSS %+d B, %+d fds, %+d mappings (%d in all); after Close: RSS %+d B, %+d fds, %+d mappings",
						n, heap1-heap0, rss1-rss0, fd1-fd0, maps1-maps0, maps1, rss2-rss0, fd2-fd0, maps2-maps0)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n), "objects")
			b.ReportMetric(heapPer, "heap-B/object")
			b.ReportMetric(rssPer, "rss-B/object")
			b.ReportMetric(fdPer, "fds/object")
			b.ReportMetric(mapsPer, "mmaps/object")
		})
	}
}

// closeBenchRuntime closes rt now rather than at cleanup, to free its
// descriptors before the next round.
func closeBenchRuntime(b *testing.B, rt *cairn.Runtime) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// benchRaiseNoFile tries to raise the descriptor limit to at least n and returns
// the soft limit in force.
func benchRaiseNoFile(n int) int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < uint64(n) {
		want := l
		want.Cur = uint64(n)
		if want.Max < want.Cur {
			want.Max = want.Cur
		}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil && l.Max > l.Cur {
			want = syscall.Rlimit{Cur: l.Max, Max: l.Max}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return int(l.Cur)
}

// benchMemFigures returns the Go heap in use, the resident set size and the
// number of open descriptors, after a collection that returns free memory
// to the OS.
func benchMemFigures(b *testing.B) (heap, rss, fds, maps int64) {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f, err := os.Open("/proc/self/status")
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
		f.Close()
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = int64(len(ents))
	}
	if m, err := os.ReadFile("/proc/self/maps"); err == nil {
		maps = int64(bytes.Count(m, []byte("\n")))
	}
	return int64(ms.HeapInuse), rss, fds, maps
}

// BenchmarkAlarms measures alarm delivery: objects each hold an alarm that
// the clock then makes due; one op is one delivery, counted in the class's
// Alarm handler. Target: 10,000 alarms/s.
//
// warm: the objects are in memory. cold: they were evicted, so each
// delivery activates one. The alarms are armed (and, cold, the objects
// evicted) outside the timing, in rounds of up to 2,000 objects; the timing
// starts when the clock moves and a trigger object wakes the alarm loop.
func BenchmarkAlarms(b *testing.B) {
	const poolMax = 2000
	for _, mode := range []string{"warm", "cold"} {
		for _, level := range benchLevels {
			b.Run(mode+"/"+level.String(), func(b *testing.B) {
				clk := newBenchClock()
				sink := &alarmSink{}
				rt := newRuntime(b, "", level, benchClasses(sink), func(rt *cairn.Runtime) {
					rt.Now = clk.Now
					rt.IdleTimeout = time.Hour
					if mode == "warm" {
						rt.IdleTimeout = 100000 * time.Hour // the clock jumps; nothing is evicted
					}
				})
				pool := min(b.N, poolMax)
				stubs := benchStubs(b, benchNamespace(b, rt, "bench"), "alarm-", pool)
				trigger := benchStubs(b, benchNamespace(b, rt, "trigger"), "trigger", 1)[0]
				ctx := context.Background()
				before := rt.Stats()
				b.ResetTimer()
				var elapsed, cpu time.Duration
				for done := 0; done < b.N; {
					b.StopTimer()
					n := min(pool, b.N-done)
					base := clk.Now()
					at := json.RawMessage(strconv.FormatInt(base.Add(10*time.Hour).UnixNano(), 10))
					if _, err := benchParallel(benchCallers, n, func(i int) error {
						_, err := stubs[i].CallJSON(ctx, "arm", at)
						return err
					}); err != nil {
						b.Fatal(err)
					}
					if mode == "cold" {
						clk.Add(2 * time.Hour)
						rt.EvictIdle()
						if a := rt.Active(); a != 0 {
							b.Fatalf("%d objects still active after EvictIdle", a)
						}
					}
					fired := sink.expect(n)
					b.StartTimer()
					start, cpu0 := time.Now(), benchCPU()
					clk.ns.Store(base.Add(11 * time.Hour).UnixNano())
					if _, err := trigger.CallJSON(ctx, "arm", nil); err != nil {
						b.Fatal(err)
					}
					select {
					case <-fired:
					case <-time.After(time.Minute):
						b.Fatalf("%d of %d alarms fired in a minute", sink.fired.Load()-int64(done), n)
					}
					elapsed += time.Since(start)
					cpu += benchCPU() - cpu0
					done += n
				}
				b.StopTimer()
				after := rt.Stats()
				if f := after.AlarmsFailed - before.AlarmsFailed; f != 0 {
					b.Fatalf("%d alarms failed", f)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "alarms/s")
				benchReportCommits(b, before, after)
				benchReportCPU(b, cpu, b.N)
			})
		}
	}
}
