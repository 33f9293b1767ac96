package sqlite

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	zs "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// These tests hold the catalog to what the admin API builds on: namespace
// totals kept by triggers, the name search, and the in-place upgrade of a
// catalog an older binary wrote (G10).

// oldCatalogSchema is the catalog's schema as binaries before format 2
// created it, copied here (not taken from catalogFormat1) so that a change
// to the engine's copy cannot hide a broken upgrade.
const oldCatalogSchema = `
CREATE TABLE IF NOT EXISTS objects (
	id TEXT PRIMARY KEY,
	namespace TEXT NOT NULL,
	name TEXT NOT NULL,
	created INTEGER NOT NULL,
	last_active INTEGER NOT NULL,
	bytes INTEGER NOT NULL DEFAULT 0,
	requests INTEGER NOT NULL DEFAULT 0,
	rows_read INTEGER NOT NULL DEFAULT 0,
	rows_written INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_ns ON objects (namespace, id);
CREATE TABLE IF NOT EXISTS alarms (
	id TEXT PRIMARY KEY,
	namespace TEXT NOT NULL,
	name TEXT NOT NULL,
	at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alarms_at ON alarms (at, id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v ANY) WITHOUT ROWID;
INSERT INTO meta (k, v) VALUES ('format', 1) ON CONFLICT (k) DO NOTHING;
`

// ids hands out IDs of namespaces, by name or unique, without a runtime
// that is ever opened.
type ids struct {
	rt  *cairn.Runtime
	nss map[string]*cairn.Namespace
}

func newIDs(tb testing.TB, e *Engine) *ids {
	tb.Helper()
	return &ids{rt: cairn.NewRuntime(e), nss: map[string]*cairn.Namespace{}}
}

func (x *ids) ns(tb testing.TB, name string) *cairn.Namespace {
	tb.Helper()
	if n, ok := x.nss[name]; ok {
		return n
	}
	n, err := x.rt.Register(name, cairn.Class{New: func(*cairn.State) (any, error) { return struct{}{}, nil }})
	if err != nil {
		tb.Fatal(err)
	}
	x.nss[name] = n
	return n
}

// ref is the ref of the object name of namespace ns; unique objects (and
// names that are not valid object names) get a unique ID.
func (x *ids) ref(tb testing.TB, ns, name string, unique bool) cairn.ObjectRef {
	tb.Helper()
	n := x.ns(tb, ns)
	if !unique {
		if id, err := n.IDFromName(name); err == nil {
			return cairn.ObjectRef{Namespace: ns, ID: id, Name: name}
		}
	}
	return cairn.ObjectRef{Namespace: ns, ID: n.NewUniqueID(), Name: name}
}

// catalogRows runs a query on the engine's catalog and returns its rows as
// strings.
func catalogRows(tb testing.TB, e *Engine, q string) []string {
	tb.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	err := sqlitex.Execute(e.cat, q, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		var cols []string
		for i := range stmt.ColumnCount() {
			cols = append(cols, stmt.ColumnText(i))
		}
		out = append(out, strings.Join(cols, " "))
		return nil
	}})
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return out
}

// checkTotals compares Namespaces with a GROUP BY over the catalog.
func checkTotals(tb testing.TB, e *Engine, when string) {
	tb.Helper()
	want := catalogRows(tb, e, `SELECT namespace, count(*), sum(bytes), sum(requests), sum(rows_read), sum(rows_written)
		FROM objects GROUP BY namespace ORDER BY namespace`)
	nss, err := e.Namespaces(context.Background())
	if err != nil {
		tb.Fatalf("%s: Namespaces: %v", when, err)
	}
	var got []string
	for _, n := range nss {
		got = append(got, fmt.Sprintf("%s %d %d %d %d %d", n.Name, n.Objects, n.Bytes, n.Usage.Requests, n.Usage.RowsRead, n.Usage.RowsWritten))
	}
	if !slices.Equal(got, want) {
		tb.Fatalf("%s: Namespaces\n got %q\nwant %q (GROUP BY)", when, got, want)
	}
	// No row is left behind for a namespace whose objects are all gone.
	if n := catalogRows(tb, e, `SELECT count(*) FROM namespaces`)[0]; n != fmt.Sprint(len(want)) {
		tb.Fatalf("%s: the totals table holds %s rows, want %d", when, n, len(want))
	}
}

func openEngine(tb testing.TB, dir string) *Engine {
	tb.Helper()
	e, err := Open(dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// randomCatalogOps inserts, updates (usage deltas, sizes) and deletes
// catalog entries at random over three namespaces, checking the totals
// after each step.
func randomCatalogOps(t *testing.T, e *Engine, x *ids, r *rand.Rand, n int, live *[]cairn.ObjectRef) {
	t.Helper()
	nss := []string{"a", "b", "c"}
	for i := range n {
		switch op := r.IntN(10); {
		case op < 4 || len(*live) == 0:
			ref := x.ref(t, nss[r.IntN(len(nss))], fmt.Sprintf("o-%d", r.IntN(1000)), r.IntN(4) == 0)
			if err := e.addObject(ref); err != nil { // an existing name is a no-op
				t.Fatal(err)
			}
			if !slices.ContainsFunc(*live, func(o cairn.ObjectRef) bool { return o.ID == ref.ID }) {
				*live = append(*live, ref)
			}
		case op < 8:
			var us []cairn.Usage
			for range 1 + r.IntN(5) {
				ref := (*live)[r.IntN(len(*live))]
				bytes := int64(-1)
				if r.IntN(2) == 0 {
					bytes = r.Int64N(1 << 20)
				}
				us = append(us, cairn.Usage{Ref: ref, Bytes: bytes, LastActive: time.Unix(0, r.Int64()),
					Delta: cairn.Counters{Requests: r.Int64N(10), RowsRead: r.Int64N(100), RowsWritten: r.Int64N(100)}})
			}
			if r.IntN(5) == 0 { // usage of an object no longer in the catalog
				us = append(us, cairn.Usage{Ref: x.ref(t, "a", "gone", true), Bytes: 7, Delta: cairn.Counters{Requests: 1}})
			}
			if err := e.RecordUsage(us); err != nil {
				t.Fatal(err)
			}
		default:
			k := r.IntN(len(*live))
			if err := e.removeObject((*live)[k].ID); err != nil {
				t.Fatal(err)
			}
			*live = slices.Delete(*live, k, k+1)
		}
		checkTotals(t, e, fmt.Sprintf("step %d", i))
	}
}

func TestNamespaceTotalsFollowTheCatalog(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir)
	x := newIDs(t, e)
	r := rand.New(rand.NewPCG(1, 2))
	var live []cairn.ObjectRef
	checkTotals(t, e, "empty catalog")
	randomCatalogOps(t, e, x, r, 600, &live)
	// Every object of a namespace deleted: it is no longer listed.
	for _, ref := range live {
		if ref.Namespace == "b" {
			if err := e.removeObject(ref.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	live = slices.DeleteFunc(live, func(ref cairn.ObjectRef) bool { return ref.Namespace == "b" })
	checkTotals(t, e, "namespace b emptied")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = openEngine(t, dir)
	checkTotals(t, e, "after reopen")
	randomCatalogOps(t, e, newIDs(t, e), r, 200, &live)
}

// writeOldCatalog creates dir/catalog.db as a format 1 binary would have,
// holding objects of two namespaces (kv's user-006 with an alarm).
func writeOldCatalog(t *testing.T, dir string, extra string) {
	t.Helper()
	conn, err := zs.OpenConn(filepath.Join(dir, "catalog.db"), zs.OpenReadWrite|zs.OpenCreate)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA journal_mode=WAL", nil); err != nil {
		t.Fatal(err)
	}
	if err := sqlitex.ExecuteScript(conn, oldCatalogSchema+extra, nil); err != nil {
		t.Fatal(err)
	}
	x := newIDs(t, nil)
	for i := range 300 {
		ns := []string{"kv", "agent"}[i%2]
		ref := x.ref(t, ns, fmt.Sprintf("user-%03d", i), false)
		err := sqlitex.Execute(conn, `INSERT INTO objects (id, namespace, name, created, last_active, bytes, requests, rows_read, rows_written)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, &sqlitex.ExecOptions{Args: []any{ref.ID.String(), ns, ref.Name, i, i, 4096 * i, i, 2 * i, 3 * i}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 6 {
			err := sqlitex.Execute(conn, `INSERT INTO alarms (id, namespace, name, at) VALUES (?, ?, ?, ?)`,
				&sqlitex.ExecOptions{Args: []any{ref.ID.String(), ns, ref.Name, 42}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestCatalogUpgradeFromFormat1(t *testing.T) {
	dir := t.TempDir()
	writeOldCatalog(t, dir, "")

	e := openEngine(t, dir)
	if got := catalogRows(t, e, `SELECT v FROM meta WHERE k = 'format'`); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("format after upgrade: got %q, want 2", got)
	}
	checkTotals(t, e, "after upgrade")
	nss, err := e.Namespaces(context.Background())
	if err != nil || len(nss) != 2 || nss[0].Name != "agent" || nss[0].Objects != 150 || nss[1].Name != "kv" || nss[1].Objects != 150 {
		t.Fatalf("namespaces after upgrade: got %+v, %v; want agent and kv with 150 objects each", nss, err)
	}
	// The old entries are found by name, with their alarm.
	got, err := e.ObjectsByName(context.Background(), "kv", "user-00", "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].Name != "user-000" || got[3].Name != "user-006" || got[3].Alarm.IsZero() || got[3].Bytes != 6*4096 {
		t.Fatalf("search after upgrade: got %+v", got)
	}
	plan := catalogRows(t, e, `EXPLAIN QUERY PLAN SELECT id FROM objects WHERE namespace = 'kv' AND name >= 'a' AND name < 'b' ORDER BY name, id`)
	if !strings.Contains(strings.Join(plan, "\n"), "objects_name") {
		t.Errorf("a name range does not use the name index: %q", plan)
	}

	// The upgraded catalog keeps working, and opens again as it is.
	x := newIDs(t, e)
	var live []cairn.ObjectRef
	for _, o := range catalogRows(t, e, `SELECT namespace, name FROM objects ORDER BY id`) {
		ns, name, _ := strings.Cut(o, " ")
		live = append(live, x.ref(t, ns, name, false))
	}
	randomCatalogOps(t, e, x, rand.New(rand.NewPCG(3, 4)), 200, &live)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	checkTotals(t, e, "after reopening the upgraded catalog")
	if got := catalogRows(t, e, `SELECT v FROM meta WHERE k = 'format'`); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("format after reopen: got %q, want 2", got)
	}
}

// An upgrade that fails part way changes nothing: the next open upgrades
// the catalog as it was.
func TestCatalogUpgradeIsOneTransaction(t *testing.T) {
	dir := t.TempDir()
	// A trigger with the name of the upgrade's last trigger makes it fail
	// after the totals table was created and filled.
	writeOldCatalog(t, dir, `CREATE TRIGGER objects_move_totals AFTER DELETE ON alarms BEGIN SELECT 1; END;`)
	if e, err := Open(dir, cairn.Process); err == nil {
		e.Close()
		t.Fatal("open succeeded with a conflicting trigger")
	} else if !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("open: got %v, want an error upgrading to format 2", err)
	}

	conn, err := zs.OpenConn(filepath.Join(dir, "catalog.db"), zs.OpenReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	var schema []string
	err = sqlitex.Execute(conn, `SELECT type || ' ' || name FROM sqlite_schema ORDER BY name`, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		schema = append(schema, stmt.ColumnText(0))
		return nil
	}})
	if err == nil {
		err = sqlitex.Execute(conn, `SELECT v FROM meta WHERE k = 'format'`, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			schema = append(schema, "format "+stmt.ColumnText(0))
			return nil
		}})
	}
	if err == nil {
		err = sqlitex.ExecuteTransient(conn, `DROP TRIGGER objects_move_totals`, nil)
	}
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"table alarms", "index alarms_at", "table meta", "table objects", "trigger objects_move_totals", "index objects_ns", "format 1"}
	if !slices.Equal(schema, want) {
		t.Fatalf("catalog after a failed upgrade:\n got %q\nwant %q (as before it)", schema, want)
	}

	e := openEngine(t, dir)
	checkTotals(t, e, "after the retried upgrade")
}

func TestCatalogOfNewerFormatIsRefused(t *testing.T) {
	dir := t.TempDir()
	writeOldCatalog(t, dir, `UPDATE meta SET v = 99 WHERE k = 'format';`)
	e, err := Open(dir, cairn.Process)
	if err == nil {
		e.Close()
		t.Fatal("a catalog of format 99 was opened")
	}
	if !strings.Contains(err.Error(), "format 99") {
		t.Fatalf("open: got %v, want an error naming format 99", err)
	}
}

func TestObjectsByName(t *testing.T) {
	e := openEngine(t, t.TempDir())
	x := newIDs(t, e)
	names := []string{
		"", "", "", // unique objects without a name
		"a", "a", "A", "ab", "a%", "a_c", "abc", "a\x00b", "a/b", "a/b/c",
		"a\xff", "a\xff\xff", "a\xffb", "\xff", "\xff\xff", "\xff\x00", "b",
		"é", "éa", "e\u0301", "日本", "日本語", "日", "🙂", "🙂🙂", "z",
	}
	var all []cairn.ObjectInfo
	for i, name := range names {
		// Some names twice, as unique objects (same name, other IDs).
		ref := x.ref(t, "kv", name, i%2 == 1 || name == "")
		if err := e.addObject(ref); err != nil {
			t.Fatal(err)
		}
		all = append(all, cairn.ObjectInfo{Name: ref.Name, ID: ref.ID})
	}
	// Another namespace's objects are never listed.
	for _, name := range []string{"a", "ab", "\xff", ""} {
		if err := e.addObject(x.ref(t, "other", name, name == "")); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortFunc(all, func(a, b cairn.ObjectInfo) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID.String(), b.ID.String()))
	})

	key := func(o cairn.ObjectInfo) string { return fmt.Sprintf("%q/%s", o.Name, o.ID.String()[:8]) }
	for _, prefix := range []string{"", "a", "A", "a%", "a_", "a\x00", "a/", "a\xff", "a\xff\xff", "\xff", "\xff\xff",
		"\xff\xff\xff", "é", "e", "\xc3", "日", "日本", "\xe6\x97", "🙂", "\xf0", "nobody", "z", "zz"} {
		var want []string
		for _, o := range all {
			if strings.HasPrefix(o.Name, prefix) {
				want = append(want, key(o))
			}
		}
		for _, limit := range []int{1, 2, 3, 100} {
			var got []string
			afterName, afterID := "", ""
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("prefix %q, limit %d: paging does not end (%q so far)", prefix, limit, got)
				}
				page, err := e.ObjectsByName(context.Background(), "kv", prefix, afterName, afterID, limit)
				if err != nil {
					t.Fatalf("prefix %q: %v", prefix, err)
				}
				if len(page) > limit {
					t.Fatalf("prefix %q: got %d entries, limit %d", prefix, len(page), limit)
				}
				for _, o := range page {
					if o.Namespace != "kv" {
						t.Fatalf("prefix %q: got an object of namespace %q", prefix, o.Namespace)
					}
					got = append(got, key(o))
				}
				if len(page) < limit {
					break
				}
				afterName, afterID = page[len(page)-1].Name, page[len(page)-1].ID.String()
			}
			if !slices.Equal(got, want) {
				t.Errorf("prefix %q, limit %d:\n got %q\nwant %q", prefix, limit, got, want)
			}
		}
	}

	// A cursor before the prefix's range starts at the range; one after it
	// finds nothing.
	got, err := e.ObjectsByName(context.Background(), "kv", "b", "a", "", 10)
	if err != nil || len(got) != 1 || got[0].Name != "b" {
		t.Errorf("cursor before the range: got %v, %v; want b", got, err)
	}
	got, err = e.ObjectsByName(context.Background(), "kv", "a/", "a0", "", 10)
	if err != nil || len(got) != 0 {
		t.Errorf("cursor after the range: got %v, %v; want nothing", got, err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		prefix string
		want   []byte
	}{
		{"", nil},
		{"a", []byte("b")},
		{"ab", []byte("ac")},
		{"a\xff", []byte("b")},
		{"a\xff\xff", []byte("b")},
		{"\xff", nil},
		{"\xff\xff", nil},
		{"\xffa", []byte("\xffb")},
		{"é", []byte("\xc3\xaa")},
		{"a\x00", []byte("a\x01")},
	} {
		if got := prefixEnd(c.prefix); !slices.Equal(got, c.want) {
			t.Errorf("prefixEnd(%q) = %q, want %q", c.prefix, got, c.want)
		}
	}
}
