package bench

import (
	"bufio"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		got := h.Quantile(q)
		want := time.Duration(q * 100000 * float64(time.Microsecond))
		if diff := math.Abs(float64(got-want)) / float64(want); diff > 0.016 {
			t.Errorf("Quantile(%v) = %v, want %v (within 1.6%%)", q, got, want)
		}
	}
	if got, want := h.Max(), 100*time.Millisecond; got != want {
		t.Errorf("Max = %v, want %v", got, want)
	}
	var small Histogram
	small.Record(3)
	if got := small.Quantile(0.5); got != 3 {
		t.Errorf("Quantile of one 3ns sample = %v, want 3ns", got)
	}
	var empty Histogram
	if got := empty.Quantile(0.99); got != 0 {
		t.Errorf("empty Quantile = %v, want 0", got)
	}
}

func TestHistIndexMonotonic(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 1e3, 1e6, 1e9, 1e12, math.MaxInt64} {
		i := histIndex(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d after %d", v, i, prev)
		}
		if low := histLow(i); low > v {
			t.Fatalf("histLow(histIndex(%d)) = %d, above the value", v, low)
		}
		prev = i
	}
}

// testConn returns a conn whose responses are the given text.
func testConn(t *testing.T, response string) *conn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	go func() {
		br := bufio.NewReader(server)
		br.ReadString('\n') // the request line is enough: requests have no body here
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(server, response)
		server.Close()
	}()
	return &conn{nc: client, br: bufio.NewReader(client)}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		response string
		status   int
		keep     bool
		body     string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, true, ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n", 200, true, ""},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, false, ""},
		{"to eof", "HTTP/1.1 200 OK\r\n\r\nuntil the end", 200, false, ""},
		{"http 1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, false, ""},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, true, ""},
		{"error body", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom", 500, true, "boom"},
		{"chunked error", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n found\r\n0\r\n\r\n", 404, true, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConn(t, tt.response)
			status, keep, body, err := roundTrip(c, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || keep != tt.keep || string(body) != tt.body {
				t.Errorf("got status %d keep %v body %q, want %d %v %q", status, keep, body, tt.status, tt.keep, tt.body)
			}
		})
	}
	for _, bad := range []string{"", "HTTP/1.1 2", "SMTP ready\r\n", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"} {
		c := testConn(t, bad)
		if _, _, _, err := roundTrip(c, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err == nil {
			t.Errorf("response %q: no error", bad)
		}
	}
}

func TestRun(t *testing.T) {
	var hits, bodies atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodies.Add(int64(len(b)))
		switch r.URL.Path {
		case "/base/ok":
			w.Write([]byte("ok"))
		case "/base/big": // chunked: larger than the server's buffer
			w.Write([]byte(strings.Repeat("x", 10000)))
		default:
			http.Error(w, "no such thing", http.StatusNotFound)
		}
	}))
	defer srv.Close()

	load := Load{
		URL:         srv.URL + "/base/",
		Connections: 4,
		Duration:    200 * time.Millisecond,
		Warmup:      20 * time.Millisecond,
		Requests: []Request{
			{Method: "POST", Path: "ok", Body: []byte("12345")},
			{Path: "/big"},
		},
	}
	res, err := Run(context.Background(), load)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 || res.RPS() <= 0 {
		t.Fatalf("got %d requests, %d errors (%s), %.0f req/s; want some, none, positive", res.Requests, res.Errors, res.FirstError, res.RPS())
	}
	if res.Latency.Count() != res.Requests || res.Latency.Quantile(0.5) <= 0 {
		t.Errorf("latency count %d p50 %v; want %d and positive", res.Latency.Count(), res.Latency.Quantile(0.5), res.Requests)
	}
	if got := hits.Load(); got < res.Requests {
		t.Errorf("server saw %d requests, fewer than the %d measured", got, res.Requests)
	}
	if runtime.GOOS == "linux" && (res.CPU.Self <= 0 || res.CPU.Machine < 0 || res.CPU.Others() < 0) {
		t.Errorf("CPU %+v: want this process's use measured", res.CPU)
	}
	if bodies.Load() == 0 {
		t.Error("the server received no request body")
	}

	load.Requests = []Request{{Path: "/missing"}}
	res, err = Run(context.Background(), load)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Errors != res.Requests || !strings.Contains(res.FirstError, "404") || !strings.Contains(res.FirstError, "no such thing") {
		t.Errorf("got %d errors of %d, first %q; want all of them, a 404 with its body", res.Errors, res.Requests, res.FirstError)
	}
}

func TestRunMaxRequests(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	start := time.Now()
	res, err := Run(context.Background(), Load{URL: srv.URL, Connections: 3, Duration: time.Minute, MaxRequests: 100, Requests: []Request{{Path: "/"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || hits.Load() != 100 || res.Errors != 0 {
		t.Errorf("got %d measured, %d served, %d errors; want 100, 100, 0", res.Requests, hits.Load(), res.Errors)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v: the limit did not end the run", d)
	}
}

func TestRunCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, Load{URL: srv.URL, Connections: 2, Duration: time.Minute, Requests: []Request{{Path: "/"}}})
	if err == nil {
		t.Error("no error after cancellation")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v after cancellation", d)
	}
}

func TestRunUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Run(context.Background(), Load{URL: "http://" + addr, Requests: []Request{{Path: "/"}}}); err == nil {
		t.Error("no error for a closed port")
	}
	if _, err := Run(context.Background(), Load{URL: "https://example.com", Requests: []Request{{Path: "/"}}}); err == nil {
		t.Error("no error for https")
	}
}
