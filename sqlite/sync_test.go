package sqlite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// These tests drive the sync stage through its seams (syncFS, syncFile):
// batching, and that a failed sync fails everything it may have covered.

func TestSyncModeStrings(t *testing.T) {
	for _, m := range []SyncMode{SyncAuto, SyncFS, SyncFiles} {
		got, err := ParseSyncMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseSyncMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if _, err := ParseSyncMode("fsync"); cairn.ErrorCode(err) != cairn.Invalid {
		t.Errorf("ParseSyncMode(fsync): got %v, want an invalid error", err)
	}
}

// gate holds each sync the stage makes until the test answers it: nil runs
// the real sync, an error fails it without syncing.
type gate struct {
	calls chan *syncCall
}

type syncCall struct {
	what  string // "syncfs" or the base name of the file
	reply chan error
}

// newGate installs a gate in s; at the end of the test (before the stage
// is closed) it lets everything through, so that a failed test does not
// hang.
func newGate(tb testing.TB, s *syncer) *gate {
	g := &gate{calls: make(chan *syncCall, 100)}
	tb.Cleanup(func() {
		for {
			select {
			case c := <-g.calls:
				c.reply <- nil
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	})
	s.dirty = func() int64 { return 0 } // deterministic: no other writer
	s.syncFS = func(d *os.File) error {
		if err := g.call("syncfs"); err != nil {
			return err
		}
		return syncfs(d)
	}
	s.syncFile = func(f *os.File, full bool) error {
		if err := g.call(filepath.Base(f.Name())); err != nil {
			return err
		}
		return syncFile1(f, full)
	}
	return g
}

func (g *gate) call(what string) error {
	c := &syncCall{what: what, reply: make(chan error)}
	g.calls <- c
	return <-c.reply
}

// next returns the next sync the stage makes.
func (g *gate) next(tb testing.TB) *syncCall {
	tb.Helper()
	select {
	case c := <-g.calls:
		return c
	case <-time.After(10 * time.Second):
		tb.Fatal("timed out waiting for a sync")
		return nil
	}
}

// open lets every sync through from now on, in the background.
func (g *gate) open(tb testing.TB) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case c := <-g.calls:
				c.reply <- nil
			case <-stop:
				return
			}
		}
	}()
	tb.Cleanup(func() { close(stop); <-done })
}

func pendingLen(s *syncer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newTestSyncer starts a stage on a temporary directory holding files
// f0..f(n-1), stopped at the end of the test.
func newTestSyncer(tb testing.TB, mode SyncMode, n int) (*syncer, []string) {
	tb.Helper()
	if mode == SyncFS && !syncfsReliable() {
		tb.Skip("syncfs is not available here")
	}
	dir := tb.TempDir()
	var paths []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			tb.Fatal(err)
		}
		paths = append(paths, p)
	}
	s, err := newSyncer(dir, mode)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.close)
	return s, paths
}

// goSync makes a request from a new goroutine; its result arrives on the
// returned channel.
func goSync(s *syncer, path string, epoch uint64) chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.sync([]syncFile{{path: path}}, epoch, false) }()
	return ch
}

// answered reports whether a request already has its answer.
func answered(ch chan error) bool {
	select {
	case err := <-ch:
		ch <- err // put it back for the caller
		return true
	default:
		return false
	}
}

func TestSyncStageBatches(t *testing.T) {
	for _, mode := range []SyncMode{SyncAuto, SyncFS} {
		t.Run(mode.String(), func(t *testing.T) {
			s, paths := newTestSyncer(t, mode, 9)
			if s.mode != mode {
				t.Skipf("mode %v falls back to %v here", mode, s.mode)
			}
			g := newGate(t, s)
			first := goSync(s, paths[0], s.epoch())
			c := g.next(t) // the first batch is syncing
			var later []chan error
			for _, p := range paths[1:] {
				later = append(later, goSync(s, p, s.epoch()))
			}
			waitFor(t, "8 requests queued behind the running sync", func() bool { return pendingLen(s) == 8 })
			c.reply <- nil
			if err := <-first; err != nil {
				t.Fatalf("first request: %v", err)
			}
			c = g.next(t) // one sync for the 8
			if mode == SyncAuto && c.what != "syncfs" {
				t.Errorf("auto synced a batch of 8 files with %q, want syncfs", c.what)
			}
			for i, ch := range later {
				if answered(ch) {
					t.Fatalf("request %d answered before the sync that covers it", i+1)
				}
			}
			c.reply <- nil
			for i, ch := range later {
				if err := <-ch; err != nil {
					t.Errorf("request %d: %v", i+1, err)
				}
			}
			st := s.stats()
			if st.Batches != 2 || st.Requests != 9 {
				t.Errorf("%d requests in %d batches, want 9 in 2", st.Requests, st.Batches)
			}
			wantFS := int64(1)
			if mode == SyncFS {
				wantFS = 2
			}
			if st.Syncfs != wantFS {
				t.Errorf("%d syncfs calls, want %d", st.Syncfs, wantFS)
			}
		})
	}
}

// With much dirty page cache on the node (another writer), auto syncs
// file by file instead of with syncfs: a batch that met it concurrently,
// and later requests in their callers, without the stage; meanwhile a
// syncfs in the background drains the page cache.
func TestSyncStageDirtyFallback(t *testing.T) {
	s, paths := newTestSyncer(t, SyncAuto, 5)
	if s.mode != SyncAuto {
		t.Skip("syncfs is not available here")
	}
	g := newGate(t, s)
	var dirty atomic.Int64
	s.dirty = dirty.Load
	first := goSync(s, paths[0], s.epoch())
	c := g.next(t)
	var later []chan error
	for _, p := range paths[1:] {
		later = append(later, goSync(s, p, s.epoch()))
	}
	waitFor(t, "4 requests queued", func() bool { return pendingLen(s) == 4 })
	dirty.Store(SyncfsDirtyLimit + 1)
	s.dirtyAt.Store(0) // read it again
	c.reply <- nil
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The 4 files are synced at once: all 4 calls arrive before any is
	// answered. The drain's syncfs arrives too, in the background.
	var calls []*syncCall
	var drain *syncCall
	for len(calls) < 4 || drain == nil {
		c := g.next(t)
		if c.what == "syncfs" {
			if drain != nil {
				t.Fatal("two drains at once")
			}
			drain = c
			continue
		}
		calls = append(calls, c)
	}
	seen := map[string]bool{}
	for _, c := range calls {
		seen[c.what] = true
	}
	if len(seen) != 4 {
		t.Errorf("files synced: %v, want f1..f4", seen)
	}
	calls[2].reply <- errors.New("EIO (injected)")
	for i, c := range calls {
		if i != 2 {
			c.reply <- nil
		}
	}
	failed := 0
	for _, ch := range later {
		if err := <-ch; err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d requests failed, want 1 (the one whose file failed)", failed)
	}
	// While the drain runs, requests sync in their callers.
	r := goSync(s, paths[0], s.epoch())
	if c := g.next(t); c.what != "f0" {
		t.Errorf("synced %q, want f0", c.what)
	} else {
		c.reply <- nil
	}
	if err := <-r; err != nil {
		t.Error(err)
	}
	// The drain brings the page cache down: batches use syncfs again.
	dirty.Store(0)
	drain.reply <- nil
	waitFor(t, "the drain to end", func() bool { return !s.draining.Load() })
	first = goSync(s, paths[0], s.epoch())
	c = g.next(t)
	if c.what != "f0" {
		t.Fatalf("synced %q, want a lone f0", c.what)
	}
	two := []chan error{goSync(s, paths[1], s.epoch()), goSync(s, paths[2], s.epoch())}
	waitFor(t, "2 requests queued", func() bool { return pendingLen(s) == 2 })
	c.reply <- nil
	if c := g.next(t); c.what != "syncfs" {
		t.Errorf("after the drain, a batch of 2 synced with %q, want syncfs", c.what)
	} else {
		c.reply <- nil
	}
	for _, ch := range append(two, first) {
		if err := <-ch; err != nil {
			t.Error(err)
		}
	}
	if st := s.stats(); st.DirtyBatches != 1 || st.DirtyDirect != 1 || st.Drains != 1 || st.Failures != 0 {
		t.Errorf("stats %+v, want 1 batch and 1 request synced file by file, 1 drain, no failures counted", st)
	}
}

// A failed drain counts as a failed syncfs: requests with writes from
// before it fail.
func TestSyncStageDrainFailure(t *testing.T) {
	s, paths := newTestSyncer(t, SyncAuto, 1)
	if s.mode != SyncAuto {
		t.Skip("syncfs is not available here")
	}
	g := newGate(t, s)
	s.dirty = func() int64 { return SyncfsDirtyLimit + 1 }
	old := s.epoch()
	r := goSync(s, paths[0], old)
	var file, drain *syncCall
	for file == nil || drain == nil {
		c := g.next(t)
		if c.what == "syncfs" {
			drain = c
		} else {
			file = c
		}
	}
	drain.reply <- errors.New("EIO (injected)")
	waitFor(t, "the failed drain", func() bool { return s.epoch() != old })
	file.reply <- nil
	if err := <-r; err == nil {
		t.Error("a request with writes from before the failed drain: got no error")
	}
}

// A lone request is fdatasynced (auto); its failure is its own.
func TestSyncStageLoneRequest(t *testing.T) {
	s, paths := newTestSyncer(t, SyncAuto, 2)
	if s.mode != SyncAuto {
		t.Skip("syncfs is not available here")
	}
	g := newGate(t, s)
	r := goSync(s, paths[0], s.epoch())
	c := g.next(t)
	if c.what != "f0" {
		t.Errorf("lone request synced with %q, want an fdatasync of f0", c.what)
	}
	c.reply <- errors.New("EIO (injected)")
	if err := <-r; err == nil {
		t.Error("failed fdatasync: got no error")
	}
	// A file's error is its own: the epoch stays, other files go on.
	r = goSync(s, paths[1], s.epoch())
	g.next(t).reply <- nil
	if err := <-r; err != nil {
		t.Errorf("next request: %v", err)
	}
	if st := s.stats(); st.Syncfs != 0 || st.Files != 2 || st.Failures != 0 {
		t.Errorf("stats %+v, want 0 syncfs, 2 files, 0 failures", st)
	}
}

// A failed syncfs fails its whole batch, and every later request that
// covers writes made before it: the error it reported may have been theirs.
func TestSyncStageFailure(t *testing.T) {
	s, paths := newTestSyncer(t, SyncFS, 6)
	g := newGate(t, s)
	boom := errors.New("EIO (injected)")

	old := s.epoch() // a store's writes made now, synced only later
	first := goSync(s, paths[0], s.epoch())
	c := g.next(t)
	var batch []chan error
	for _, p := range paths[1:4] {
		batch = append(batch, goSync(s, p, s.epoch()))
	}
	waitFor(t, "3 requests queued", func() bool { return pendingLen(s) == 3 })
	c.reply <- nil
	if err := <-first; err != nil {
		t.Fatalf("first batch: %v", err)
	}
	g.next(t).reply <- boom
	for i, ch := range batch {
		if err := <-ch; !errors.Is(err, boom) {
			t.Errorf("request %d of the failed batch: got %v, want %v", i+1, err, boom)
		}
	}

	late := goSync(s, paths[4], old)
	g.next(t).reply <- nil
	if err := <-late; err == nil {
		t.Error("a request covering writes from before the failure: got no error, want one")
	}
	fresh := goSync(s, paths[5], s.epoch())
	g.next(t).reply <- nil
	if err := <-fresh; err != nil {
		t.Errorf("a request after the failure: %v", err)
	}
	if st := s.stats(); st.Failures != 1 {
		t.Errorf("%d failures counted, want 1", st.Failures)
	}
}

// SyncFiles: object stores sync in the caller, without the stage.
func TestSyncFilesDirect(t *testing.T) {
	s, paths := newTestSyncer(t, SyncFiles, 1)
	if err := s.sync([]syncFile{{path: paths[0]}}, s.epoch(), true); err != nil {
		t.Fatal(err)
	}
	if st := s.stats(); st.Batches != 0 || st.Files != 1 {
		t.Errorf("stats %+v, want no batch and 1 file", st)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v657", true},
		{"5.8.0", true},
		{"5.10-rc1", true},
		{"5.7.19", false},
		{"4.19.0-25-amd64", false},
		{"garbage", false},
		{"", false},
	} {
		if got := kernelAtLeast(c.release, 5, 8); got != c.want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", c.release, got, c.want)
		}
	}
}

// Through the runtime (G5): objects whose commits share a failed syncfs
// all get an error; the next calls succeed.
func TestSyncStageFailureFailsCommits(t *testing.T) {
	if !syncfsReliable() {
		t.Skip("syncfs is not available here")
	}
	e, err := OpenWith(t.TempDir(), cairn.Disk, Options{Sync: SyncFS})
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(t, e.sync)
	rt := cairn.NewRuntime(e)
	rt.Durability = cairn.Disk
	rt.Logger = slog.New(slog.DiscardHandler)
	ns, err := rt.Register("kv", cairn.Class{New: func(st *cairn.State) (any, error) { return &putter{st}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.open(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	ctx := context.Background()
	put := func(name, v string) chan error {
		ch := make(chan error, 1)
		go func() {
			stub, err := ns.GetByName(name)
			if err == nil {
				err = stub.Call(ctx, "Put", v, nil)
			}
			ch <- err
		}()
		return ch
	}
	const n = 5
	// Create the objects (their first syncs) with the gate open.
	gateOpen := make(chan struct{})
	go func() {
		for {
			select {
			case c := <-g.calls:
				c.reply <- nil
			case <-gateOpen:
				return
			}
		}
	}()
	for i := range n {
		if err := <-put(fmt.Sprint("o", i), "v0"); err != nil {
			t.Fatal(err)
		}
	}
	close(gateOpen)

	// One object's sync holds the stage; the others' queue behind it.
	held := put("o0", "v1")
	c := g.next(t)
	var batch []chan error
	for i := 1; i < n; i++ {
		batch = append(batch, put(fmt.Sprint("o", i), "v1"))
	}
	waitFor(t, "4 objects' syncs queued", func() bool { return pendingLen(e.sync) == n-1 })
	c.reply <- nil
	if err := <-held; err != nil {
		t.Fatalf("held put: %v", err)
	}
	g.next(t).reply <- errors.New("EIO (injected)")
	for i, ch := range batch {
		if err := <-ch; err == nil {
			t.Errorf("put on o%d in the failed batch: got no error", i+1)
		}
	}
	g.open(t)
	for i := range n {
		if err := <-put(fmt.Sprint("o", i), "v2"); err != nil {
			t.Errorf("put on o%d after the failure: %v", i, err)
		}
	}
	// Each object of the failed batch was dropped and reloaded (by its
	// next event).
	if st := rt.Stats(); st.Resets != n-1 {
		t.Errorf("%d resets, want %d (every object of the failed batch)", st.Resets, n-1)
	}
}

type putter struct{ st *cairn.State }

func (p *putter) Put(ctx context.Context, v string) error { return p.st.Put("k", []byte(v)) }
