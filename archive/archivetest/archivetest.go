// Package archivetest is the contract suite of archive.Store, run against
// every implementation (as litestream's replica-client suite), and the S3
// servers the suite runs on in tests: gofakes3 in process, and a SeaweedFS
// S3 gateway in a subprocess.
package archivetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
)

// Run runs the contract suite. newStore returns an empty store for one
// subtest (a fresh directory, bucket or prefix) and registers its cleanup
// with t. Subtests run sequentially; some run goroutines of their own.
func Run(t *testing.T, newStore func(t *testing.T) archive.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, archive.Store)
	}{
		{"PutGet", testPutGet},
		{"Overwrite", testOverwrite},
		{"Copies", testCopies},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"List", testList},
		{"Usage", testUsage},
		{"ValidKeys", testValidKeys},
		{"InvalidKeys", testInvalidKeys},
		{"TooLarge", testTooLarge},
		{"Large", testLarge},
		{"Concurrent", testConcurrent},
		{"ConcurrentSameKey", testConcurrentSameKey},
		{"ConcurrentPutDelete", testConcurrentPutDelete},
		{"Cancelled", testCancelled},
		{"CancelDuringPut", testCancelDuringPut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

func put(t *testing.T, s archive.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, data); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

func get(t *testing.T, s archive.Store, key string) []byte {
	t.Helper()
	data, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return data
}

func list(t *testing.T, s archive.Store, prefix string) []string {
	t.Helper()
	keys, err := s.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func wantGet(t *testing.T, s archive.Store, key string, want []byte) {
	t.Helper()
	got := get(t, s, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %s, want %s", key, brief(got), brief(want))
	}
}

func wantNotFound(t *testing.T, s archive.Store, key string) {
	t.Helper()
	data, err := s.Get(t.Context(), key)
	if code := cairn.ErrorCode(err); code != cairn.NotFound {
		t.Fatalf("Get(%q) = %s, %v (code %q), want code %q", key, brief(data), err, code, cairn.NotFound)
	}
	if data != nil {
		t.Fatalf("Get(%q) returned %d bytes with NotFound", key, len(data))
	}
}

func wantList(t *testing.T, s archive.Store, prefix string, want ...string) {
	t.Helper()
	got := list(t, s, prefix)
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List(%q) = %q, want %q", prefix, got, want)
	}
}

// brief shows a blob in a failure message.
func brief(b []byte) string {
	if b == nil {
		return "nil"
	}
	if len(b) <= 32 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes %q...", len(b), b[:16])
}

// random returns n pseudo-random bytes (incompressible, as compressed
// chunks are).
func random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testPutGet(t *testing.T, s archive.Store) {
	blobs := map[string][]byte{
		"a":                             []byte("first"),
		"sessions/s1/chunks/000001.zst": random(1, 1000),
		"sessions/s1/chunks/000002.zst": random(2, 4096),
		"empty":                         {},
		"binary":                        {0, 0xff, '\n', '\r', 0, '/'},
	}
	for k, v := range blobs {
		put(t, s, k, v)
	}
	for k, v := range blobs {
		wantGet(t, s, k, v)
	}
	if got := get(t, s, "empty"); got == nil {
		t.Errorf("Get of an empty blob returned nil, want an empty non-nil slice")
	}
}

func testOverwrite(t *testing.T, s archive.Store) {
	put(t, s, "k/v", []byte("one"))
	put(t, s, "k/v", []byte("second, longer"))
	wantGet(t, s, "k/v", []byte("second, longer"))
	put(t, s, "k/v", []byte("3"))
	wantGet(t, s, "k/v", []byte("3"))
	put(t, s, "k/v", nil)
	wantGet(t, s, "k/v", []byte{})
	wantList(t, s, "", "k/v")
	u, err := s.Usage(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (archive.Usage{Blobs: 1, Bytes: 0}); u != want {
		t.Fatalf("Usage after overwrites = %+v, want %+v", u, want)
	}
	// A retried Put with the same data (a chunk move after a crash) is
	// harmless.
	put(t, s, "k/v", []byte("same"))
	put(t, s, "k/v", []byte("same"))
	wantGet(t, s, "k/v", []byte("same"))
}

// testCopies checks that the store keeps neither the caller's slice nor
// the one it returned.
func testCopies(t *testing.T, s archive.Store) {
	data := []byte("original")
	put(t, s, "c", data)
	copy(data, "XXXXXXXX")
	got := get(t, s, "c")
	if string(got) != "original" {
		t.Fatalf("Get after changing the Put slice = %q, want %q", got, "original")
	}
	copy(got, "YYYYYYYY")
	wantGet(t, s, "c", []byte("original"))
}

func testNotFound(t *testing.T, s archive.Store) {
	wantNotFound(t, s, "missing")
	put(t, s, "dir/blob", []byte("x"))
	put(t, s, "top", []byte("y"))
	wantNotFound(t, s, "dir")           // a prefix of a key, not a key
	wantNotFound(t, s, "dir/blo")       // a prefix of a segment
	wantNotFound(t, s, "dir/blob2")     // a longer segment
	wantNotFound(t, s, "dir/blob/more") // under a blob
	wantNotFound(t, s, "top/x")
	wantNotFound(t, s, "other/blob")
}

func testDelete(t *testing.T, s archive.Store) {
	ctx := t.Context()
	put(t, s, "d/a", []byte("a"))
	put(t, s, "d/ab", []byte("ab"))
	put(t, s, "d/a-b", []byte("a-b"))
	put(t, s, "e/a", []byte("ea"))
	for range 2 { // idempotent
		if err := s.Delete(ctx, "d/a"); err != nil {
			t.Fatalf("Delete(d/a): %v", err)
		}
		wantNotFound(t, s, "d/a")
	}
	wantGet(t, s, "d/ab", []byte("ab"))
	wantGet(t, s, "d/a-b", []byte("a-b"))
	wantGet(t, s, "e/a", []byte("ea"))
	for _, k := range []string{"never", "d", "d/never/deeper", "e/a/b"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("Delete(%q) of a missing key: %v", k, err)
		}
	}
	wantList(t, s, "", "d/a-b", "d/ab", "e/a")
	for _, k := range []string{"d/ab", "d/a-b", "e/a"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	wantList(t, s, "")
	// The key can be written again after its directory emptied.
	put(t, s, "d/a", []byte("again"))
	wantGet(t, s, "d/a", []byte("again"))
}

func testList(t *testing.T, s archive.Store) {
	ctx := t.Context()
	wantList(t, s, "")
	// Byte order, which is not the order of a directory walk: '-' < '.' <
	// '/' < '0' < '_' < 'a'.
	keys := []string{
		"s/1/b0", "s/1/b/x", "s/1/b.d", "s/1/b-c", "s/1/b_e", "s/1/ba",
		"s/10/a", "s/2/a", "s/1x", "t", "t0/u",
	}
	for i, k := range keys {
		put(t, s, k, []byte{byte(i)})
	}
	all := slices.Clone(keys)
	slices.Sort(all)
	wantList(t, s, "", all...)
	wantList(t, s, "s/1/", "s/1/b-c", "s/1/b.d", "s/1/b/x", "s/1/b0", "s/1/b_e", "s/1/ba")
	wantList(t, s, "s/1", "s/1/b-c", "s/1/b.d", "s/1/b/x", "s/1/b0", "s/1/b_e", "s/1/ba", "s/10/a", "s/1x")
	wantList(t, s, "s/1/b", "s/1/b-c", "s/1/b.d", "s/1/b/x", "s/1/b0", "s/1/b_e", "s/1/ba")
	wantList(t, s, "s/1/b/", "s/1/b/x")
	wantList(t, s, "s/1/b/x", "s/1/b/x") // a key is its own prefix
	wantList(t, s, "s/1/b/x/")
	wantList(t, s, "t", "t", "t0/u")
	wantList(t, s, "t/")
	wantList(t, s, "nothing")
	wantList(t, s, "s/3/")
	for _, p := range []string{"/", "s//", "S/", "s/../", "../", "s/.", ".", "s/1/*", "s/1/b x"} {
		if _, err := s.List(ctx, p); cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("List(%q) error %v, want code %q", p, err, cairn.Invalid)
		}
		if _, err := s.Usage(ctx, p); cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("Usage(%q) error %v, want code %q", p, err, cairn.Invalid)
		}
	}
}

func testUsage(t *testing.T, s archive.Store) {
	ctx := t.Context()
	usage := func(prefix string) archive.Usage {
		t.Helper()
		u, err := s.Usage(ctx, prefix)
		if err != nil {
			t.Fatalf("Usage(%q): %v", prefix, err)
		}
		return u
	}
	if u := usage(""); u != (archive.Usage{}) {
		t.Fatalf("Usage of an empty store = %+v", u)
	}
	put(t, s, "a/1", make([]byte, 100))
	put(t, s, "a/2", make([]byte, 1000))
	put(t, s, "a/3/x", make([]byte, 10))
	put(t, s, "b/1", make([]byte, 7))
	for _, tc := range []struct {
		prefix string
		want   archive.Usage
	}{
		{"", archive.Usage{Blobs: 4, Bytes: 1117}},
		{"a/", archive.Usage{Blobs: 3, Bytes: 1110}},
		{"a/3", archive.Usage{Blobs: 1, Bytes: 10}},
		{"b", archive.Usage{Blobs: 1, Bytes: 7}},
		{"c/", archive.Usage{}},
	} {
		if got := usage(tc.prefix); got != tc.want {
			t.Errorf("Usage(%q) = %+v, want %+v", tc.prefix, got, tc.want)
		}
	}
	if err := s.Delete(ctx, "a/2"); err != nil {
		t.Fatal(err)
	}
	if got, want := usage("a/"), (archive.Usage{Blobs: 2, Bytes: 110}); got != want {
		t.Errorf("Usage(a/) after a delete = %+v, want %+v", got, want)
	}
}

func testValidKeys(t *testing.T, s archive.Store) {
	seg := strings.Repeat("x", archive.MaxSegment)
	longest := strings.Repeat(strings.Repeat("z", archive.MaxSegment)+"/", archive.MaxKey/(archive.MaxSegment+1)) // 3 full segments
	longest += strings.Repeat("y", archive.MaxKey-len(longest))
	keys := []string{
		"0", "z", "a.b", "a_b", "a-b", "a..b", "a.", "v1.2.3-rc_4",
		seg, longest,
		"agents/a1/sessions/s-9f2c/chunks/000001.jsonl.zst",
	}
	for i, k := range keys {
		if err := archive.CheckKey(k); err != nil {
			t.Fatalf("CheckKey(%q): %v", k, err)
		}
		put(t, s, k, []byte(fmt.Sprint(i)))
	}
	for i, k := range keys {
		wantGet(t, s, k, []byte(fmt.Sprint(i)))
	}
	slices.Sort(keys)
	wantList(t, s, "", keys...)
}

// InvalidKeys lists keys that archive.CheckKey refuses, for tests of
// stores and of the code that builds keys.
var InvalidKeys = []string{
	"", "/", "a/", "/a", "a//b", ".", "..", "./a", "a/.", "a/..", "a/../b",
	"../a", ".hidden", "a/.put-123", "-a", "_a", "A", "a/B", "a b", "a\tb",
	"a\x00b", "a\\b", "c:", "a?b", "a#b", "a%2fb", "a*", "é", "a\u202eb",
	"a\n", strings.Repeat("x", archive.MaxSegment+1),
	strings.Repeat("x/", archive.MaxKey/2) + "x",
}

func testInvalidKeys(t *testing.T, s archive.Store) {
	ctx := t.Context()
	for _, k := range InvalidKeys {
		check := func(op string, err error) {
			t.Helper()
			if code := cairn.ErrorCode(err); code != cairn.Invalid {
				t.Errorf("%s(%q) error %v (code %q), want code %q", op, k, err, code, cairn.Invalid)
			}
		}
		check("CheckKey", archive.CheckKey(k))
		check("Put", s.Put(ctx, k, []byte("x")))
		_, err := s.Get(ctx, k)
		check("Get", err)
		check("Delete", s.Delete(ctx, k))
	}
	wantList(t, s, "")
	if u, err := s.Usage(ctx, ""); err != nil || u != (archive.Usage{}) {
		t.Fatalf("Usage after refused Puts = %+v, %v; want nothing written", u, err)
	}
}

func testTooLarge(t *testing.T, s archive.Store) {
	err := s.Put(t.Context(), "big", make([]byte, archive.MaxBlob+1))
	if code := cairn.ErrorCode(err); code != cairn.TooLarge {
		t.Fatalf("Put of MaxBlob+1 bytes: %v (code %q), want code %q", err, code, cairn.TooLarge)
	}
	wantNotFound(t, s, "big")
	wantList(t, s, "")
}

func testLarge(t *testing.T, s archive.Store) {
	big := random(8, 8<<20)
	put(t, s, "large/8mib", big)
	wantGet(t, s, "large/8mib", big)
	u, err := s.Usage(t.Context(), "large/")
	if err != nil {
		t.Fatal(err)
	}
	if u.Bytes != 8<<20 {
		t.Fatalf("Usage(large/) = %+v, want %d bytes", u, 8<<20)
	}
	big2 := random(9, 8<<20+3)
	put(t, s, "large/8mib", big2)
	wantGet(t, s, "large/8mib", big2)
}

func testConcurrent(t *testing.T, s archive.Store) {
	const workers, each = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				k := fmt.Sprintf("conc/w%d/%02d", w, i)
				if err := s.Put(t.Context(), k, random(uint64(w*100+i), 1000+i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []string
	for w := range workers {
		for i := range each {
			k := fmt.Sprintf("conc/w%d/%02d", w, i)
			want = append(want, k)
			wantGet(t, s, k, random(uint64(w*100+i), 1000+i))
		}
	}
	wantList(t, s, "conc/", want...)
}

// testConcurrentSameKey checks that concurrent Puts of one key leave one
// of the blobs whole, never a mix, and readers never see a partial blob.
func testConcurrentSameKey(t *testing.T, s archive.Store) {
	const writers = 6
	blobs := make([][]byte, writers)
	for i := range blobs {
		blobs[i] = random(uint64(i+50), 256<<10)
	}
	put(t, s, "same", blobs[0])
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readErr := make(chan error, 1)
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := s.Get(t.Context(), "same")
			if err == nil && !slices.ContainsFunc(blobs, func(b []byte) bool { return bytes.Equal(b, got) }) {
				err = fmt.Errorf("Get during concurrent Puts returned %s, none of the blobs written", brief(got))
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, writers*3)
	for i := range writers {
		wg.Go(func() {
			for range 3 {
				if err := s.Put(t.Context(), "same", blobs[i]); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		t.Fatal(err)
	default:
	}
	got := get(t, s, "same")
	if !slices.ContainsFunc(blobs, func(b []byte) bool { return bytes.Equal(b, got) }) {
		t.Fatalf("after concurrent Puts, Get = %s, none of the blobs written", brief(got))
	}
	wantList(t, s, "", "same")
}

// testConcurrentPutDelete puts and deletes keys of one directory from
// several goroutines, so that a directory a Delete empties races with the
// Puts into it.
func testConcurrentPutDelete(t *testing.T, s archive.Store) {
	const workers, rounds = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			k := fmt.Sprintf("pd/shared/w%d", w)
			for i := range rounds {
				data := []byte(fmt.Sprintf("%d-%d", w, i))
				if err := s.Put(ctx, k, data); err != nil {
					errs <- fmt.Errorf("round %d: %w", i, err)
					return
				}
				got, err := s.Get(ctx, k)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("round %d: Get(%s) after Put = %s, %v; want %q", i, k, brief(got), err, data)
					return
				}
				if err := s.Delete(ctx, k); err != nil {
					errs <- fmt.Errorf("round %d: %w", i, err)
					return
				}
				if _, err := s.Get(ctx, k); cairn.ErrorCode(err) != cairn.NotFound {
					errs <- fmt.Errorf("round %d: Get(%s) after Delete: %v, want NotFound", i, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wantList(t, s, "")
}

func testCancelled(t *testing.T, s archive.Store) {
	put(t, s, "kept", []byte("kept"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, c := range []struct {
		ctx  context.Context
		want error
	}{{ctx, context.Canceled}, {expired, context.DeadlineExceeded}} {
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, c.want) {
				t.Errorf("%s with an ended context: %v, want %v in the chain", op, err, c.want)
			}
		}
		check("Put", s.Put(c.ctx, "new", []byte("x")))
		check("Put over a blob", s.Put(c.ctx, "kept", []byte("changed")))
		_, err := s.Get(c.ctx, "kept")
		check("Get", err)
		check("Delete", s.Delete(c.ctx, "kept"))
		_, err = s.List(c.ctx, "")
		check("List", err)
		_, err = s.Usage(c.ctx, "")
		check("Usage", err)
	}
	wantNotFound(t, s, "new")
	wantGet(t, s, "kept", []byte("kept"))
	wantList(t, s, "", "kept")
}

// testCancelDuringPut cancels large Puts at various moments: each either
// succeeds, and the blob is whole, or fails with the cancellation, and the
// key holds the old blob or the new one whole.
func testCancelDuringPut(t *testing.T, s archive.Store) {
	old := []byte("old")
	big := random(77, 8<<20)
	for i, after := range []time.Duration{0, 100 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		k := fmt.Sprintf("cancel/%d", i)
		put(t, s, k, old)
		ctx, cancel := context.WithCancel(t.Context())
		timer := time.AfterFunc(after, cancel)
		err := s.Put(ctx, k, big)
		timer.Stop()
		cancel()
		got := get(t, s, k)
		switch {
		case err == nil:
			if !bytes.Equal(got, big) {
				t.Errorf("cancel after %v: Put succeeded but Get = %s", after, brief(got))
			}
		case !errors.Is(err, context.Canceled):
			t.Errorf("cancel after %v: Put error %v, want context.Canceled in the chain", after, err)
		case !bytes.Equal(got, old) && !bytes.Equal(got, big):
			t.Errorf("cancel after %v: Put failed (%v) and Get = %s, want the old or the new blob", after, err, brief(got))
		}
	}
}
