package sqlite_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
	zs "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// These tests hold the engine to the cairn.Store contract directly, below
// the runtime: where a store's files appear, turns and commits, and what
// user SQL may do.

// openStore opens the engine on a temporary directory and the store of
// object name in namespace "t".
func openStore(tb testing.TB, name string) (*sqlite.Engine, cairn.Store, cairn.ObjectRef) {
	tb.Helper()
	return openStoreIn(tb, tb.TempDir(), cairn.Process, name)
}

// openStoreIn is openStore on the data directory dir at durability level.
func openStoreIn(tb testing.TB, dir string, level cairn.Durability, name string) (*sqlite.Engine, cairn.Store, cairn.ObjectRef) {
	tb.Helper()
	eng, err := sqlite.Open(dir, level)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	// A runtime that is never opened: only to derive the ID.
	ns, err := cairn.NewRuntime(eng).Register("t", cairn.Class{New: func(*cairn.State) (any, error) { return struct{}{}, nil }})
	if err != nil {
		tb.Fatal(err)
	}
	id, err := ns.IDFromName(name)
	if err != nil {
		tb.Fatal(err)
	}
	ref := cairn.ObjectRef{Namespace: "t", ID: id, Name: name}
	s, err := eng.OpenStore(context.Background(), ref, cairn.StoreOptions{
		MaxBytes: cairn.DefaultLimits.MaxObjectBytes, MaxSQLLen: cairn.DefaultLimits.MaxSQLBytes, MaxValueBytes: cairn.DefaultLimits.MaxValueBytes,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return eng, s, ref
}

func dbFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// noPanic runs fn and turns a panic into an error, so that one bad case
// does not take down the test binary.
func noPanic(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}

func TestStoreCreatedOnFirstWrite(t *testing.T) {
	eng, s, ref := openStore(t, "a")
	s.BeginTurn()
	if m, err := s.Get([]string{"k"}); err != nil || len(m) != 0 {
		t.Fatalf("Get on a new store: got %v, %v", m, err)
	}
	if es, err := s.List(cairn.ListOptions{}); err != nil || len(es) != 0 {
		t.Fatalf("List on a new store: got %v, %v", es, err)
	}
	if _, ok, err := s.Alarm(); err != nil || ok {
		t.Fatalf("Alarm on a new store: got %v, %v", ok, err)
	}
	if files := dbFiles(t, eng.Dir()); len(files) != 0 {
		t.Fatalf("reading created %q", files)
	}
	if _, err := eng.Object(context.Background(), "t", ref.ID); cairn.ErrorCode(err) != cairn.NotFound {
		t.Fatalf("catalog entry before the first write: got %v, want NotFound", err)
	}
	if err := s.Put([]cairn.Entry{{Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.EndTurn(true); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Commit(); err != nil || !ok {
		t.Fatalf("Commit: got %v, %v; want ok", ok, err)
	}
	if files := dbFiles(t, eng.Dir()); len(files) == 0 {
		t.Fatal("no file after the first write")
	}
	info, err := eng.Object(context.Background(), "t", ref.ID)
	if err != nil || info.Name != "a" {
		t.Fatalf("catalog entry after the first write: got %+v, %v", info, err)
	}
}

func TestStoreTurnsAndCommits(t *testing.T) {
	_, s, _ := openStore(t, "a")
	put := func(k string) {
		t.Helper()
		if err := s.Put([]cairn.Entry{{Key: k, Value: []byte(k)}}); err != nil {
			t.Fatal(err)
		}
	}
	has := func(k string) bool {
		t.Helper()
		m, err := s.Get([]string{k})
		if err != nil {
			t.Fatal(err)
		}
		return m[k] != nil
	}
	// Two turns in one group: the failed one rolls back alone.
	s.BeginTurn()
	put("kept")
	if err := s.EndTurn(true); err != nil {
		t.Fatal(err)
	}
	s.BeginTurn()
	put("dropped")
	if err := s.BeginTx(); err != nil {
		t.Fatal(err)
	}
	put("in-tx")
	if err := s.EndTx(true); err != nil {
		t.Fatal(err)
	}
	if err := s.EndTurn(false); err != nil {
		t.Fatal(err)
	}
	if !s.Dirty() {
		t.Error("Dirty() false with a kept turn uncommitted")
	}
	c1, ok, err := s.Commit()
	if err != nil || !ok {
		t.Fatalf("Commit: got %v, %v", ok, err)
	}
	if !has("kept") || has("dropped") || has("in-tx") {
		t.Errorf("after the group: kept %v, dropped %v, in-tx %v; want true, false, false", has("kept"), has("dropped"), has("in-tx"))
	}
	// A group that wrote nothing commits nothing.
	s.BeginTurn()
	has("kept")
	if err := s.EndTurn(true); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Commit(); err != nil || ok {
		t.Errorf("Commit of a read-only group: got ok %v, %v; want false", ok, err)
	}
	s.BeginTurn()
	put("next")
	s.EndTurn(true)
	c2, ok, err := s.Commit()
	if err != nil || !ok || c2.Seq <= c1.Seq {
		t.Errorf("second Commit: got %+v, %v, %v; want a Seq above %d", c2, ok, err, c1.Seq)
	}
	if err := s.Sync(c2); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

func TestStoreEmptyIsRemovedOnClose(t *testing.T) {
	eng, s, ref := openStore(t, "a")
	s.BeginTurn()
	if err := s.Put([]cairn.Entry{{Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	s.EndTurn(true)
	s.Commit()
	s.BeginTurn()
	if err := s.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	s.EndTurn(true)
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if files := dbFiles(t, eng.Dir()); len(files) != 0 {
		t.Errorf("files of an emptied store remain: %q", files)
	}
	if _, err := eng.Object(context.Background(), "t", ref.ID); cairn.ErrorCode(err) != cairn.NotFound {
		t.Errorf("catalog entry of an emptied store: got %v, want NotFound", err)
	}
}

// Text without a statement (blank, or only comments, or a comment after
// the last statement) must not crash the engine.
func TestStoreSQLWithoutStatement(t *testing.T) {
	_, s, _ := openStore(t, "a")
	s.BeginTurn()
	defer s.EndTurn(false)
	for _, q := range []string{"", "   ", "-- nothing", "/* nothing */", ";"} {
		err := noPanic(func() error { _, err := s.Exec(q); return err })
		if code := cairn.ErrorCode(err); code != cairn.Invalid {
			t.Errorf("Exec(%q): got %v, want Invalid", q, err)
		}
		err = noPanic(func() error { _, err := s.Query(q); return err })
		if code := cairn.ErrorCode(err); code != cairn.Invalid {
			t.Errorf("Query(%q): got %v, want Invalid", q, err)
		}
	}
	for _, q := range []string{"CREATE TABLE a (x); -- done", "INSERT INTO a VALUES (1);\n/* done */\n"} {
		if err := noPanic(func() error { _, err := s.Exec(q); return err }); err != nil {
			t.Errorf("Exec(%q): %v", q, err)
		}
	}
}

func TestStoreUserSQLCannotReadKV(t *testing.T) {
	_, s, _ := openStore(t, "a")
	secret := []byte("SECRET-KV-VALUE")
	s.BeginTurn()
	if err := s.Put([]cairn.Entry{{Key: "k", Value: secret}}); err != nil {
		t.Fatal(err)
	}
	s.EndTurn(true)
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	s.BeginTurn()
	defer s.EndTurn(false)
	for _, q := range []string{"SELECT * FROM _cairn_kv", "SELECT data FROM sqlite_dbpage", "SELECT * FROM dbstat"} {
		rows, err := s.Query(q)
		if err != nil {
			if cairn.ErrorCode(err) != cairn.Invalid {
				t.Errorf("%s: got %v, want Invalid", q, err)
			}
			continue
		}
		for _, row := range rows.Values {
			for _, v := range row {
				if b, ok := v.([]byte); ok && bytes.Contains(b, secret) {
					t.Errorf("%s: user SQL read a KV value", q)
				}
			}
		}
	}
	for _, q := range []string{"RELEASE turn", "ROLLBACK", "COMMIT", "ATTACH ':memory:' AS x", "PRAGMA writable_schema = ON"} {
		if _, err := s.Exec(q); cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("%s: got %v, want Invalid", q, err)
		}
	}
}

// The store keeps the alarm in memory once read or written; every way a
// write is undone must undo it there too.
func TestStoreAlarmFollowsRollbacks(t *testing.T) {
	_, s, _ := openStore(t, "alarm")
	t1 := time.Unix(1_800_000_000, 0)
	t2 := t1.Add(time.Hour)
	want := func(what string, at time.Time, set bool) {
		t.Helper()
		a, ok, err := s.Alarm()
		if err != nil {
			t.Fatal(err)
		}
		if ok != set || set && !a.At.Equal(at) {
			t.Errorf("%s: alarm %v, %v; want %v, %v", what, a.At, ok, at, set)
		}
	}
	run := func(keep bool, fn func() error) {
		t.Helper()
		s.BeginTurn()
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		if err := s.EndTurn(keep); err != nil {
			t.Fatal(err)
		}
	}
	want("new store", time.Time{}, false)
	run(true, func() error { return s.SetAlarm(cairn.Alarm{At: t1}) })
	want("set", t1, true)
	run(false, func() error { return s.SetAlarm(cairn.Alarm{At: t2}) })
	want("set, turn rolled back", t1, true)
	run(false, func() error { return s.DeleteAlarm() })
	want("deleted, turn rolled back", t1, true)
	run(true, func() error {
		if err := s.BeginTx(); err != nil {
			return err
		}
		if err := s.SetAlarm(cairn.Alarm{At: t2}); err != nil {
			return err
		}
		return s.EndTx(false)
	})
	want("set in a transaction rolled back", t1, true)
	run(true, func() error { return s.DeleteAll() })
	want("DeleteAll", time.Time{}, false)
	run(true, func() error { return s.SetAlarm(cairn.Alarm{At: t2, Retries: 3}) })
	if _, _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	want("committed", t2, true)
	if a, _, _ := s.Alarm(); a.Retries != 3 {
		t.Errorf("retries %d, want 3", a.Retries)
	}
}

// At Disk the engine extends an object's WAL with zeros ahead of SQLite,
// so that commits overwrite blocks already in the file. A crash image of
// such a WAL (the files as they are, no checkpoint, across SQLite's own
// restarts of the WAL) must recover every commit.
func TestStoreWALExtendedAhead(t *testing.T) {
	dir := t.TempDir()
	_, s, _ := openStoreIn(t, dir, cairn.Disk, "wal")
	walPath := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, "objects", "*", "*.db-wal"))
		if len(m) != 1 {
			t.Fatalf("WAL files: %v, want one", m)
		}
		return m[0]
	}
	const n = 1500 // about 3,000 frames: SQLite checkpoints and restarts the WAL twice
	value := bytes.Repeat([]byte("v"), 700)
	sizes := map[int64]bool{}
	for i := range n {
		s.BeginTurn()
		if err := s.Put([]cairn.Entry{{Key: fmt.Sprintf("k%05d", i), Value: value}}); err != nil {
			t.Fatal(err)
		}
		if err := s.EndTurn(true); err != nil {
			t.Fatal(err)
		}
		c, _, err := s.Commit()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(c); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(walPath())
		if err != nil {
			t.Fatal(err)
		}
		sizes[fi.Size()] = true
	}
	t.Logf("WAL sizes seen: %d, the largest %d bytes", len(sizes), slices.Max(slices.Collect(maps.Keys(sizes))))
	if len(sizes) < 2 {
		t.Errorf("the WAL was never extended: sizes %v", sizes)
	}
	for sz := range sizes {
		if sz%(64<<10) != 0 {
			t.Errorf("WAL size %d after a commit: not extended to a whole chunk", sz)
		}
	}
	// The crash image: both files copied as they are, the store still open.
	img := t.TempDir()
	dbPath := strings.TrimSuffix(walPath(), "-wal")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(dbPath + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, "x.db"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := zs.OpenConn(filepath.Join(img, "x.db"), zs.OpenReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var count int
	var check string
	if err := sqlitex.ExecuteTransient(conn, `SELECT count(*), max(key) FROM _cairn_kv`, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		count = stmt.ColumnInt(0)
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	if err := sqlitex.ExecuteTransient(conn, `PRAGMA integrity_check`, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		check = stmt.ColumnText(0)
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	if count != n || check != "ok" {
		t.Fatalf("crash image: %d entries, integrity %q; want %d, ok", count, check, n)
	}
}
