package sqlite_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
)

// These tests hold the engine to the cairn.Store contract directly, below
// the runtime: where a store's files appear, turns and commits, and what
// user SQL may do.

// openStore opens the engine on a temporary directory and the store of
// object name in namespace "t".
func openStore(tb testing.TB, name string) (*sqlite.Engine, cairn.Store, cairn.ObjectRef) {
	tb.Helper()
	eng, err := sqlite.Open(tb.TempDir(), cairn.Process)
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
