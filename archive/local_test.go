package archive_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

func newLocal(tb testing.TB) *archive.Local {
	tb.Helper()
	l, err := archive.NewLocal(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func TestLocal(t *testing.T) {
	archivetest.Run(t, func(t *testing.T) archive.Store { return newLocal(t) })
}

// TestLocalLayout checks that a key is a file at its path, that Delete
// leaves no empty directories, and that only keys' files are listed.
func TestLocalLayout(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t)
	if err := l.Put(ctx, "a/b/c", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(l.Dir(), "a", "b", "c"))
	if err != nil || string(got) != "abc" {
		t.Fatalf("file of a/b/c = %q, %v", got, err)
	}
	// Files no key names: ignored by List, Usage and Get.
	for _, name := range []string{"a/UPPER", "a/.hidden", "a/b/with space", ".tmp/put-1"} {
		if err := os.WriteFile(filepath.Join(l.Dir(), name), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(l.Dir(), "a", "link")); err != nil {
		t.Fatal(err)
	}
	keys, err := l.List(ctx, "")
	if err != nil || len(keys) != 1 || keys[0] != "a/b/c" {
		t.Fatalf("List = %q, %v; want [a/b/c]", keys, err)
	}
	if u, err := l.Usage(ctx, ""); err != nil || u != (archive.Usage{Blobs: 1, Bytes: 3}) {
		t.Fatalf("Usage = %+v, %v", u, err)
	}
	if _, err := l.Get(ctx, "a/link"); cairn.ErrorCode(err) != cairn.NotFound {
		t.Fatalf("Get of a symlink: %v, want NotFound", err)
	}
	for _, name := range []string{"a/UPPER", "a/.hidden", "a/b/with space", "a/link"} {
		os.Remove(filepath.Join(l.Dir(), name))
	}
	if err := l.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != ".tmp" {
		t.Fatalf("after deleting the only key, %s holds %q, want only .tmp", l.Dir(), names)
	}
}

// TestLocalConflict checks that a key and a key under it cannot both
// hold blobs, and that the refused Put changes nothing.
func TestLocalConflict(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t)
	if err := l.Put(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a/b/c", "a/b/c/d"} {
		if err := l.Put(ctx, k, []byte("y")); cairn.ErrorCode(err) != cairn.Conflict {
			t.Fatalf("Put(%s) under a blob: %v, want Conflict", k, err)
		}
	}
	if err := l.Put(ctx, "a", []byte("z")); cairn.ErrorCode(err) != cairn.Conflict {
		t.Fatalf("Put(a) over a prefix of a/b: %v, want Conflict", err)
	}
	keys, err := l.List(ctx, "")
	if err != nil || len(keys) != 1 || keys[0] != "a/b" {
		t.Fatalf("List = %q, %v; want [a/b]", keys, err)
	}
	if err := l.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete of a prefix that is not a key: %v", err)
	}
	if got, err := l.Get(ctx, "a/b"); err != nil || string(got) != "x" {
		t.Fatalf("Get(a/b) = %q, %v", got, err)
	}
	tmp, err := os.ReadDir(filepath.Join(l.Dir(), ".tmp"))
	if err != nil || len(tmp) != 0 {
		t.Fatalf("refused Puts left %d temporary files (%v)", len(tmp), err)
	}
}

// TestLocalReopen checks that NewLocal keeps blobs and drops the
// temporary files of interrupted Puts.
func TestLocalReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	l, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Put(ctx, "k/1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".tmp", "put-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	l2, err := archive.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l2.Get(ctx, "k/1"); err != nil || string(got) != "one" {
		t.Fatalf("Get after reopen = %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp", "put-123")); !os.IsNotExist(err) {
		t.Fatalf("temporary file survived NewLocal: %v", err)
	}
	if f := filepath.Join(t.TempDir(), "file"); os.WriteFile(f, nil, 0o600) == nil {
		if _, err := archive.NewLocal(f); err == nil {
			t.Fatalf("NewLocal on a file succeeded")
		}
	}
}

// crashEnv makes the test binary a child that Puts blobs in a loop until
// it is killed; TestLocalCrash runs it.
const crashEnv = "CAIRN_ARCHIVE_CRASH_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// crashBlob is blob i of the crash test: 1 MiB, ending with the SHA-256
// of the rest, so that a reader can tell a whole blob from a torn one.
func crashBlob(i int) []byte {
	unit := []byte(fmt.Sprintf("blob %d;", i))
	b := bytes.Repeat(unit, (1<<20)/len(unit)+1)[:1<<20-32]
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

func wholeCrashBlob(b []byte) bool {
	if len(b) < 32 {
		return false
	}
	sum := sha256.Sum256(b[:len(b)-32])
	return bytes.Equal(sum[:], b[len(b)-32:])
}

func crashChild(dir string) {
	l, err := archive.NewLocal(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		// Overwrites of a few keys and new keys in new directories.
		for _, k := range []string{"hot/" + strconv.Itoa(i%3), fmt.Sprintf("s/%d/c/%d", i/4, i)} {
			if err := l.Put(ctx, k, crashBlob(i)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		if i%5 == 4 {
			l.Delete(ctx, fmt.Sprintf("s/%d/c/%d", (i-4)/4, i-4))
		}
		fmt.Printf("put %d\n", i)
	}
}

// TestLocalCrash kills a process that is writing blobs with SIGKILL at
// various moments, then checks that every listed blob is whole and that
// reopening cleans up.
func TestLocalCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	// Kill after the child has finished n Puts, during the next ones.
	for round, n := range []int{0, 1, 3, 7, 12} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		for lines.Scan() && lines.Text() != fmt.Sprintf("put %d", n) {
		}
		cmd.Process.Kill()
		cmd.Wait()
		if stderr.Len() > 0 {
			t.Fatalf("round %d: child failed: %s", round, stderr.Bytes())
		}
		l, err := archive.NewLocal(dir)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := l.List(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			b, err := l.Get(t.Context(), k)
			if err != nil {
				t.Fatalf("round %d: Get(%s): %v", round, k, err)
			}
			if !wholeCrashBlob(b) {
				t.Fatalf("round %d: blob %s is torn (%d bytes)", round, k, len(b))
			}
		}
		t.Logf("round %d: killed after put %d, %d blobs whole", round, n, len(keys))
	}
}
