package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestBench runs `cairn bench` against the in-process cairn and the
// hello-world handler (no workerd: it needs Node.js and npm), briefly.
func TestBench(t *testing.T) {
	var stdout, stderr bytes.Buffer
	m := NewMain(strings.NewReader(""), &stdout, &stderr)
	m.Getenv = func(string) string { return "" }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"bench", "--json", "--duration", "200ms", "--warmup", "50ms", "--connections", "4", "--workloads", "put,get", "--durability", "process"}
	if code := m.Run(ctx, args); code != ExitOK {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, ExitOK, stderr.String())
	}
	var rep benchReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, stdout.String())
	}
	check := func(what string, s *benchStats) {
		t.Helper()
		if s == nil {
			t.Fatalf("%s: no figures", what)
		}
		if s.RPS <= 0 || s.Requests <= 0 || s.Errors != 0 || s.P50ms <= 0 || s.P99ms < s.P50ms {
			t.Errorf("%s: %.0f req/s, %d requests, %d errors (%s), p50 %.3fms p99 %.3fms; want positive, positive, none, p99 >= p50 > 0",
				what, s.RPS, s.Requests, s.Errors, s.FirstError, s.P50ms, s.P99ms)
		}
	}
	check("hello", rep.Hello)
	var names []string
	for _, w := range rep.Workloads {
		names = append(names, w.Name)
		check(w.Name, w.Cairn)
		if w.Workerd != nil {
			t.Errorf("%s: workerd figures without a workerd", w.Name)
		}
		if w.CairnPerHello <= 0 {
			t.Errorf("%s: cairn/hello %v, want positive", w.Name, w.CairnPerHello)
		}
	}
	if got, want := strings.Join(names, ","), "put,get"; got != want {
		t.Errorf("workloads %q, want %q", got, want)
	}
	if rep.Workerd.Available || rep.Targets.Workerd20x != nil {
		t.Errorf("workerd reported available (%+v) or judged (%v) though not requested", rep.Workerd, rep.Targets.Workerd20x)
	}
	if rep.Targets.PutHalfHello == nil {
		t.Error("the put/hello target was not judged")
	}
}

// TestBenchTable checks the text report names every part of the run.
func TestBenchTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	m := NewMain(strings.NewReader(""), &stdout, &stderr)
	m.Getenv = func(string) string { return "" }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"bench", "--duration", "100ms", "--warmup", "0s", "--connections", "2", "--workloads", "get", "--durability", "process"}
	if code := m.Run(ctx, args); code != ExitOK {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, ExitOK, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"hello (net/http)", "get", "cairn/workerd", "workerd UNAVAILABLE: not requested", "targets:"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--workloads", "put,nosuch"},
		{"bench", "--connections", "0"},
		{"bench", "--workerd", "--workerd-url", "http://127.0.0.1:1"},
		{"bench", "--cairn", "https://example.com"},
		{"bench", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		m := NewMain(strings.NewReader(""), &stdout, &stderr)
		if code := m.Run(context.Background(), args); code != ExitUsage {
			t.Errorf("%v: exit code %d, want %d (stderr %q)", args, code, ExitUsage, stderr.String())
		}
	}
}
