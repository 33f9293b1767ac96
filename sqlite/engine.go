// Package sqlite is cairn's storage engine: one SQLite database per object
// (WAL mode, KV and SQL in the same file) and a node catalog, also SQLite,
// that indexes objects, alarms and usage.
//
// Data directory layout (object names never appear in paths, G1):
//
//	DIR/catalog.db                    the node catalog (+ -wal, -shm)
//	DIR/objects/ab/abcd…(64).db       one object's database (+ -wal)
//
// where abcd… is the object's 64-hex-character ID. An object's database is
// opened in exclusive locking mode (one connection per object, and nothing
// else may open it while cairn runs), so it has no -shm file.
//
// Commits are written with synchronous=NORMAL: a commit reaches the OS
// (it survives kill -9) without an fsync, and checkpoints fsync. Durability
// at cairn.Disk comes from Store.Sync, which the runtime calls from another
// goroutine while the object goes on with its next turns. Store.Sync hands
// the request to the engine's node-wide sync stage, which makes the
// requests of all objects that arrive during one sync durable with the
// next (see SyncMode).
package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-dev/cairn"
	zs "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// Engine implements cairn.Engine on a data directory.
type Engine struct {
	dir     string
	objDir  string
	level   cairn.Durability
	mu      sync.Mutex // guards cat and the catalog's cached statements
	cat     *zs.Conn
	catWAL  *os.File
	dirs    sync.Map // fan-out directories known to exist
	closed  bool
	nowFunc func() time.Time
	sync    *syncer // the sync stage: stores' and the catalog's syncs

	tmplOnce sync.Once
	tmpl     []byte
	tmplErr  error
}

// Options are an Engine's tunables. The zero value is the default.
type Options struct {
	// Sync is how commits at cairn.Disk become durable. Default SyncAuto.
	Sync SyncMode
}

// Open opens (creating if needed) the data directory dir, with the default
// Options. level is the durability of catalog writes that must not be lost
// (alarm hints).
func Open(dir string, level cairn.Durability) (*Engine, error) {
	return OpenWith(dir, level, Options{})
}

// OpenWith is Open with options.
func OpenWith(dir string, level cairn.Durability, o Options) (*Engine, error) {
	raiseFileLimit()
	objDir := filepath.Join(dir, "objects")
	if err := os.MkdirAll(objDir, 0o700); err != nil {
		return nil, fmt.Errorf("open data directory: %w", err)
	}
	e := &Engine{dir: dir, objDir: objDir, level: level, nowFunc: time.Now}
	path := filepath.Join(dir, "catalog.db")
	conn, err := openConn(path, zs.OpenReadWrite|zs.OpenCreate|zs.OpenNoMutex, nil)
	if err != nil {
		return nil, fmt.Errorf("open catalog: %w", err)
	}
	e.cat = conn
	if err := pragmas(conn, "journal_mode=WAL", "synchronous=NORMAL"); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("open catalog: %w", err)
	}
	if err := migrateCatalog(conn); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("open catalog: %w", err)
	}
	wal, err := os.OpenFile(path+"-wal", os.O_RDWR, 0)
	if err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("open catalog wal: %w", err)
	}
	e.catWAL = wal
	if e.sync, err = newSyncer(dir, o.Sync); err != nil {
		wal.Close()
		closeConn(conn)
		return nil, err
	}
	if level == cairn.Disk {
		if err := fdatasync(e.catWAL); err != nil {
			e.Close()
			return nil, err
		}
		if err := syncDir(dir); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// pragmas runs PRAGMA statements outside any transaction.
func pragmas(conn *zs.Conn, ps ...string) error {
	for _, p := range ps {
		if err := sqlitex.ExecuteTransient(conn, "PRAGMA "+p, nil); err != nil {
			return err
		}
	}
	return nil
}

// catalogFormat1 is the catalog as the first binaries created it (format 1
// in the meta table). Every open runs it, which creates a new catalog and
// changes nothing in an existing one, and then the migrations from the
// catalog's format on. Never edit it: a change of schema is a new entry of
// catalogMigrations.
const catalogFormat1 = `
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

// catalogMigrations[i] takes the catalog from format i+1 to format i+2.
// migrateCatalog runs those a catalog lacks in one transaction with the
// change of format, so a crash leaves the catalog as it was or fully
// upgraded. A migration is a plain script (no IF NOT EXISTS): it runs once.
var catalogMigrations = []string{
	// Format 2: namespace totals kept by triggers, so that Namespaces reads
	// one row per namespace instead of summing the catalog; and the name
	// index ObjectsByName reads its range from.
	`
CREATE TABLE namespaces (
	namespace TEXT PRIMARY KEY,
	objects INTEGER NOT NULL,
	bytes INTEGER NOT NULL,
	requests INTEGER NOT NULL,
	rows_read INTEGER NOT NULL,
	rows_written INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO namespaces (namespace, objects, bytes, requests, rows_read, rows_written)
	SELECT namespace, count(*), sum(bytes), sum(requests), sum(rows_read), sum(rows_written)
	FROM objects GROUP BY namespace;
CREATE TRIGGER objects_insert_totals AFTER INSERT ON objects BEGIN
	INSERT INTO namespaces (namespace, objects, bytes, requests, rows_read, rows_written)
		VALUES (new.namespace, 1, new.bytes, new.requests, new.rows_read, new.rows_written)
		ON CONFLICT (namespace) DO UPDATE SET objects = objects + 1,
			bytes = bytes + excluded.bytes, requests = requests + excluded.requests,
			rows_read = rows_read + excluded.rows_read, rows_written = rows_written + excluded.rows_written;
END;
CREATE TRIGGER objects_delete_totals AFTER DELETE ON objects BEGIN
	UPDATE namespaces SET objects = objects - 1,
		bytes = bytes - old.bytes, requests = requests - old.requests,
		rows_read = rows_read - old.rows_read, rows_written = rows_written - old.rows_written
		WHERE namespace = old.namespace;
	DELETE FROM namespaces WHERE namespace = old.namespace AND objects <= 0;
END;
CREATE TRIGGER objects_update_totals AFTER UPDATE OF bytes, requests, rows_read, rows_written ON objects
	WHEN old.namespace = new.namespace BEGIN
	UPDATE namespaces SET
		bytes = bytes + new.bytes - old.bytes, requests = requests + new.requests - old.requests,
		rows_read = rows_read + new.rows_read - old.rows_read,
		rows_written = rows_written + new.rows_written - old.rows_written
		WHERE namespace = new.namespace;
END;
CREATE TRIGGER objects_move_totals AFTER UPDATE OF namespace ON objects
	WHEN old.namespace <> new.namespace BEGIN
	UPDATE namespaces SET objects = objects - 1,
		bytes = bytes - old.bytes, requests = requests - old.requests,
		rows_read = rows_read - old.rows_read, rows_written = rows_written - old.rows_written
		WHERE namespace = old.namespace;
	DELETE FROM namespaces WHERE namespace = old.namespace AND objects <= 0;
	INSERT INTO namespaces (namespace, objects, bytes, requests, rows_read, rows_written)
		VALUES (new.namespace, 1, new.bytes, new.requests, new.rows_read, new.rows_written)
		ON CONFLICT (namespace) DO UPDATE SET objects = objects + 1,
			bytes = bytes + excluded.bytes, requests = requests + excluded.requests,
			rows_read = rows_read + excluded.rows_read, rows_written = rows_written + excluded.rows_written;
END;
CREATE INDEX objects_name ON objects (namespace, name, id);
`,
}

// migrateCatalog creates the catalog or brings it to the newest format,
// in one transaction. A catalog of a newer format than this binary knows
// is refused rather than served half understood.
func migrateCatalog(conn *zs.Conn) (err error) {
	if err := sqlitex.ExecuteTransient(conn, "BEGIN IMMEDIATE", nil); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			sqlitex.ExecuteTransient(conn, "ROLLBACK", nil)
			return
		}
		err = sqlitex.ExecuteTransient(conn, "COMMIT", nil)
	}()
	if err := sqlitex.ExecuteScript(conn, catalogFormat1, nil); err != nil {
		return err
	}
	format := 0
	err = sqlitex.Execute(conn, `SELECT v FROM meta WHERE k = 'format'`, &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		format = stmt.ColumnInt(0)
		return nil
	}})
	if err != nil {
		return err
	}
	newest := len(catalogMigrations) + 1
	if format < 1 || format > newest {
		return fmt.Errorf("catalog format %d: this binary knows formats 1 to %d", format, newest)
	}
	for f := format; f < newest; f++ {
		if err := sqlitex.ExecuteScript(conn, catalogMigrations[f-1], nil); err != nil {
			return fmt.Errorf("upgrade catalog to format %d: %w", f+1, err)
		}
	}
	return sqlitex.Execute(conn, `UPDATE meta SET v = ? WHERE k = 'format'`, &sqlitex.ExecOptions{Args: []any{newest}})
}

// Dir returns the data directory.
func (e *Engine) Dir() string { return e.dir }

// Close implements cairn.Engine.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.sync.close()
	var errs []error
	if e.level == cairn.Disk {
		// Checkpoint with fsync before the WAL goes away.
		if err := sqlitex.ExecuteTransient(e.cat, "PRAGMA synchronous=FULL", nil); err != nil {
			errs = append(errs, err)
		}
	}
	if e.catWAL != nil {
		e.catWAL.Close()
	}
	if err := closeConn(e.cat); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncCatalog makes every catalog write made so far durable, through the
// sync stage: concurrent callers (and objects' syncs) share one sync.
// epoch is the stage's epoch from before the caller's write.
func (e *Engine) syncCatalog(epoch uint64) error {
	if err := e.sync.sync([]syncFile{{f: e.catWAL}}, epoch, false); err != nil {
		return fmt.Errorf("sync catalog: %w", err)
	}
	return nil
}

// SyncMode returns the sync mode in effect: SyncAuto falls back to
// SyncFiles where syncfs cannot be trusted.
func (e *Engine) SyncMode() SyncMode { return e.sync.mode }

// SyncStats returns the counters of the engine's sync stage.
func (e *Engine) SyncStats() SyncStats { return e.sync.stats() }

// objectPath returns the directory and file of an object's database. Only
// the hex ID is used.
func (e *Engine) objectPath(id cairn.ID) (dir, file string) {
	h := id.String()
	dir = filepath.Join(e.objDir, h[0:2])
	return dir, filepath.Join(dir, h+".db")
}

// ensureDir creates the fan-out directory of an object once.
func (e *Engine) ensureDir(dir string) error {
	if _, ok := e.dirs.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if e.level == cairn.Disk {
		if err := syncDir(dir); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	e.dirs.Store(dir, true)
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// writeTemplate creates path holding an empty object database (WAL mode,
// reserved tables, no identity rows: open finishes the creation). It
// writes a temporary file and renames it, so that path never holds half a
// database.
func (e *Engine) writeTemplate(path string) error {
	e.tmplOnce.Do(func() { e.tmpl, e.tmplErr = buildTemplate(filepath.Join(e.dir, "template.tmp")) })
	if e.tmplErr != nil {
		return e.tmplErr
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(e.tmpl)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// buildTemplate makes the template database at path and returns its bytes.
func buildTemplate(path string) ([]byte, error) {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		os.Remove(p)
	}
	defer func() {
		for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
			os.Remove(p)
		}
	}()
	conn, err := openConn(path, zs.OpenReadWrite|zs.OpenCreate|zs.OpenNoMutex, nil)
	if err != nil {
		return nil, fmt.Errorf("build template: %w", err)
	}
	err = pragmas(conn, "journal_mode=WAL")
	if err == nil {
		err = sqlitex.ExecuteScript(conn, storeSchema, nil)
	}
	if cerr := closeConn(conn); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("build template: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("build template: %w", err)
	}
	return b, nil
}

// FilesPerObject is how many file descriptors an object in memory holds:
// its database and its WAL.
const FilesPerObject = 2

// MaxObjects returns how many objects fit in memory under the process's
// open-file limit (after Open raised it), leaving room for sockets and the
// catalog. Runtime.MaxActive should not exceed it.
func MaxObjects() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 1 << 30
	}
	const reserve = 1024 // listeners, sockets, the catalog, logs
	if l.Cur <= reserve+FilesPerObject {
		return 1
	}
	return int((l.Cur - reserve) / FilesPerObject)
}

// raiseFileLimit lifts the soft limit on open files to the hard limit: each
// active object holds three descriptors.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// addObject records a newly created object in the catalog.
func (e *Engine) addObject(ref cairn.ObjectRef) error {
	now := e.nowFunc().UnixNano()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	return sqlitex.Execute(e.cat, `INSERT INTO objects (id, namespace, name, created, last_active) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, &sqlitex.ExecOptions{Args: []any{ref.ID.String(), ref.Namespace, ref.Name, now, now}})
}

// removeObject deletes an object's catalog entries.
func (e *Engine) removeObject(id cairn.ID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	h := id.String()
	if err := sqlitex.Execute(e.cat, `DELETE FROM objects WHERE id = ?`, &sqlitex.ExecOptions{Args: []any{h}}); err != nil {
		return err
	}
	return sqlitex.Execute(e.cat, `DELETE FROM alarms WHERE id = ?`, &sqlitex.ExecOptions{Args: []any{h}})
}

// Objects implements cairn.Engine.
func (e *Engine) Objects(ctx context.Context, ns string, after string, limit int) ([]cairn.ObjectInfo, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []cairn.ObjectInfo
	err := sqlitex.Execute(e.cat, selectObjects+`o.namespace = ? AND o.id > ? ORDER BY o.id LIMIT ?`,
		&sqlitex.ExecOptions{Args: []any{ns, after, limit}, ResultFunc: func(stmt *zs.Stmt) error {
			info, err := scanObject(stmt)
			if err != nil {
				return err
			}
			out = append(out, info)
			return nil
		}})
	return out, err
}

// ObjectsByName implements cairn.Engine: one range of the objects_name
// index, from the later of prefix and the cursor up to prefixEnd(prefix)
// (none when prefix is empty or all 0xFF bytes).
// Names compare as bytes (SQLite's BINARY collation), as Go strings do;
// LIKE is not used, as it folds case and gives '%' and '_' meaning.
func (e *Engine) ObjectsByName(ctx context.Context, ns, prefix, afterName, afterID string, limit int) ([]cairn.ObjectInfo, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	q := selectObjects + `o.namespace = ? AND o.name >= ?`
	args := []any{ns, prefix}
	if afterName >= prefix {
		// The cursor is the lower bound; the zero cursor ("", "") sorts
		// before every entry, whose IDs are never empty.
		q = selectObjects + `o.namespace = ? AND (o.name, o.id) > (?, ?)`
		args = []any{ns, afterName, afterID}
	}
	if end := prefixEnd(prefix); end != nil {
		// Bound as text (a Go string): a blob sorts after all text.
		q += ` AND o.name < ?`
		args = append(args, string(end))
	}
	q += ` ORDER BY o.name, o.id LIMIT ?`
	args = append(args, limit)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []cairn.ObjectInfo
	err := sqlitex.Execute(e.cat, q, &sqlitex.ExecOptions{Args: args, ResultFunc: func(stmt *zs.Stmt) error {
		info, err := scanObject(stmt)
		if err != nil {
			return err
		}
		out = append(out, info)
		return nil
	}})
	return out, err
}

// Object implements cairn.Engine.
func (e *Engine) Object(ctx context.Context, ns string, id cairn.ID) (cairn.ObjectInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out cairn.ObjectInfo
	found := false
	err := sqlitex.Execute(e.cat, selectObjects+`o.id = ? AND o.namespace = ?`,
		&sqlitex.ExecOptions{Args: []any{id.String(), ns}, ResultFunc: func(stmt *zs.Stmt) error {
			info, err := scanObject(stmt)
			out, found = info, true
			return err
		}})
	if err != nil {
		return out, err
	}
	if !found {
		return out, cairn.Errorf(cairn.NotFound, "no object %s in namespace %q", id, ns)
	}
	return out, nil
}

// selectObjects selects catalog entries in scanObject's column order; a
// WHERE clause follows.
const selectObjects = `SELECT o.id, o.namespace, o.name, o.created, o.last_active, o.bytes,
	o.requests, o.rows_read, o.rows_written, a.at
	FROM objects o LEFT JOIN alarms a ON a.id = o.id
	WHERE `

func scanObject(stmt *zs.Stmt) (cairn.ObjectInfo, error) {
	ns := stmt.ColumnText(1)
	id, err := cairn.ParseIDOf(ns, stmt.ColumnText(0))
	if err != nil {
		return cairn.ObjectInfo{}, fmt.Errorf("catalog holds a bad ID: %w", err)
	}
	info := cairn.ObjectInfo{
		Namespace:  ns,
		ID:         id,
		Name:       stmt.ColumnText(2),
		Created:    time.Unix(0, stmt.ColumnInt64(3)),
		LastActive: time.Unix(0, stmt.ColumnInt64(4)),
		Bytes:      stmt.ColumnInt64(5),
		Usage: cairn.Counters{
			Requests:    stmt.ColumnInt64(6),
			RowsRead:    stmt.ColumnInt64(7),
			RowsWritten: stmt.ColumnInt64(8),
		},
	}
	if !stmt.ColumnIsNull(9) {
		info.Alarm = time.Unix(0, stmt.ColumnInt64(9))
	}
	return info, nil
}

// Namespaces implements cairn.Engine. It reads the totals the catalog's
// triggers keep, one row per namespace, however many objects there are.
func (e *Engine) Namespaces(ctx context.Context) ([]cairn.NamespaceInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []cairn.NamespaceInfo
	err := sqlitex.Execute(e.cat, `SELECT namespace, objects, bytes, requests, rows_read, rows_written
		FROM namespaces WHERE objects > 0 ORDER BY namespace`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			out = append(out, cairn.NamespaceInfo{
				Name: stmt.ColumnText(0), Objects: stmt.ColumnInt64(1), Bytes: stmt.ColumnInt64(2),
				Usage: cairn.Counters{Requests: stmt.ColumnInt64(3), RowsRead: stmt.ColumnInt64(4), RowsWritten: stmt.ColumnInt64(5)},
			})
			return nil
		}})
	return out, err
}

// HintAlarm implements cairn.Engine. At cairn.Disk it syncs the catalog.
func (e *Engine) HintAlarm(ref cairn.ObjectRef, at time.Time) error {
	epoch := e.sync.epoch()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	err := sqlitex.Execute(e.cat, `INSERT INTO alarms (id, namespace, name, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET at = min(at, excluded.at)`,
		&sqlitex.ExecOptions{Args: []any{ref.ID.String(), ref.Namespace, ref.Name, at.UnixNano()}})
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("hint alarm: %w", err)
	}
	if e.level == cairn.Disk {
		return e.syncCatalog(epoch)
	}
	return nil
}

// ClearAlarm implements cairn.Engine.
func (e *Engine) ClearAlarm(id cairn.ID, at time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	if at.IsZero() {
		return sqlitex.Execute(e.cat, `DELETE FROM alarms WHERE id = ?`, &sqlitex.ExecOptions{Args: []any{id.String()}})
	}
	return sqlitex.Execute(e.cat, `UPDATE alarms SET at = ? WHERE id = ?`, &sqlitex.ExecOptions{Args: []any{at.UnixNano(), id.String()}})
}

// DueAlarms implements cairn.Engine.
func (e *Engine) DueAlarms(now time.Time, limit int) ([]cairn.AlarmHint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	var out []cairn.AlarmHint
	err := sqlitex.Execute(e.cat, `SELECT id, namespace, name, at FROM alarms WHERE at <= ? ORDER BY at, id LIMIT ?`,
		&sqlitex.ExecOptions{Args: []any{now.UnixNano(), limit}, ResultFunc: func(stmt *zs.Stmt) error {
			ns := stmt.ColumnText(1)
			id, err := cairn.ParseIDOf(ns, stmt.ColumnText(0))
			if err != nil {
				return fmt.Errorf("alarm index holds a bad ID: %w", err)
			}
			out = append(out, cairn.AlarmHint{
				Ref: cairn.ObjectRef{Namespace: ns, ID: id, Name: stmt.ColumnText(2)},
				At:  time.Unix(0, stmt.ColumnInt64(3)),
			})
			return nil
		}})
	return out, err
}

// NextAlarm implements cairn.Engine.
func (e *Engine) NextAlarm() (time.Time, bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return time.Time{}, false, cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	var at time.Time
	ok := false
	err := sqlitex.Execute(e.cat, `SELECT at FROM alarms ORDER BY at LIMIT 1`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			at, ok = time.Unix(0, stmt.ColumnInt64(0)), true
			return nil
		}})
	return at, ok, err
}

// RecordUsage implements cairn.Engine: one transaction for the batch.
func (e *Engine) RecordUsage(us []cairn.Usage) (err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	defer sqlitex.Save(e.cat)(&err)
	for _, u := range us {
		err := sqlitex.Execute(e.cat, `UPDATE objects SET
				requests = requests + ?, rows_read = rows_read + ?, rows_written = rows_written + ?,
				bytes = CASE WHEN ? >= 0 THEN ? ELSE bytes END,
				last_active = max(last_active, ?)
			WHERE id = ?`,
			&sqlitex.ExecOptions{Args: []any{u.Delta.Requests, u.Delta.RowsRead, u.Delta.RowsWritten,
				u.Bytes, u.Bytes, u.LastActive.UnixNano(), u.Ref.ID.String()}})
		if err != nil {
			return fmt.Errorf("record usage: %w", err)
		}
	}
	return nil
}
