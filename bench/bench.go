// Package bench is the load generator of `cairn bench`: a closed loop of N
// keep-alive HTTP/1.1 connections, each sending its next request as soon as
// it has read the previous response, for a fixed time, with every request's
// latency recorded in a histogram.
//
// It speaks HTTP/1.1 itself, with requests encoded once before the run and
// responses parsed in place, rather than through net/http's client: on a
// small machine the load generator shares the CPUs with the server it
// measures, and net/http's client (two goroutines and several allocations
// per request) would cost more CPU than a small handler does. The subset it
// speaks (plain http, Content-Length or chunked bodies, keep-alive) is what
// the servers it measures answer with.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one request of a load. Its path may carry a query.
type Request struct {
	Method      string
	Path        string
	ContentType string
	Body        []byte
}

// Load is what Run sends, to one server.
type Load struct {
	// URL is the server's base URL, http only; request paths are appended
	// to its path.
	URL string
	// Header holds extra request headers, e.g. Authorization.
	Header map[string]string
	// Requests are sent round robin over all connections.
	Requests []Request
	// Connections is how many requests are in flight at once. Default 64.
	Connections int
	// Duration is how long requests are measured. Default 8 s.
	Duration time.Duration
	// Warmup is how long requests are sent, and not measured, before.
	Warmup time.Duration
	// MaxRequests, if positive, ends the run once that many measured
	// requests were sent, even before Duration has passed: for workloads
	// whose cost grows with the requests served, so that two servers are
	// compared at the same point.
	MaxRequests int64
	// Timeout bounds one request. Default 30 s.
	Timeout time.Duration
	// ServerCPU, if set, returns the CPU time used so far by a server that
	// runs in other processes (see GroupCPU), for Result.CPU.
	ServerCPU func() time.Duration
}

// Result is what Run measured.
type Result struct {
	Requests   int64         // completed and measured, errors included
	Errors     int64         // non-2xx responses and failed requests
	FirstError string        // the first error seen, if any
	Elapsed    time.Duration // from the measured start until the last response
	Latency    Histogram     // of successful requests
	CPU        CPU           // while measured
}

// CPU is how many CPUs were busy on average while a load was measured;
// -1 where unknown (not on Linux; no Load.ServerCPU).
type CPU struct {
	Machine float64 // all processes, the kernel included
	Self    float64 // this process: the load generator, and servers in it
	Server  float64 // the server's processes, from Load.ServerCPU
}

// Others is the CPU used by processes other than this one and the server:
// noise in the measurement. -1 if unknown.
func (c CPU) Others() float64 {
	if c.Machine < 0 || c.Self < 0 {
		return -1
	}
	o := c.Machine - c.Self
	if c.Server > 0 {
		o -= c.Server
	}
	if o < 0 {
		o = 0
	}
	return o
}

type cpuSample struct {
	at                    time.Time
	machine, self, server time.Duration
}

func sampleCPU(server func() time.Duration) cpuSample {
	s := cpuSample{at: time.Now(), machine: machineBusy(), self: selfCPU(), server: -1}
	if server != nil {
		s.server = server()
	}
	return s
}

func (s cpuSample) cores(end cpuSample) CPU {
	secs := end.at.Sub(s.at).Seconds()
	rate := func(a, b time.Duration) float64 {
		if a < 0 || b < 0 || secs <= 0 {
			return -1
		}
		return (b - a).Seconds() / secs
	}
	return CPU{Machine: rate(s.machine, end.machine), Self: rate(s.self, end.self), Server: rate(s.server, end.server)}
}

// RPS is the throughput of successful requests per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

// Run sends l's requests until its warmup and duration have passed or ctx
// ends, and returns what it measured. It returns an error only if the
// server cannot be reached at all; failed requests are counted in Result.
func Run(ctx context.Context, l Load) (Result, error) {
	if l.Connections <= 0 {
		l.Connections = 64
	}
	if l.Duration <= 0 {
		l.Duration = 8 * time.Second
	}
	if l.Timeout <= 0 {
		l.Timeout = 30 * time.Second
	}
	if len(l.Requests) == 0 {
		return Result{}, errors.New("bench: no requests")
	}
	addr, reqs, err := encode(l)
	if err != nil {
		return Result{}, err
	}

	// Connect everything before the clock starts.
	conns := make([]*conn, l.Connections)
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	for i := range conns {
		c, err := dial(ctx, dialer, addr)
		if err != nil {
			for _, c := range conns[:i] {
				c.close()
			}
			return Result{}, fmt.Errorf("bench: connect to %s: %w", addr, err)
		}
		conns[i] = c
	}

	start := time.Now()
	measureFrom := start.Add(l.Warmup)
	until := measureFrom.Add(l.Duration)
	var stop atomic.Bool
	var next atomic.Uint64
	var budget *atomic.Int64
	if l.MaxRequests > 0 {
		budget = new(atomic.Int64)
		budget.Store(l.MaxRequests)
	}
	workers := make([]*worker, l.Connections)
	for i := range workers {
		workers[i] = &worker{
			c: conns[i], addr: addr, dialer: dialer, reqs: reqs, next: &next, budget: budget,
			stop: &stop, measureFrom: measureFrom, until: until, timeout: l.Timeout,
		}
	}
	// Cancellation closes the connections, so that no worker waits out a
	// slow response.
	watchDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stop.Store(true)
			for _, w := range workers {
				w.closeConn()
			}
		case <-watchDone:
		}
	}()
	// CPU is sampled when measurement starts, after the warmup.
	first := make(chan cpuSample, 1)
	if l.Warmup <= 0 {
		first <- sampleCPU(l.ServerCPU)
	} else {
		t := time.AfterFunc(time.Until(measureFrom), func() { first <- sampleCPU(l.ServerCPU) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()
	close(watchDone)
	last := sampleCPU(l.ServerCPU)

	var res Result
	select {
	case s := <-first:
		res.CPU = s.cores(last)
	default: // cancelled during the warmup
		res.CPU = CPU{-1, -1, -1}
	}
	var lastDone time.Time
	for _, w := range workers {
		w.closeConn()
		res.Requests += w.requests
		res.Errors += w.errors
		if res.FirstError == "" {
			res.FirstError = w.firstError
		}
		res.Latency.Merge(&w.hist)
		if w.lastDone.After(lastDone) {
			lastDone = w.lastDone
		}
	}
	if lastDone.After(measureFrom) {
		res.Elapsed = lastDone.Sub(measureFrom)
	}
	return res, ctx.Err()
}

// encode checks l's URL and renders each request to the bytes sent.
func encode(l Load) (addr string, reqs [][]byte, err error) {
	u, err := url.Parse(l.URL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: url %q: %w", l.URL, err)
	}
	if u.Scheme != "http" {
		return "", nil, fmt.Errorf("bench: url %q: only http:// is supported", l.URL)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	for _, r := range l.Requests {
		var b bytes.Buffer
		method := r.Method
		if method == "" {
			method = "GET"
		}
		path := r.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		fmt.Fprintf(&b, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cairn-bench\r\n", method, base, path, u.Host)
		for k, v := range l.Header {
			if strings.ContainsAny(k+v, "\r\n") {
				return "", nil, fmt.Errorf("bench: header %q: line breaks not allowed", k)
			}
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		if r.ContentType != "" {
			fmt.Fprintf(&b, "Content-Type: %s\r\n", r.ContentType)
		}
		if r.Body != nil || method == "POST" || method == "PUT" {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.Body))
		}
		b.WriteString("\r\n")
		b.Write(r.Body)
		reqs = append(reqs, b.Bytes())
	}
	return addr, reqs, nil
}

type conn struct {
	nc net.Conn
	br *bufio.Reader
}

func dial(ctx context.Context, d *net.Dialer, addr string) (*conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 32<<10)}, nil
}

func (c *conn) close() { c.nc.Close() }

// worker is one connection's closed loop.
type worker struct {
	mu sync.Mutex // guards c against closeConn from the ctx watcher
	c  *conn

	addr        string
	dialer      *net.Dialer
	reqs        [][]byte
	next        *atomic.Uint64
	budget      *atomic.Int64 // measured requests left to send; nil: no limit
	stop        *atomic.Bool
	measureFrom time.Time
	until       time.Time
	timeout     time.Duration

	requests, errors int64
	firstError       string
	lastDone         time.Time
	hist             Histogram
}

func (w *worker) closeConn() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c != nil {
		w.c.close()
		w.c = nil
	}
}

func (w *worker) conn(ctx context.Context) (*conn, error) {
	w.mu.Lock()
	c := w.c
	w.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := dial(ctx, w.dialer, w.addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop.Load() {
		c.close()
		return nil, context.Canceled
	}
	w.c = c
	return c, nil
}

func (w *worker) fail(measured bool, err string) {
	if !measured {
		return
	}
	w.requests++
	w.errors++
	w.lastDone = time.Now()
	if w.firstError == "" {
		w.firstError = err
	}
}

func (w *worker) run(ctx context.Context) {
	var deadline time.Time
	for !w.stop.Load() {
		t0 := time.Now()
		if !t0.Before(w.until) {
			return
		}
		measured := !t0.Before(w.measureFrom)
		if measured && w.budget != nil && w.budget.Add(-1) < 0 {
			return
		}
		c, err := w.conn(ctx)
		if err != nil {
			if w.stop.Load() {
				return
			}
			w.fail(measured, err.Error())
			time.Sleep(10 * time.Millisecond) // do not spin on a dead server
			continue
		}
		// One deadline per timeout period rather than per request: setting
		// it costs a timer update.
		if d := t0.Add(w.timeout); deadline.Before(t0.Add(w.timeout / 2)) {
			c.nc.SetDeadline(d)
			deadline = d
		}
		i := 0
		if len(w.reqs) > 1 {
			i = int((w.next.Add(1) - 1) % uint64(len(w.reqs)))
		}
		status, keep, body, err := roundTrip(c, w.reqs[i])
		t1 := time.Now()
		if err != nil {
			w.closeConn()
			deadline = time.Time{}
			if w.stop.Load() {
				return
			}
			w.fail(measured, err.Error())
			continue
		}
		if !keep {
			w.closeConn()
			deadline = time.Time{}
		}
		if !measured {
			continue
		}
		w.lastDone = t1
		if status < 200 || status > 299 {
			w.fail(true, fmt.Sprintf("HTTP %d: %s", status, bytes.TrimSpace(body)))
			continue
		}
		w.requests++
		w.hist.Record(t1.Sub(t0))
	}
}

// errBadResponse is returned for a response this client cannot parse.
var errBadResponse = errors.New("malformed HTTP response")

// roundTrip writes req and reads the response, discarding its body (the
// first bytes of which are returned for a non-2xx status, for the report).
// keep reports whether the connection may be reused.
func roundTrip(c *conn, req []byte) (status int, keep bool, errBody []byte, err error) {
	if _, err := c.nc.Write(req); err != nil {
		return 0, false, nil, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, nil, eofErr(err)
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, nil, errBadResponse
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, nil, errBadResponse
	}
	keep = line[7] == '1' // HTTP/1.0 closes unless told otherwise
	length, chunked := int64(-1), false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, nil, eofErr(err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, nil, errBadResponse
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				return 0, false, nil, errBadResponse
			}
			length = n
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(v, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	var keepBody *[]byte
	if status < 200 || status > 299 {
		keepBody = &errBody
	}
	switch {
	case status == 204 || status == 304 || status < 200:
		return status, keep, nil, nil
	case chunked:
		err = readChunked(c.br, keepBody)
	case length >= 0:
		err = discard(c.br, length, keepBody)
	default: // the body runs to the end of the connection
		err = discard(c.br, -1, keepBody)
		keep = false
	}
	if err != nil {
		return 0, false, nil, err
	}
	return status, keep, errBody, nil
}

// discard reads n bytes (to EOF if n < 0), keeping the first ones in keep.
func discard(br *bufio.Reader, n int64, keep *[]byte) error {
	if keep != nil && len(*keep) < 256 {
		want := 256 - len(*keep)
		if n >= 0 && int64(want) > n {
			want = int(n)
		}
		b, err := br.Peek(want)
		*keep = append(*keep, b...)
		if err != nil && !(n < 0 && err == io.EOF) {
			return eofErr(err)
		}
	}
	if n < 0 {
		_, err := io.Copy(io.Discard, br)
		return err
	}
	for n > 0 {
		step := n
		if step > 1<<30 {
			step = 1 << 30
		}
		d, err := br.Discard(int(step))
		n -= int64(d)
		if err != nil {
			return eofErr(err)
		}
	}
	return nil
}

func readChunked(br *bufio.Reader, keep *[]byte) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return eofErr(err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return errBadResponse
		}
		if n == 0 {
			for { // trailers, then the empty line
				line, err := br.ReadSlice('\n')
				if err != nil {
					return eofErr(err)
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if err := discard(br, n, keep); err != nil {
			return err
		}
		if _, err := br.Discard(2); err != nil { // CRLF after the data
			return eofErr(err)
		}
	}
}

func eofErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
