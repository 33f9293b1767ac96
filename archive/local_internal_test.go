package archive

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/cairn-dev/cairn"
)

// recordSyncs makes l record the paths it fsyncs, failing the fsync of
// fail (if not "").
func recordSyncs(l *Local, fail string) func() []string {
	var mu sync.Mutex
	var synced []string
	l.sync = func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		name := f.Name()
		if rel, err := filepath.Rel(l.dir, name); err == nil {
			name = filepath.ToSlash(rel)
		}
		if filepath.Dir(name) == ".tmp" {
			name = ".tmp/*"
		}
		if name == fail {
			return errors.New("injected fsync failure")
		}
		synced = append(synced, name)
		return f.Sync()
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(synced)
	}
}

// TestLocalPutSyncs checks what a Put fsyncs: the data, each new
// directory into its parent, and the key's directory after the rename.
func TestLocalPutSyncs(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	synced := recordSyncs(l, "")
	if err := l.Put(ctx, "a/b/c", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, want := synced(), []string{".tmp/*", ".", "a", "a/b"}; !slices.Equal(got, want) {
		t.Fatalf("first Put fsynced %q, want %q", got, want)
	}
	// The directories are known durable now: only the data and the
	// directory entry.
	synced = recordSyncs(l, "")
	if err := l.Put(ctx, "a/b/d", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if got, want := synced(), []string{".tmp/*", "a/b"}; !slices.Equal(got, want) {
		t.Fatalf("second Put fsynced %q, want %q", got, want)
	}
	// A new Local knows nothing: it fsyncs the chain once.
	l2, err := NewLocal(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	synced = recordSyncs(l2, "")
	if err := l2.Put(ctx, "a/b/e", []byte("z")); err != nil {
		t.Fatal(err)
	}
	if got, want := synced(), []string{".tmp/*", ".", "a", "a/b"}; !slices.Equal(got, want) {
		t.Fatalf("Put on a new Local fsynced %q, want %q", got, want)
	}
	synced = recordSyncs(l2, "")
	if err := l2.Delete(ctx, "a/b/e"); err != nil {
		t.Fatal(err)
	}
	if got, want := synced(), []string{"a/b"}; !slices.Equal(got, want) {
		t.Fatalf("Delete fsynced %q, want %q", got, want)
	}
}

// TestLocalSyncFailure checks that a failed fsync fails the Put: before
// the rename nothing is written; after it, the error still reaches the
// caller.
func TestLocalSyncFailure(t *testing.T) {
	ctx := context.Background()
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	recordSyncs(l, ".tmp/*")
	if err := l.Put(ctx, "k/1", []byte("x")); err == nil {
		t.Fatal("Put succeeded with a failing data fsync")
	}
	if _, err := l.Get(ctx, "k/1"); cairn.ErrorCode(err) != cairn.NotFound {
		t.Fatalf("Get after a failed Put: %v, want NotFound", err)
	}
	if tmp, _ := os.ReadDir(l.tmp); len(tmp) != 0 {
		t.Fatalf("failed Put left %d temporary files", len(tmp))
	}
	recordSyncs(l, "k")
	if err := l.Put(ctx, "k/2", []byte("x")); err == nil {
		t.Fatal("Put succeeded with a failing directory fsync")
	}
	// The failed directory fsync is tried again by the next Put.
	synced := recordSyncs(l, "")
	if err := l.Put(ctx, "k/3", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := synced(); !slices.Contains(got, "k") {
		t.Fatalf("Put after a failed directory fsync fsynced %q, want k among them", got)
	}
}
