package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/builtin"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// BenchmarkAdminAtScale measures, over real HTTP, the admin routes the
// console calls, on a namespace of 100,000 objects (docs/console.md, "At
// scale"): each route's p50 and p99 latency, CPU per request and response
// size, and (logged, so with -v) the process's RSS after creating the
// objects and after they are evicted. It runs only when -bench selects it:
//
//	CAIRN_SCALE_DIR=/tmp/cairn-scale go test ./http -run '^$' \
//	    -bench AdminAtScale -benchtime 200x -v -timeout 60m
//
// Creating the objects takes minutes; with CAIRN_SCALE_DIR the data
// directory is kept and a second run creates only the ones missing.
// CAIRN_SCALE_OBJECTS sets how many (default 100,000). The server runs in
// this process, so the RSS includes the client's few MB.
func BenchmarkAdminAtScale(b *testing.B) {
	n := 100000
	if v := os.Getenv("CAIRN_SCALE_OBJECTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("CAIRN_SCALE_OBJECTS=%q: want a number of at least 1000", v)
		}
	}
	dir := os.Getenv("CAIRN_SCALE_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	var skew atomic.Int64 // moves the runtime's clock to evict idle objects
	ts := newScaleServer(b, dir, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	name := func(i int) string { return fmt.Sprintf("user-%06d", i) }

	b.Logf("rss after open: %s", rss(b))
	if created := createObjects(b, ts, n, name); created > 0 {
		b.Logf("rss after creating %d objects: %s (%d in memory)", created, rss(b), ts.rt.Stats().Active)
	}
	skew.Add(int64(2 * ts.rt.IdleTimeout))
	deadline := time.Now().Add(5 * time.Minute)
	for ts.rt.EvictIdle(); ts.rt.Stats().Active > 0; ts.rt.EvictIdle() {
		if time.Now().After(deadline) {
			b.Fatalf("%d objects still in memory after 5 minutes", ts.rt.Stats().Active)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Logf("rss after eviction: %s", rss(b))
	runtime.GC()
	debug.FreeOSMemory()
	b.Logf("rss after eviction, GC and FreeOSMemory: %s", rss(b))

	const ns = "kv"
	list := ts.url + "/v1/admin/namespaces/" + ns + "/objects"
	type page struct {
		Objects []cairnhttp.ObjectJSON
		Next    string
		Scanned *int
	}
	// The cursor halfway through, reached by following cursors.
	mid := ""
	for seen := 0; seen < n/2; seen += 1000 {
		var p page
		scaleGet(b, list+"?limit=1000&after="+mid, &p)
		mid = p.Next
	}

	type route struct {
		name  string
		url   func(i int) string
		check func(b *testing.B, p page) // looks at a JSON answer
	}
	next := "" // the cursor objects-next follows
	// A search reads the name index: its matches, and one more entry to
	// know whether any follow.
	searched := func(want int) func(b *testing.B, p page) {
		return func(b *testing.B, p page) {
			if len(p.Objects) != want || p.Next != "" || p.Scanned == nil || *p.Scanned != want {
				b.Fatalf("search: got %d objects, next %q, scanned %v; want %d, no next", len(p.Objects), p.Next, p.Scanned, want)
			}
		}
	}
	searchNext := "" // the cursor search-next follows
	routes := []route{
		{name: "namespaces", url: func(int) string { return ts.url + "/v1/admin/namespaces" }},
		{name: "objects-first", url: func(int) string { return list + "?limit=50" }, check: func(b *testing.B, p page) {
			if len(p.Objects) != 50 || p.Next == "" {
				b.Fatalf("first page: got %d objects, next %q", len(p.Objects), p.Next)
			}
		}},
		{name: "objects-next", url: func(int) string { return list + "?limit=50&after=" + next }, check: func(b *testing.B, p page) {
			next = p.Next // the next request follows the cursor (back to the start at the end)
		}},
		{name: "objects-deep", url: func(int) string { return list + "?limit=50&after=" + mid }, check: func(b *testing.B, p page) {
			if len(p.Objects) != 50 {
				b.Fatalf("deep page: got %d objects", len(p.Objects))
			}
		}},
		// 10 names of 100,000 (user-00012x).
		{name: "search-few", url: func(int) string { return list + "?limit=50&prefix=user-00012" }, check: searched(10)},
		{name: "search-none", url: func(int) string { return list + "?limit=50&prefix=nobody/" }, check: searched(0)},
		// Every name matches: pages of 50 in name order, each request
		// following the previous one's cursor.
		{name: "search-next", url: func(int) string { return list + "?limit=50&prefix=user-&after=" + searchNext }, check: func(b *testing.B, p page) {
			if len(p.Objects) != 50 && p.Next != "" {
				b.Fatalf("search page: got %d objects, next %q", len(p.Objects), p.Next)
			}
			searchNext = p.Next // back to the start at the end
		}},
		{name: "info", url: func(i int) string { return ts.url + "/v1/admin/objects/" + ns + "/" + name(i*7919%n) }},
		{name: "usage", url: func(int) string { return ts.url + "/v1/admin/usage" }},
		{name: "stats", url: func(int) string { return ts.url + "/v1/admin/stats" }},
		{name: "metrics", url: func(int) string { return ts.url + "/metrics" }},
		// An object's page: its first KV page, values cut short, on an
		// object not in memory (each request activates another one).
		{name: "kv-cold", url: func(i int) string {
			return ts.url + "/v1/admin/objects/" + ns + "/" + name((i*7919+1)%n) + "/kv?limit=50&value_bytes=200"
		}},
	}
	for _, r := range routes {
		b.Run(r.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			size := 0
			cpu := cpuTime()
			for i := range b.N {
				start := time.Now()
				body := scaleGet(b, r.url(i), nil)
				lat = append(lat, time.Since(start))
				size = len(body)
				if r.check != nil {
					var p page
					if err := json.Unmarshal(body, &p); err != nil {
						b.Fatal(err)
					}
					r.check(b, p)
				}
			}
			reportLatency(b, lat, cpuTime()-cpu, size)
		})
	}

	// The console's search for a name no object has: it follows the
	// cursor to the end, which the first answer is.
	b.Run("search-none-walk", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		requests := 0
		cpu := cpuTime()
		for range b.N {
			start := time.Now()
			after := ""
			for {
				var p page
				scaleGet(b, list+"?limit=50&prefix=nobody/&after="+after, &p)
				requests++
				if after = p.Next; after == "" {
					break
				}
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat, cpuTime()-cpu, 0)
		b.ReportMetric(float64(requests)/float64(b.N), "requests/op")
	})
}

// newScaleServer is newServer on the data directory dir, with the clock now
// and `cairn serve`'s defaults (MaxActive fitted to the open-file limit).
func newScaleServer(tb testing.TB, dir string, now func() time.Time) *testServer {
	tb.Helper()
	eng, err := sqlite.Open(dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	rt.Now = now
	rt.MaxActive = min(rt.MaxActive, sqlite.MaxObjects())
	for name, class := range builtin.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			tb.Fatal(err)
		}
	}
	metrics := cairnhttp.NewMetrics(rt)
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			tb.Errorf("close runtime: %v", err)
		}
	})
	srv := cairnhttp.NewServer(rt)
	srv.Metrics = metrics
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	return &testServer{rt: rt, srv: srv, url: hs.URL}
}

// scaleClient keeps enough idle connections for createObjects' workers.
var scaleClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// scaleGet GETs u, fails unless it is a 200, decodes the JSON body into v
// when v is not nil, and returns the body.
func scaleGet(tb testing.TB, u string, v any) []byte {
	tb.Helper()
	resp, err := scaleClient.Get(u)
	if err != nil {
		tb.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("GET %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: status %d: %s", u, resp.StatusCode, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			tb.Fatalf("GET %s: %v", u, err)
		}
	}
	return body
}

// createObjects makes sure objects name(0) to name(n-1) of namespace kv
// exist, creating (with a KV put) those the catalog does not hold yet. It
// returns how many it created.
func createObjects(tb testing.TB, ts *testServer, n int, name func(int) string) int {
	tb.Helper()
	have := map[string]bool{}
	for after := ""; ; {
		var p struct {
			Objects []cairnhttp.ObjectJSON
			Next    string
		}
		scaleGet(tb, ts.url+"/v1/admin/namespaces/kv/objects?limit=1000&after="+after, &p)
		for _, o := range p.Objects {
			have[o.Name] = true
		}
		if after = p.Next; after == "" {
			break
		}
	}
	var todo []int
	for i := range n {
		if !have[name(i)] {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return 0
	}
	tb.Logf("creating %d objects (%d exist)", len(todo), len(have))
	work := make(chan int)
	var done atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range work {
				req, _ := http.NewRequest("PUT", ts.url+"/v1/objects/kv/"+url.PathEscape(name(i))+"/k", bytes.NewReader([]byte("v")))
				resp, err := scaleClient.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("create %s: %w", name(i), err))
				}
				done.Add(1)
			}
		})
	}
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for _, i := range todo {
		select {
		case <-tick.C:
			d := done.Load()
			tb.Logf("created %d of %d (%.0f/s)", d, len(todo), float64(d)/time.Since(start).Seconds())
		default:
		}
		if failed.Load() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("created %d objects in %s (%.0f/s)", len(todo), time.Since(start).Round(time.Second), float64(len(todo))/time.Since(start).Seconds())
	return len(todo)
}

// reportLatency reports lat's p50, p99 and maximum in milliseconds, the
// process's CPU time per request (server and client: unlike the latency,
// it does not grow when other processes take the machine), and size, a
// response's bytes, when not 0.
func reportLatency(b *testing.B, lat []time.Duration, cpu time.Duration, size int) {
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(len(lat)), "cpu-ms/op")
	if size > 0 {
		b.ReportMetric(float64(size), "resp-B")
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is this process's resident set size, from /proc (Linux), with the Go
// heap in use beside it.
func rss(tb testing.TB) string {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap := fmt.Sprintf("Go heap in use %d MiB", ms.HeapInuse>>20)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown (" + heap + ")"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return fmt.Sprintf("%d MiB (%s)", kb>>10, heap)
		}
	}
	return "unknown (" + heap + ")"
}
