package cairn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
)

// The tests of this file prove what storage guarantees: reads see the
// turn's writes and KV and SQL commit together (G4), limits (G9), hostile
// names (G1, G11), migrations (G10), the SQL guard, DeleteAll and the
// catalog.

// runIn runs fn as an event of the object and fails the test on error. fn
// runs on the test's goroutine, so it may report with t.Errorf.
func runIn(tb testing.TB, s *cairn.Stub, fn func(ctx context.Context, st *cairn.State) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Run(ctx, fn); err != nil {
		tb.Fatalf("event on %q: %v", s.Name(), err)
	}
}

func keysOf(es []cairn.Entry) []string {
	keys := []string{}
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	return keys
}

// queryAll runs a query inside a turn and returns its values.
func queryAll(st *cairn.State, q string, args ...any) ([][]any, error) {
	rows, err := st.Query(q, args...)
	if err != nil {
		return nil, err
	}
	return rows.Values, nil
}

// objectFiles lists the files under the data directory's objects folder.
func objectFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// filesOf returns the files of object id among files.
func filesOf(files []string, id cairn.ID) []string {
	var out []string
	for _, f := range files {
		if strings.Contains(filepath.Base(f), id.String()) {
			out = append(out, f)
		}
	}
	return out
}

// evictAll moves clk past the idle timeout and evicts every idle object.
func evictAll(tb testing.TB, rt *cairn.Runtime, clk *testClock, stubs ...*cairn.Stub) {
	tb.Helper()
	clk.Advance(rt.IdleTimeout + time.Minute)
	rt.EvictIdle()
	for _, s := range stubs {
		if rt.IsActive(s.ID()) {
			tb.Fatalf("%q still active after EvictIdle", s.Name())
		}
	}
}

func withClock(clk *testClock) func(*cairn.Runtime) {
	return func(rt *cairn.Runtime) {
		rt.Now = clk.Now
		rt.IdleTimeout = time.Hour
	}
}

// ---- G4: reads see the turn's writes; KV and SQL commit together ----

func TestReadYourWrites(t *testing.T) {
	c := &testClass{migrations: []cairn.Migration{notesMigration}}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		if err := st.Put("a", []byte("1")); err != nil {
			return err
		}
		if v, ok, err := st.Get("a"); err != nil || !ok || string(v) != "1" {
			t.Errorf("Get after Put: got %q, %v, %v; want \"1\"", v, ok, err)
		}
		if err := st.PutMany([]cairn.Entry{{Key: "b", Value: []byte("2")}, {Key: "c", Value: []byte("3")}}); err != nil {
			return err
		}
		m, err := st.GetMany([]string{"a", "b", "c", "z"})
		if err != nil {
			return err
		}
		if got, want := fmt.Sprintf("%s %s %s %d", m["a"], m["b"], m["c"], len(m)), "1 2 3 3"; got != want {
			t.Errorf("GetMany after PutMany: got %s, want %s", got, want)
		}
		if ok, err := st.Delete("b"); err != nil || !ok {
			t.Errorf("Delete of a key written in this turn: got %v, %v; want true", ok, err)
		}
		if ok, err := st.Delete("b"); err != nil || ok {
			t.Errorf("second Delete: got %v, %v; want false", ok, err)
		}
		if _, ok, _ := st.Get("b"); ok {
			t.Error("Get after Delete found the key")
		}
		es, err := st.List(cairn.ListOptions{})
		if err != nil {
			return err
		}
		if got, want := fmt.Sprint(keysOf(es)), "[a c]"; got != want {
			t.Errorf("List: got %s, want %s", got, want)
		}
		if _, err := st.Exec("INSERT INTO notes (body) VALUES ('x')"); err != nil {
			return err
		}
		if _, err := st.Exec("UPDATE notes SET body = 'y'"); err != nil {
			return err
		}
		vals, err := queryAll(st, "SELECT body FROM notes")
		if err != nil {
			return err
		}
		if got, want := fmt.Sprint(vals), "[[y]]"; got != want {
			t.Errorf("Query after Exec: got %s, want %s", got, want)
		}
		return nil
	})
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		es, err := st.List(cairn.ListOptions{})
		if err != nil {
			return err
		}
		vals, err := queryAll(st, "SELECT body FROM notes")
		if got, want := fmt.Sprint(keysOf(es), vals, err), "[a c] [[y]] <nil>"; got != want {
			t.Errorf("next turn: got %s, want %s", got, want)
		}
		return nil
	})
}

func TestKVAndSQLCommitTogether(t *testing.T) {
	dir := t.TempDir()
	c := &testClass{migrations: []cairn.Migration{notesMigration}}
	rt, ns := newTestRuntimeAt(t, dir, cairn.Disk, c, nil)
	s := stubFor(t, ns, "a")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error { return writeBoth(st, "kept") })
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		if err := writeBoth(st, "dropped"); err != nil {
			return err
		}
		return errors.New("fail the turn")
	})
	if err == nil {
		t.Fatal("failing turn: got no error")
	}
	closeNow(t, rt)

	_, ns = newTestRuntimeAt(t, dir, cairn.Disk, c, nil)
	s = stubFor(t, ns, "a")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		es, err := st.List(cairn.ListOptions{})
		if err != nil {
			return err
		}
		vals, err := queryAll(st, "SELECT body FROM notes ORDER BY body")
		if err != nil {
			return err
		}
		if got, want := fmt.Sprint(keysOf(es), vals), "[kept] [[kept]]"; got != want {
			t.Errorf("after restart: got KV keys and notes %s, want %s", got, want)
		}
		return nil
	})
}

// ---- KV listing ----

func TestListMatchesModel(t *testing.T) {
	// Every string of 1 to 3 bytes over an alphabet with the extremes.
	alphabet := []string{"\x00", "a", "b", "\xff"}
	var keys []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			keys = append(keys, prefix+c)
			gen(prefix+c, n-1)
		}
	}
	gen("", 3)
	sort.Strings(keys) // byte order
	_, ns := newTestRuntime(t, &testClass{}, nil)
	s := stubFor(t, ns, "list")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		var es []cairn.Entry
		for _, k := range keys {
			es = append(es, cairn.Entry{Key: k, Value: []byte("v" + k)})
		}
		return st.PutMany(es)
	})
	model := func(o cairn.ListOptions) []string {
		out := []string{}
		for _, k := range keys {
			if strings.HasPrefix(k, o.Prefix) && k >= o.Start && (o.End == "" || k < o.End) {
				out = append(out, k)
			}
		}
		if o.Reverse {
			slices.Reverse(out)
		}
		if o.Limit > 0 && len(out) > o.Limit {
			out = out[:o.Limit]
		}
		return out
	}
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		for _, prefix := range []string{"", "a", "\x00", "\xff", "\xff\xff", "a\xff", "c"} {
			for _, start := range []string{"", "a", "b\xff", "\xff\x00"} {
				for _, end := range []string{"", "b", "\xff\xff", "a\x00"} {
					for _, rev := range []bool{false, true} {
						for _, limit := range []int{0, 1, 5} {
							o := cairn.ListOptions{Prefix: prefix, Start: start, End: end, Reverse: rev, Limit: limit}
							es, err := st.List(o)
							if err != nil {
								return err
							}
							for _, e := range es {
								if string(e.Value) != "v"+e.Key {
									t.Errorf("List(%#v): key %q has value %q", o, e.Key, e.Value)
								}
							}
							if got, want := keysOf(es), model(o); !slices.Equal(got, want) {
								t.Errorf("List(%#v): got %q, want %q", o, got, want)
							}
						}
					}
				}
			}
		}
		_, err := st.List(cairn.ListOptions{Limit: -1})
		wantCode(t, "List with a negative limit", err, cairn.Invalid)
		return nil
	})
}

// ---- G9: limits ----

func TestLimits(t *testing.T) {
	lim := cairn.DefaultLimits
	c := &testClass{migrations: []cairn.Migration{notesMigration}}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")

	batch := func(n int) []cairn.Entry {
		es := make([]cairn.Entry, n)
		for i := range es {
			es[i] = cairn.Entry{Key: fmt.Sprint("b", i), Value: []byte("v")}
		}
		return es
	}
	keys := func(n int) []string { return keysOf(batch(n)) }
	pad := func(q string, n int) string { return q + " -- " + strings.Repeat("x", n-len(q)-4) }
	for _, tc := range []struct {
		name string
		code cairn.Code
		op   func(st *cairn.State) error
	}{
		{"empty key", cairn.Invalid, func(st *cairn.State) error { return st.Put("", []byte("v")) }},
		{"key too long", cairn.TooLarge, func(st *cairn.State) error {
			return st.Put(strings.Repeat("k", lim.MaxKeyBytes+1), []byte("v"))
		}},
		{"get key too long", cairn.TooLarge, func(st *cairn.State) error {
			_, _, err := st.Get(strings.Repeat("k", lim.MaxKeyBytes+1))
			return err
		}},
		{"value too large", cairn.TooLarge, func(st *cairn.State) error {
			return st.Put("v", make([]byte, lim.MaxValueBytes+1))
		}},
		{"batch put", cairn.TooLarge, func(st *cairn.State) error { return st.PutMany(batch(lim.MaxBatch + 1)) }},
		{"batch get", cairn.TooLarge, func(st *cairn.State) error {
			_, err := st.GetMany(keys(lim.MaxBatch + 1))
			return err
		}},
		{"batch delete", cairn.TooLarge, func(st *cairn.State) error {
			_, err := st.DeleteMany(keys(lim.MaxBatch + 1))
			return err
		}},
		{"batch with an empty key", cairn.Invalid, func(st *cairn.State) error {
			return st.PutMany(append(batch(3), cairn.Entry{Key: "", Value: []byte("v")}))
		}},
		{"batch with a large value", cairn.TooLarge, func(st *cairn.State) error {
			return st.PutMany(append(batch(3), cairn.Entry{Key: "big", Value: make([]byte, lim.MaxValueBytes+1)}))
		}},
		{"SQL text too long", cairn.TooLarge, func(st *cairn.State) error {
			_, err := st.Exec(pad("INSERT INTO notes (body) VALUES ('x')", lim.MaxSQLBytes+1))
			return err
		}},
		{"query text too long", cairn.TooLarge, func(st *cairn.State) error {
			_, err := st.Query(pad("SELECT 1", lim.MaxSQLBytes+1))
			return err
		}},
		{"SQL value too large", cairn.TooLarge, func(st *cairn.State) error {
			// The engine allows some slack over MaxValueBytes for a row's
			// overhead; well over it must fail.
			_, err := st.Exec("INSERT INTO notes (body) VALUES (?)", strings.Repeat("x", 2*lim.MaxValueBytes))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runIn(t, s, func(ctx context.Context, st *cairn.State) error {
				wantCode(t, tc.name, tc.op(st), tc.code)
				// Nothing was written, even in this turn, which commits.
				es, err := st.List(cairn.ListOptions{})
				if err != nil {
					return err
				}
				if len(es) != 0 {
					t.Errorf("after the failed write: KV holds %q, want nothing", keysOf(es))
				}
				vals, err := queryAll(st, "SELECT count(*) FROM notes")
				if err != nil {
					return err
				}
				if fmt.Sprint(vals) != "[[0]]" {
					t.Errorf("after the failed write: notes count %v, want 0", vals)
				}
				return nil
			})
		})
	}
	t.Run("at the limits", func(t *testing.T) {
		s := stubFor(t, ns, "at-limits")
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			if err := st.Put(strings.Repeat("k", lim.MaxKeyBytes), []byte("v")); err != nil {
				t.Errorf("key of MaxKeyBytes: %v", err)
			}
			if err := st.Put("v", bytes.Repeat([]byte("v"), lim.MaxValueBytes)); err != nil {
				t.Errorf("value of MaxValueBytes: %v", err)
			}
			if err := st.PutMany(batch(lim.MaxBatch)); err != nil {
				t.Errorf("batch of MaxBatch: %v", err)
			}
			if _, err := st.Exec(pad("INSERT INTO notes (body) VALUES ('x')", lim.MaxSQLBytes)); err != nil {
				t.Errorf("SQL of MaxSQLBytes: %v", err)
			}
			return nil
		})
		v, ok := kvGet(t, s, "v")
		if !ok || len(v) != lim.MaxValueBytes {
			t.Errorf("value of MaxValueBytes read back with %d bytes, want %d", len(v), lim.MaxValueBytes)
		}
	})
	t.Run("lowered", func(t *testing.T) {
		_, ns := newTestRuntime(t, &testClass{}, func(rt *cairn.Runtime) {
			rt.Limits.MaxKeyBytes = 8
			rt.Limits.MaxValueBytes = 16
			rt.Limits.MaxBatch = 2
		})
		s := stubFor(t, ns, "a")
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			wantCode(t, "9-byte key", st.Put("123456789", nil), cairn.TooLarge)
			wantCode(t, "17-byte value", st.Put("k", make([]byte, 17)), cairn.TooLarge)
			wantCode(t, "batch of 3", st.PutMany(batch(3)), cairn.TooLarge)
			if err := st.Put("12345678", make([]byte, 16)); err != nil {
				t.Errorf("at the lowered limits: %v", err)
			}
			return nil
		})
	})
}

func TestObjectStorageLimit(t *testing.T) {
	const max = 256 << 10
	rt, ns := newTestRuntime(t, &testClass{}, func(rt *cairn.Runtime) { rt.Limits.MaxObjectBytes = max })
	s := stubFor(t, ns, "full")
	val := strings.Repeat("x", 16<<10)
	var n int
	var err error
	for n = 0; n < 64; n++ {
		if err = tryCall(s, "put", kvArg{fmt.Sprint("f", n), val}, nil); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatalf("wrote %d values of 16 KiB into an object limited to 256 KiB", n)
	}
	wantCode(t, "write beyond the object's limit", err, cairn.TooLarge)
	wantNoKV(t, s, fmt.Sprint("f", n))
	wantKV(t, s, "f0", val)
	wantKV(t, s, fmt.Sprint("f", n-1), val)
	if err := rt.FlushUsage(); err != nil {
		t.Fatal(err)
	}
	info, err := rt.Engine().Object(context.Background(), testNS, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.Bytes > max {
		t.Errorf("object holds %d bytes, over its limit of %d", info.Bytes, max)
	}
	// Deleting makes room again.
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		_, err := st.DeleteMany([]string{"f0", "f1", "f2", "f3"})
		return err
	})
	kvPut(t, s, "again", val)
	wantKV(t, s, "again", val)
}

func TestLimitsValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		tune func(*cairn.Runtime)
	}{
		{"MaxKeyBytes", func(rt *cairn.Runtime) { rt.Limits.MaxKeyBytes = 0 }},
		{"MaxValueBytes", func(rt *cairn.Runtime) { rt.Limits.MaxValueBytes = -1 }},
		{"MaxObjectBytes", func(rt *cairn.Runtime) { rt.Limits.MaxObjectBytes = 0 }},
		{"MaxBatch", func(rt *cairn.Runtime) { rt.Limits.MaxBatch = 0 }},
		{"MaxSQLBytes", func(rt *cairn.Runtime) { rt.Limits.MaxSQLBytes = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng, err := sqlite.Open(t.TempDir(), cairn.Process)
			if err != nil {
				t.Fatal(err)
			}
			rt := cairn.NewRuntime(eng)
			tc.tune(rt)
			err = rt.Open()
			wantCode(t, "Open with a bad limit", err, cairn.Invalid)
			if err == nil {
				rt.Close(context.Background())
			} else {
				eng.Close()
			}
		})
	}
}

// ---- G1, G11: hostile names ----

func TestHostileNames(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "data")
	escape := filepath.Join(os.TempDir(), fmt.Sprintf("cairn-escape-%d", time.Now().UnixNano()))
	valid := []string{
		"/", "..", "../../etc/passwd", "../../../../../../../../../.." + escape, "a/b/c", `..\..\windows\system32`,
		"./x", "~root", "$(touch pwned)", "%2e%2e%2f", "名前", "x\x01y\nz", " ", "objects", "catalog.db",
		strings.Repeat("é", cairn.MaxNameLen/2), strings.Repeat("/", cairn.MaxNameLen),
	}
	rt, ns := newTestRuntimeAt(t, dir, cairn.Process, &testClass{}, nil)
	ids := make(map[string]bool)
	for _, name := range valid {
		s, err := ns.GetByName(name)
		if err != nil {
			t.Errorf("GetByName(%.40q): %v", name, err)
			continue
		}
		ids[s.ID().String()] = true
		kvPut(t, s, "k", "v")
		var got string
		mustCall(t, s, "name", nil, &got)
		if got != name {
			t.Errorf("State.Name(): got %.40q, want %.40q", got, name)
		}
	}
	for _, name := range []string{
		"", "\x00", "a\x00b", strings.Repeat("a", cairn.MaxNameLen+1), strings.Repeat("n", 1<<20),
		"\xff\xfe", "a\xc0\xafb" /* overlong '/' */, "\xed\xa0\x80" /* surrogate */, "ab\x80",
	} {
		_, err := ns.GetByName(name)
		wantCode(t, fmt.Sprintf("GetByName(%.20q)", name), err, cairn.Invalid)
		_, err = ns.IDFromName(name)
		wantCode(t, fmt.Sprintf("IDFromName(%.20q)", name), err, cairn.Invalid)
	}
	t.Run("namespaces", func(t *testing.T) {
		eng, err := sqlite.Open(t.TempDir(), cairn.Process)
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		rt := cairn.NewRuntime(eng) // not opened: Register is allowed
		for _, name := range []string{"", "../x", "a/b", "a b", "a\x00", "é", strings.Repeat("n", cairn.MaxNamespaceLen+1)} {
			_, err := rt.Register(name, (&testClass{}).class())
			wantCode(t, fmt.Sprintf("Register(%.20q)", name), err, cairn.Invalid)
		}
		if _, err := rt.Register("ok.name_1-x", (&testClass{}).class()); err != nil {
			t.Errorf("Register of a valid name: %v", err)
		}
	})

	infos, err := ns.Objects(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, info := range infos {
		listed = append(listed, info.Name)
	}
	sort.Strings(listed)
	want := slices.Clone(valid)
	sort.Strings(want)
	if !slices.Equal(listed, want) {
		t.Errorf("catalog names: got %.200q, want %.200q", listed, want)
	}

	closeNow(t, rt)
	layout := regexp.MustCompile(`^data(/catalog\.db(-wal|-shm|-journal)?|/objects(/[0-9a-f]{2}(/[0-9a-f]{64}\.db(-wal|-shm|-journal)?)?)?)?$`)
	err = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(parent, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if !layout.MatchString(rel) {
			t.Errorf("unexpected file %q in the data directory's parent", rel)
			return nil
		}
		if m := regexp.MustCompile(`([0-9a-f]{64})\.db`).FindStringSubmatch(rel); m != nil && !ids[m[1]] {
			t.Errorf("file %q belongs to no object written", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(escape); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists: an object name reached the file system", escape)
		os.Remove(escape)
	}
}

// ---- G10: migrations ----

func TestMigrations(t *testing.T) {
	dir := t.TempDir()
	var ran1, ran2 atomic.Int64
	base := []cairn.Migration{
		{SQL: "CREATE TABLE notes (body TEXT NOT NULL); CREATE INDEX notes_body ON notes (body)"},
		{Func: func(ctx context.Context, st *cairn.State) error {
			ran1.Add(1)
			if _, err := st.Exec("INSERT INTO notes (body) VALUES ('from migration')"); err != nil {
				return err
			}
			return st.Put("schema", []byte("2"))
		}},
	}
	more := append(slices.Clone(base),
		cairn.Migration{SQL: "ALTER TABLE notes ADD COLUMN tag TEXT"},
		cairn.Migration{Func: func(ctx context.Context, st *cairn.State) error {
			ran2.Add(1)
			_, err := st.Exec("UPDATE notes SET tag = 'v4'")
			return err
		}},
	)
	check := func(t *testing.T, what string, got *atomic.Int64, want int64) {
		t.Helper()
		if n := got.Load(); n != want {
			t.Errorf("%s: migration ran %d times in all, want %d", what, n, want)
		}
	}

	clk := &testClock{}
	c := &testClass{migrations: base}
	rt, ns := newTestRuntimeAt(t, dir, cairn.Process, c, withClock(clk))
	a, b := stubFor(t, ns, "a"), stubFor(t, ns, "b")
	wantKV(t, a, "schema", "2")
	check(t, "first activation of a", &ran1, 1)
	mustCall(t, a, "get", "x", nil)
	check(t, "second call to a", &ran1, 1)
	wantKV(t, b, "schema", "2")
	check(t, "first activation of b", &ran1, 2)
	evictAll(t, rt, clk, a, b)
	wantKV(t, a, "schema", "2")
	check(t, "activation of a after eviction", &ran1, 2)
	if got := c.news.Load(); got != 3 {
		t.Errorf("New called %d times, want 3", got)
	}
	closeNow(t, rt)

	rt, ns = newTestRuntimeAt(t, dir, cairn.Process, &testClass{migrations: base}, nil)
	wantKV(t, stubFor(t, ns, "a"), "schema", "2")
	check(t, "activation after a restart", &ran1, 2)
	closeNow(t, rt)

	rt, ns = newTestRuntimeAt(t, dir, cairn.Process, &testClass{migrations: more}, nil)
	for i, name := range []string{"a", "b", "a"} {
		s := stubFor(t, ns, name)
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			vals, err := queryAll(st, "SELECT body, tag FROM notes")
			if err != nil {
				return err
			}
			if got, want := fmt.Sprint(vals), "[[from migration v4]]"; got != want {
				t.Errorf("%s after appended migrations: got notes %s, want %s", name, got, want)
			}
			return nil
		})
		check(t, "after appending migrations", &ran1, 2)
		check(t, "appended migration", &ran2, int64(min(i+1, 2)))
	}
	closeNow(t, rt)

	// A binary with fewer migrations than an object has applied refuses the
	// object and leaves its storage alone.
	rt, ns = newTestRuntimeAt(t, dir, cairn.Process, &testClass{migrations: base}, nil)
	if err := tryCall(stubFor(t, ns, "a"), "get", "schema", nil); err == nil {
		t.Error("an older binary served an object with newer migrations")
	}
	closeNow(t, rt)
	_, ns = newTestRuntimeAt(t, dir, cairn.Process, &testClass{migrations: more}, nil)
	wantKV(t, stubFor(t, ns, "a"), "schema", "2")
	check(t, "after the refused downgrade", &ran2, 2)
}

// ---- the SQL guard ----

func TestSQLGuard(t *testing.T) {
	c := &testClass{migrations: []cairn.Migration{{SQL: "CREATE TABLE t (a INTEGER, b TEXT)"}}}
	_, ns := newTestRuntime(t, c, nil)
	s := stubFor(t, ns, "a")
	const secret = "SECRET-KV-VALUE"
	kvPut(t, s, "secret", secret)
	escape := filepath.Join(t.TempDir(), "escape.db")
	denied := []string{
		"SELECT * FROM _cairn_kv",
		"SELECT * FROM _CAIRN_KV",
		`SELECT * FROM "_cairn_kv"`,
		"SELECT * FROM main._cairn_kv",
		"SELECT v FROM _cairn_meta",
		"SELECT * FROM (SELECT * FROM _cairn_kv)",
		"WITH x AS (SELECT * FROM _cairn_kv) SELECT * FROM x",
		"SELECT (SELECT value FROM _cairn_kv LIMIT 1)",
		"INSERT INTO t (b) SELECT value FROM _cairn_kv",
		"CREATE TABLE stolen AS SELECT * FROM _cairn_kv",
		"INSERT INTO _cairn_kv (key, value) VALUES (x'01', x'02')",
		"UPDATE _cairn_kv SET value = x'00'",
		"DELETE FROM _cairn_kv",
		"REPLACE INTO _cairn_meta (k, v) VALUES ('schema_version', 0)",
		"DELETE FROM _cairn_meta",
		"DROP TABLE _cairn_kv",
		"DROP TABLE _cairn_meta",
		"ALTER TABLE _cairn_kv RENAME TO stolen",
		"ALTER TABLE _cairn_kv ADD COLUMN c",
		"ALTER TABLE _cairn_meta DROP COLUMN v",
		"CREATE INDEX i ON _cairn_kv (value)",
		"CREATE TRIGGER tr AFTER INSERT ON _cairn_kv BEGIN SELECT 1; END",
		"CREATE TABLE _cairn_mine (x)",
		"CREATE VIEW _cairn_view AS SELECT 1",
		"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK",
		"SAVEPOINT x", "RELEASE turn", "ROLLBACK TO turn",
		"ATTACH DATABASE '" + escape + "' AS x", "DETACH DATABASE main",
		"VACUUM", "VACUUM INTO '" + escape + "'",
		"CREATE TEMP TABLE tt (x)",
		"SELECT * FROM temp.sqlite_schema",
		"SELECT load_extension('x')",
		"PRAGMA journal_mode = DELETE", "PRAGMA synchronous = OFF", "PRAGMA writable_schema = ON",
		"PRAGMA max_page_count = 1000000000", "PRAGMA page_size = 65536", "PRAGMA query_only = ON",
		"PRAGMA wal_checkpoint", "PRAGMA locking_mode = EXCLUSIVE", "PRAGMA database_list",
		"PRAGMA cell_size_check = OFF", "PRAGMA trusted_schema = ON", "PRAGMA mmap_size = 1000000",
		"PRAGMA journal_size_limit = 0", "PRAGMA schema_version = 1", "PRAGMA user_version = 7",
		"SELECT * FROM pragma_journal_mode",
	}
	for _, q := range denied {
		var execErr, queryErr error
		err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
			_, execErr = st.Exec(q)
			_, queryErr = st.Query(q)
			return nil
		})
		if err != nil {
			t.Errorf("%s: the event failed: %v", q, err)
		}
		wantCode(t, "Exec("+q+")", execErr, cairn.Invalid)
		wantCode(t, "Query("+q+")", queryErr, cairn.Invalid)
	}
	// A trigger on a user table cannot reach the reserved tables either.
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		if _, err := st.Exec("CREATE TABLE side (x)"); err != nil {
			return err
		}
		if _, err := st.Exec("CREATE TRIGGER side_tr AFTER INSERT ON side BEGIN DELETE FROM _cairn_kv; END"); err != nil {
			return nil // refused at creation: fine
		}
		_, err := st.Exec("INSERT INTO side VALUES (1)")
		wantCode(t, "INSERT firing a trigger that writes _cairn_kv", err, cairn.Invalid)
		_, err = st.Exec("DROP TRIGGER side_tr")
		return err
	})
	t.Run("raw pages", func(t *testing.T) {
		// Reading the database's pages would read the KV table's values.
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			for _, q := range []string{"SELECT data FROM sqlite_dbpage", "SELECT * FROM sqlite_dbpage('main')"} {
				rows, err := st.Query(q)
				if err != nil {
					if cairn.ErrorCode(err) != cairn.Invalid {
						t.Errorf("%s: got %v, want Invalid or rows without the KV data", q, err)
					}
					continue
				}
				for _, row := range rows.Values {
					for _, v := range row {
						if b, ok := v.([]byte); ok && bytes.Contains(b, []byte(secret)) {
							t.Errorf("%s: user SQL read a KV value from the raw pages", q)
						}
					}
				}
			}
			return nil
		})
	})

	// Nothing escaped and the object is intact.
	if _, err := os.Stat(escape); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("user SQL created %s", escape)
	}
	wantKV(t, s, "secret", secret)
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		if _, err := st.Exec("INSERT INTO t VALUES (1, 'x')"); err != nil {
			return err
		}
		return st.Put("k", []byte("v"))
	})
	// A denied attempt to end the turn's savepoint leaves the turn whole:
	// its writes still roll back with it.
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		if err := st.Put("rolled", []byte("back")); err != nil {
			return err
		}
		st.Exec("RELEASE turn")
		st.Exec("COMMIT")
		return errors.New("fail the turn")
	})
	if err == nil {
		t.Fatal("failing turn: got no error")
	}
	wantNoKV(t, s, "rolled")
	t.Run("allowed", func(t *testing.T) {
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			for _, q := range []string{
				"PRAGMA table_info(t)", "PRAGMA foreign_keys", "PRAGMA foreign_keys = ON", "PRAGMA integrity_check",
				"SELECT name FROM sqlite_schema", "SELECT * FROM pragma_table_info('t')",
			} {
				if _, err := st.Query(q); err != nil {
					t.Errorf("%s: %v", q, err)
				}
			}
			return nil
		})
	})
}

func TestSQLExecAndQuery(t *testing.T) {
	_, ns := newTestRuntime(t, &testClass{}, nil)
	s := stubFor(t, ns, "a")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		r, err := st.Exec("CREATE TABLE m (id INTEGER PRIMARY KEY, x TEXT NOT NULL); INSERT INTO m (x) VALUES ('a'); INSERT INTO m (x) VALUES ('b'), ('c')")
		if err != nil {
			return fmt.Errorf("several statements: %w", err)
		}
		if r.RowsWritten != 3 || r.LastInsertID != 3 {
			t.Errorf("Exec of several statements: got %+v, want 3 rows written, last insert ID 3", r)
		}
		rows, err := st.Query("SELECT id, x FROM m ORDER BY id")
		if err != nil {
			return err
		}
		if got, want := fmt.Sprint(rows.Columns, rows.Values, rows.RowsRead), "[id x] [[1 a] [2 b] [3 c]] 3"; got != want {
			t.Errorf("Query: got %s, want %s", got, want)
		}
		if r, err := st.Exec("UPDATE m SET x = x || '!'"); err != nil || r.RowsWritten != 3 {
			t.Errorf("UPDATE: got %+v, %v; want 3 rows written", r, err)
		}
		if r, err := st.Exec("DELETE FROM m WHERE id = ?", 1); err != nil || r.RowsWritten != 1 {
			t.Errorf("DELETE: got %+v, %v; want 1 row written", r, err)
		}

		if _, err := st.Exec("CREATE TABLE typed (i INTEGER, f REAL, s TEXT, b BLOB, n, bo INTEGER, tm INTEGER, u INTEGER)"); err != nil {
			return err
		}
		tm := time.UnixMilli(1700000000123)
		if _, err := st.Exec("INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?)", 42, 1.5, "str", []byte{0, 1, 2}, nil, true, tm, uint32(7)); err != nil {
			return err
		}
		rows, err = st.Query("SELECT i, f, s, b, n, bo, tm, u FROM typed")
		if err != nil {
			return err
		}
		want := []any{int64(42), 1.5, "str", []byte{0, 1, 2}, nil, int64(1), tm.UnixMilli(), int64(7)}
		if len(rows.Values) != 1 || !reflect.DeepEqual(rows.Values[0], want) {
			t.Errorf("typed values: got %#v, want %#v", rows.Values, want)
		}

		return nil
	})
	// Each in its own event: a panic in the engine fails only its case.
	for _, tc := range []struct {
		name string
		op   func(st *cairn.State) error
	}{
		{"syntax error", func(st *cairn.State) error { return execErr(st, "SELEC 1") }},
		{"no statement", func(st *cairn.State) error { return execErr(st, "   ") }},
		{"only a comment", func(st *cairn.State) error { return execErr(st, "-- nothing") }},
		{"query of only a comment", func(st *cairn.State) error { return queryErr(st, "/* nothing */") }},
		{"args for several statements", func(st *cairn.State) error { return execErr(st, "SELECT ?; SELECT 1", 1) }},
		{"too few args", func(st *cairn.State) error { return execErr(st, "SELECT ?, ?", 1) }},
		{"too many args", func(st *cairn.State) error { return execErr(st, "SELECT ?", 1, 2) }},
		{"unsupported arg", func(st *cairn.State) error { return execErr(st, "SELECT ?", struct{}{}) }},
		{"uint64 overflow", func(st *cairn.State) error { return execErr(st, "SELECT ?", uint64(1<<63)) }},
		{"constraint", func(st *cairn.State) error { return execErr(st, "INSERT INTO m (x) VALUES (NULL)") }},
		{"no such table", func(st *cairn.State) error { return execErr(st, "SELECT * FROM nope") }},
		{"query of several statements", func(st *cairn.State) error { return queryErr(st, "SELECT 1; SELECT 2") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runIn(t, s, func(ctx context.Context, st *cairn.State) error {
				wantCode(t, tc.name, tc.op(st), cairn.Invalid)
				return nil
			})
		})
	}
	t.Run("trailing comment", func(t *testing.T) {
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			if _, err := st.Exec("CREATE TABLE commented (x); -- the end"); err != nil {
				t.Errorf("Exec with a trailing comment: %v", err)
			}
			if _, err := st.Exec("INSERT INTO m (x) VALUES ('d'); /* done */"); err != nil {
				t.Errorf("Exec with a trailing block comment: %v", err)
			}
			return nil
		})
	})
	t.Run("migration with comments", func(t *testing.T) {
		c := &testClass{migrations: []cairn.Migration{{SQL: `
-- notes of the agent
CREATE TABLE notes (body TEXT);
-- and their index
CREATE INDEX notes_body ON notes (body);
-- end of migration 1
`}}}
		_, ns := newTestRuntime(t, c, nil)
		kvPut(t, stubFor(t, ns, "a"), "k", "v")
	})
}

func execErr(st *cairn.State, q string, args ...any) error {
	_, err := st.Exec(q, args...)
	return err
}

func queryErr(st *cairn.State, q string, args ...any) error {
	_, err := st.Query(q, args...)
	return err
}

// ---- DeleteAll ----

func TestDeleteAll(t *testing.T) {
	var migrated atomic.Int64
	c := &testClass{migrations: []cairn.Migration{
		{SQL: "CREATE TABLE notes (body TEXT)"},
		{Func: func(ctx context.Context, st *cairn.State) error { migrated.Add(1); return nil }},
	}}
	clk := &testClock{}
	rt, ns := newTestRuntime(t, c, withClock(clk))
	s := stubFor(t, ns, "a")
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		if err := writeBoth(st, "k"); err != nil {
			return err
		}
		if _, err := st.Exec("CREATE TABLE extra (x); CREATE VIEW extra_v AS SELECT * FROM extra; CREATE TRIGGER extra_t AFTER INSERT ON extra BEGIN DELETE FROM notes; END"); err != nil {
			return err
		}
		return st.SetAlarm(st.Now().Add(time.Hour))
	})
	// A DeleteAll in a failed turn is rolled back like any write.
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		if err := st.DeleteAll(); err != nil {
			return err
		}
		return errors.New("fail the turn")
	})
	if err == nil {
		t.Fatal("failing turn: got no error")
	}
	wantKV(t, s, "k", "v")

	news := c.news.Load()
	mustCall(t, s, "deleteAll", nil, nil)
	runIn(t, s, func(ctx context.Context, st *cairn.State) error {
		es, err := st.List(cairn.ListOptions{})
		if err != nil {
			return err
		}
		if len(es) != 0 {
			t.Errorf("KV after DeleteAll: got %q, want nothing", keysOf(es))
		}
		if at, ok, err := st.Alarm(); err != nil || ok {
			t.Errorf("alarm after DeleteAll: got %v, %v, %v; want none", at, ok, err)
		}
		vals, err := queryAll(st, "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE '\\_cairn\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
		if err != nil {
			return err
		}
		// notes again, made by the migration that ran again.
		if got, want := fmt.Sprint(vals), "[[table notes]]"; got != want {
			t.Errorf("schema after DeleteAll: got %s, want %s", got, want)
		}
		vals, err = queryAll(st, "SELECT count(*) FROM notes")
		if err != nil || fmt.Sprint(vals) != "[[0]]" {
			t.Errorf("notes after DeleteAll: got %v, %v; want no rows", vals, err)
		}
		return nil
	})
	if got := migrated.Load(); got != 2 {
		t.Errorf("migration ran %d times, want 2 (once more after DeleteAll)", got)
	}
	if got := c.news.Load() - news; got != 1 {
		t.Errorf("New called %d times after DeleteAll, want 1", got)
	}
	info, err := rt.Engine().Object(context.Background(), testNS, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !info.Alarm.IsZero() {
		t.Errorf("catalog still indexes an alarm at %v after DeleteAll", info.Alarm)
	}

	t.Run("files removed", func(t *testing.T) {
		dir := t.TempDir()
		clk := &testClock{}
		rt, ns := newTestRuntimeAt(t, dir, cairn.Process, &testClass{}, withClock(clk))
		s, other := stubFor(t, ns, "emptied"), stubFor(t, ns, "other")
		kvPut(t, s, "k", "v")
		kvPut(t, other, "k", "v")
		if len(filesOf(objectFiles(t, dir), s.ID())) == 0 {
			t.Fatal("no files for a written object")
		}
		mustCall(t, s, "deleteAll", nil, nil)
		evictAll(t, rt, clk, s, other)
		if files := filesOf(objectFiles(t, dir), s.ID()); len(files) != 0 {
			t.Errorf("files of the emptied object remain: %q", files)
		}
		if len(filesOf(objectFiles(t, dir), other.ID())) == 0 {
			t.Error("files of another object were removed")
		}
		infos, err := ns.Objects(context.Background(), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			if info.ID == s.ID() {
				t.Errorf("the emptied object is still listed: %+v", info)
			}
		}
		if len(infos) != 1 {
			t.Errorf("listed %d objects, want 1", len(infos))
		}
		// It can be written again.
		kvPut(t, s, "k", "again")
		wantKV(t, s, "k", "again")
	})
}

// ---- the catalog ----

func TestCatalog(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	c := &testClass{}
	rt, ns := newTestRuntimeAt(t, dir, cairn.Process, c, withClock(clk))
	ctx := context.Background()
	var stubs []*cairn.Stub
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		s := stubFor(t, ns, name)
		kvPut(t, s, "k", name)
		stubs = append(stubs, s)
	}
	if err := rt.FlushUsage(); err != nil {
		t.Fatal(err)
	}
	info, err := rt.Engine().Object(ctx, testNS, stubs[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "a" || info.Namespace != testNS || info.Usage.Requests == 0 || info.Usage.RowsWritten == 0 || info.Bytes == 0 || info.Created.IsZero() {
		t.Errorf("Object(a): got %+v, want name a, requests, rows written and bytes above 0, a creation time", info)
	}
	evictAll(t, rt, clk, stubs...)
	news := c.news.Load()

	infos, err := ns.Objects(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	byID := make(map[cairn.ID]string)
	for _, info := range infos {
		byID[info.ID] = info.Name
	}
	for _, s := range stubs {
		if byID[s.ID()] != s.Name() {
			t.Errorf("Objects: %s listed as %q, want %q", s.ID(), byID[s.ID()], s.Name())
		}
		if rt.IsActive(s.ID()) {
			t.Errorf("listing activated %q", s.Name())
		}
	}
	if len(infos) != len(stubs) {
		t.Errorf("Objects: got %d entries, want %d", len(infos), len(stubs))
	}
	if !slices.IsSortedFunc(infos, func(a, b cairn.ObjectInfo) int { return strings.Compare(a.ID.String(), b.ID.String()) }) {
		t.Error("Objects: not in ID order")
	}
	if got := c.news.Load(); got != news {
		t.Errorf("listing called New %d times", got-news)
	}
	// Pages.
	var paged []cairn.ID
	after := ""
	for i := 0; i < 10; i++ {
		page, err := ns.Objects(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d entries, limit 2", len(page))
		}
		for _, info := range page {
			paged = append(paged, info.ID)
		}
		after = page[len(page)-1].ID.String()
	}
	if len(paged) != len(stubs) {
		t.Errorf("paging listed %d objects, want %d", len(paged), len(stubs))
	}
	nss, err := rt.Engine().Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nss) != 1 || nss[0].Name != testNS || nss[0].Objects != int64(len(stubs)) {
		t.Errorf("Namespaces: got %+v, want %q with %d objects", nss, testNS, len(stubs))
	}

	t.Run("read-only objects are not created", func(t *testing.T) {
		kvReader, sqlReader := stubFor(t, ns, "kv-reader"), stubFor(t, ns, "sql-reader")
		wantNoKV(t, kvReader, "k")
		var keys []string
		mustCall(t, kvReader, "keys", nil, &keys)
		if len(keys) != 0 {
			t.Errorf("keys of a new object: got %q", keys)
		}
		if files := filesOf(objectFiles(t, dir), kvReader.ID()); len(files) != 0 {
			t.Errorf("reading created files: %q", files)
		}
		runIn(t, sqlReader, func(ctx context.Context, st *cairn.State) error {
			_, err := st.Query("SELECT 1")
			return err
		})
		evictAll(t, rt, clk, kvReader, sqlReader)
		for _, s := range []*cairn.Stub{kvReader, sqlReader} {
			if files := filesOf(objectFiles(t, dir), s.ID()); len(files) != 0 {
				t.Errorf("%s: reading left files: %q", s.Name(), files)
			}
			_, err := rt.Engine().Object(ctx, testNS, s.ID())
			wantCode(t, s.Name()+" in the catalog", err, cairn.NotFound)
		}
	})
}

// State.Name is documented to be "" only for unique IDs and for IDs whose
// name the catalog does not know.
func TestNameKnownWhenAddressedByID(t *testing.T) {
	clk := &testClock{}
	rt, ns := newTestRuntime(t, &testClass{}, withClock(clk))
	s := stubFor(t, ns, "alice")
	kvPut(t, s, "k", "v")
	evictAll(t, rt, clk, s)
	id, err := ns.ParseID(s.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	var got string
	mustCall(t, ns.Get(id), "name", nil, &got)
	if got != "alice" {
		t.Errorf("State.Name() of an object addressed by the ID of %q: got %q", "alice", got)
	}
}

// An object first addressed by ID learns its name when a caller addresses
// it by name. A handler may read State.Name meanwhile: run with -race, this
// must not be a data race.
func TestStateNameWhileAddressedByName(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	c := &testClass{methods: map[string]rpcFunc{
		"spin": func(ctx context.Context, st *cairn.State, arg json.RawMessage) (any, error) {
			close(entered)
			for {
				_ = st.Name()
				select {
				case <-release:
					return st.Name(), nil
				default:
					runtime.Gosched()
				}
			}
		},
	}}
	_, ns := newTestRuntime(t, c, nil)
	named := stubFor(t, ns, "bob")
	spin := goCall(context.Background(), ns.Get(named.ID()), "spin", nil)
	waitRecv(t, entered, "the handler to start")
	queued := goQueued(t, named, "get", "k")
	close(release)
	awaitCall(t, spin, "spin")
	awaitCall(t, queued, "get")
}
