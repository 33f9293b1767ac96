package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"iter"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
)

// timedEcho is the echo provider, timed: model holds the time spent
// making events (between the call and the end of the stream, less the
// time the consumer took over each event), first the model time before
// the first event.
type timedEcho struct {
	model, first atomic.Int64
}

func (p *timedEcho) Name() string { return "echo" }

func (p *timedEcho) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		start := time.Now()
		var consumer time.Duration
		n := 0
		defer func() { p.model.Store(int64(time.Since(start) - consumer)) }()
		for ev := range (agent.Echo{}).Stream(ctx, req) {
			t := time.Now()
			if n == 0 {
				p.first.Store(int64(t.Sub(start)))
			}
			n++
			ok := yield(ev)
			consumer += time.Since(t)
			if !ok {
				return
			}
		}
	}
}

// report reports the 50th and 99th percentiles of ds in milliseconds.
func report(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q * float64(len(ds)-1))
		return float64(ds[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

func benchEnv(b *testing.B, level cairn.Durability) (*env, *timedEcho) {
	p := &timedEcho{}
	e := newEnvWith(b, "", func(rt *cairn.Runtime) { rt.Durability = level },
		agent.Agent{Name: "default", Provider: p, Model: "echo"})
	return e, p
}

var levels = []struct {
	name  string
	level cairn.Durability
}{{"process", cairn.Process}, {"disk", cairn.Disk}}

// BenchmarkTurnOverhead measures a message's round trip through real HTTP
// (POST, JSON answer) less the model's time: storing both messages,
// reading the history, the turns and commits around the model call.
func BenchmarkTurnOverhead(b *testing.B) {
	for _, l := range levels {
		b.Run(l.name, func(b *testing.B) {
			e, p := benchEnv(b, l.level)
			body := []byte(`{"text":"hello there, how are you"}`)
			url := e.url + "/v1/agents/default/bench/messages"
			ds := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				resp, err := http.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(start)
				if resp.StatusCode != 200 {
					b.Fatalf("POST: %d", resp.StatusCode)
				}
				ds = append(ds, d-time.Duration(p.model.Load()))
			}
			b.StopTimer()
			report(b, ds)
		})
	}
}

// BenchmarkFirstByte measures the time from sending a message to reading
// its first text-delta event over SSE, less the model's time before its
// first event: with the echo provider, what a client waits for because
// of cairn.
func BenchmarkFirstByte(b *testing.B) {
	for _, l := range levels {
		b.Run(l.name, func(b *testing.B) {
			e, p := benchEnv(b, l.level)
			body := []byte(`{"text":"hello there, how are you"}`)
			url := e.url + "/v1/agents/default/bench/messages"
			ds := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Accept", "text/event-stream")
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				sse := &sseReader{bufio.NewReader(resp.Body)}
				var d time.Duration
				for {
					ev, ok := sse.next(b)
					if !ok {
						b.Fatal("stream ended before a text-delta")
					}
					if ev.Event == "text-delta" {
						d = time.Since(start)
						break
					}
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ds = append(ds, d-time.Duration(p.first.Load()))
			}
			b.StopTimer()
			report(b, ds)
		})
	}
}
