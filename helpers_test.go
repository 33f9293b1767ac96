package cairn_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
)

// newRuntime opens a runtime on a fresh data directory with the given
// classes registered, closed at the end of the test.
func newRuntime(tb testing.TB, dir string, level cairn.Durability, classes map[string]cairn.Class, tune func(*cairn.Runtime)) *cairn.Runtime {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	eng, err := sqlite.Open(dir, level)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = level
	if tune != nil {
		tune(rt)
	}
	for name, c := range classes {
		if _, err := rt.Register(name, c); err != nil {
			tb.Fatal(err)
		}
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			tb.Errorf("close runtime: %v", err)
		}
	})
	return rt
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
