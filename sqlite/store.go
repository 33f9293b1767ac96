package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
	zs "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// store implements cairn.Store for one object.
type store struct {
	e    *Engine
	ref  cairn.ObjectRef
	opts cairn.StoreOptions
	dir  string
	path string

	conn    *zs.Conn // nil until the database exists and is opened
	created bool     // the database was created by this store: sync the directory
	auth    *authorizer

	inTx    bool // the group's transaction is open (BEGIN)
	turn    bool // a turn is in progress
	turnSP  bool // the turn's savepoint is open
	txDepth int  // explicit savepoints inside the turn's
	dirty   bool // writes wait for Commit
	broken  error
	seq     uint64

	// The object's alarm as storage holds it now (committed or not), when
	// alarmKnown: read once, then kept by SetAlarm and DeleteAlarm, and
	// forgotten by anything that may undo a write (a rollback, a failed
	// statement) or remove it (DeleteAll, Close). The runtime reads the
	// alarm around every commit that touched it, and leases on every call.
	alarm      cairn.Alarm
	alarmOK    bool
	alarmKnown bool

	user     map[string]*zs.Stmt // prepared user statements (authorized as user SQL)
	kinds    map[string]stmtKind // what each cached user statement does
	pageSize int64
	bytes    int64
	bytesAt  time.Time // when bytes was last read

	// Sync state, touched only by Sync (one goroutine at a time).
	walSynced bool

	// The size the WAL was last extended to with zeros (see growWAL).
	walAlloc int64

	// What Sync must cover, shared by Commit and Sync.
	syncMu    sync.Mutex
	committed uint64 // seq of the last commit
	unsynced  bool   // writes wait for a Sync
	epoch     uint64 // the sync stage's epoch before the oldest of them
}

const userStmtCacheSize = 64

// connMu works around a race in zombiezen.com/go/sqlite v1.4.2: Conn.Close
// frees the sqlite3 handle and only then drops the handle's entry from the
// package's authorizer map, so a connection opened in between at the same
// address loses its authorizer, and SQLite then calls a nil one (SIGSEGV,
// seen by the benchmarks when creating objects). Opening with the
// authorizer set, and closing, are therefore serialized; both are short.
var connMu sync.Mutex

// openConn opens a connection and installs its authorizer.
func openConn(path string, flags zs.OpenFlags, auth zs.Authorizer) (*zs.Conn, error) {
	connMu.Lock()
	defer connMu.Unlock()
	conn, err := zs.OpenConn(path, flags)
	if err != nil {
		return nil, err
	}
	if auth != nil {
		if err := conn.SetAuthorizer(auth); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// closeConn closes a connection opened by openConn.
func closeConn(conn *zs.Conn) error {
	connMu.Lock()
	defer connMu.Unlock()
	return conn.Close()
}

// OpenStore implements cairn.Engine.
func (e *Engine) OpenStore(ctx context.Context, ref cairn.ObjectRef, opts cairn.StoreOptions) (cairn.Store, error) {
	dir, path := e.objectPath(ref.ID)
	s := &store{e: e, ref: ref, opts: opts, dir: dir, path: path}
	if _, err := os.Stat(path); err == nil {
		if err := s.open(false); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// open opens (creating, if create) the object's database and configures it.
//
// Creation is crash-safe: the catalog entry is written before the file, and
// the `_cairn_meta` identity rows are written last, as the mark of a
// finished creation. Opening a file without them (a crash mid-creation)
// finishes the creation.
func (s *store) open(create bool) error {
	s.auth = &authorizer{}
	flags := zs.OpenReadWrite | zs.OpenNoMutex
	if create {
		s.noteWrites(s.e.sync.epoch())
		if err := s.e.ensureDir(s.dir); err != nil {
			return fmt.Errorf("create store: %w", err)
		}
		if err := s.e.addObject(s.ref); err != nil {
			return fmt.Errorf("create store: %w", err)
		}
		// Start from a copy of an empty database already in WAL mode with
		// the reserved tables: one file created instead of SQLite's
		// database, rollback journal and mode switch.
		if err := s.e.writeTemplate(s.path); err != nil {
			s.e.removeObject(s.ref.ID)
			return fmt.Errorf("create store: %w", err)
		}
	}
	conn, err := openConn(s.path, flags, s.auth)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	fail := func(err error) error {
		closeConn(conn)
		if create {
			os.Remove(s.path)
			os.Remove(s.path + "-wal")
			os.Remove(s.path + "-shm")
			s.e.removeObject(s.ref.ID)
		}
		return fmt.Errorf("open store: %w", err)
	}
	// Not conn.SetDefensive: zombiezen v1.4.2 passes it one vararg where
	// SQLite reads two, and SQLite writes through a stale pointer (heap
	// corruption after some thousands of opens). The authorizer refuses
	// what defensive mode guards against: writable_schema and the other
	// pragmas, and sqlite_dbpage.
	// One connection per object: exclusive locking spares the per-statement
	// file locks and the shared-memory file. A new database is built
	// without fsyncs; its first Sync makes it durable at Disk.
	sync := "synchronous=NORMAL"
	if create {
		sync = "synchronous=OFF"
	}
	if err := pragmas(conn, "locking_mode=EXCLUSIVE", sync, "journal_mode=WAL"); err != nil {
		return fail(err)
	}
	if err := sqlitex.ExecuteScript(conn, storeSchema, nil); err != nil {
		return fail(err)
	}
	complete := false
	if err := sqlitex.Execute(conn, `SELECT 1 FROM _cairn_meta WHERE k = 'id'`, &sqlitex.ExecOptions{ResultFunc: func(*zs.Stmt) error {
		complete = true
		return nil
	}}); err != nil {
		return fail(err)
	}
	if !complete {
		if !create {
			// A creation that a crash interrupted: finish it.
			if err := s.e.addObject(s.ref); err != nil {
				return fail(err)
			}
		}
		err := sqlitex.Execute(conn, `INSERT INTO _cairn_meta (k, v) VALUES ('namespace', ?), ('name', ?), ('id', ?)
			ON CONFLICT (k) DO NOTHING`, &sqlitex.ExecOptions{Args: []any{s.ref.Namespace, s.ref.Name, s.ref.ID.String()}})
		if err != nil {
			return fail(err)
		}
		s.created = true
	}
	if create {
		if err := pragmas(conn, "synchronous=NORMAL"); err != nil {
			return fail(err)
		}
	}
	var pageSize int64
	if err := sqlitex.ExecuteTransient(conn, "PRAGMA page_size", &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		pageSize = stmt.ColumnInt64(0)
		return nil
	}}); err != nil {
		return fail(err)
	}
	if s.opts.MaxBytes > 0 {
		pages := s.opts.MaxBytes / pageSize
		if pages < 16 {
			pages = 16
		}
		if err := sqlitex.ExecuteTransient(conn, "PRAGMA max_page_count = "+strconv.FormatInt(pages, 10), nil); err != nil {
			return fail(err)
		}
	}
	if s.opts.MaxValueBytes > 0 {
		conn.Limit(zs.LimitLength, int32(min(s.opts.MaxValueBytes+64<<10, math.MaxInt32)))
	}
	if s.opts.MaxSQLLen > 0 {
		conn.Limit(zs.LimitSQLLength, int32(min(s.opts.MaxSQLLen, math.MaxInt32)))
	}
	conn.Limit(zs.LimitAttached, 0)
	s.conn = conn
	s.pageSize = pageSize
	s.user = make(map[string]*zs.Stmt)
	s.kinds = make(map[string]stmtKind)
	s.refreshBytes()
	return nil
}

// storeSchema creates the reserved tables. _cairn_kv is a rowid table with
// an index on key, not WITHOUT ROWID: values of a KiB or more would spill
// to overflow pages of the key's b-tree and every seek would read them.
const storeSchema = `
CREATE TABLE IF NOT EXISTS _cairn_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS _cairn_meta (k TEXT PRIMARY KEY, v ANY) WITHOUT ROWID;
`

// ensureOpen makes sure the database exists (user SQL needs it).
func (s *store) ensureOpen() error {
	if s.broken != nil {
		return s.broken
	}
	if s.conn == nil {
		return s.open(true)
	}
	return nil
}

// writable makes sure the database exists, the group's transaction is open
// and the turn has its savepoint. Every write calls it first.
func (s *store) writable() error {
	if s.broken != nil {
		return s.broken
	}
	if s.conn == nil {
		if err := s.open(true); err != nil {
			return err
		}
	}
	if !s.inTx {
		if err := s.exec("BEGIN"); err != nil {
			return err
		}
		s.inTx = true
	}
	if s.turn && !s.turnSP {
		if err := s.exec("SAVEPOINT turn"); err != nil {
			return err
		}
		s.turnSP = true
	}
	s.dirty = true
	return nil
}

// exec runs an internal statement with no result, from the statement cache.
func (s *store) exec(query string, args ...any) error {
	if len(args) > 0 {
		return sqlitex.Execute(s.conn, query, &sqlitex.ExecOptions{Args: args})
	}
	stmt, err := s.conn.Prepare(query)
	if err != nil {
		return err
	}
	_, err = stmt.Step()
	if rerr := stmt.Reset(); err == nil {
		err = rerr
	}
	return err
}

// check turns SQLite errors into coded errors and notes when SQLite rolled
// back the whole transaction (it does so on SQLITE_FULL, I/O errors and the
// like): then the group is lost and the store is broken.
func (s *store) check(err error) error {
	if err == nil {
		return nil
	}
	s.alarmKnown = false
	if s.conn != nil && s.inTx && s.conn.AutocommitEnabled() {
		s.broken = cairn.Errorf(cairn.Unavailable, "transaction rolled back by storage error: %v", err)
		s.inTx, s.turnSP, s.txDepth = false, false, 0
	}
	var ce *cairn.Error
	if errors.As(err, &ce) {
		return err
	}
	switch zs.ErrCode(err).ToPrimary() {
	case zs.ResultFull:
		return cairn.Errorf(cairn.TooLarge, "object storage limit of %d bytes reached", s.opts.MaxBytes)
	case zs.ResultTooBig:
		return cairn.Errorf(cairn.TooLarge, "value or statement too large")
	case zs.ResultAuth:
		if r := s.auth.denied; r != "" {
			return cairn.Errorf(cairn.Invalid, "%s", r)
		}
		return cairn.Errorf(cairn.Invalid, "not authorized")
	case zs.ResultError, zs.ResultConstraint, zs.ResultMismatch, zs.ResultRange:
		return cairn.Errorf(cairn.Invalid, "%s", sqlMessage(err))
	}
	return err
}

// sqlMessage extracts SQLite's message for the caller, without our prefixes.
func sqlMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "sqlite: "); i >= 0 {
		msg = msg[i+len("sqlite: "):]
	}
	return msg
}

// BeginTurn implements cairn.Store.
func (s *store) BeginTurn() {
	s.turn, s.turnSP, s.txDepth = true, false, 0
}

// EndTurn implements cairn.Store.
func (s *store) EndTurn(keep bool) error {
	s.turn = false
	if !s.turnSP {
		return s.broken
	}
	s.turnSP = false
	if s.broken != nil {
		return s.broken
	}
	if !keep {
		s.alarmKnown = false
		if err := s.exec("ROLLBACK TO turn"); err != nil {
			return s.check(err)
		}
	}
	if err := s.exec("RELEASE turn"); err != nil {
		return s.check(err)
	}
	return nil
}

// BeginTx implements cairn.Store.
func (s *store) BeginTx() error {
	if err := s.writable(); err != nil {
		return err
	}
	s.txDepth++
	if err := s.exec("SAVEPOINT tx" + strconv.Itoa(s.txDepth)); err != nil {
		s.txDepth--
		return s.check(err)
	}
	return nil
}

// EndTx implements cairn.Store.
func (s *store) EndTx(keep bool) error {
	if s.broken != nil {
		return s.broken
	}
	if s.txDepth == 0 {
		return cairn.Errorf(cairn.Internal, "no transaction to end")
	}
	name := "tx" + strconv.Itoa(s.txDepth)
	s.txDepth--
	if !keep {
		s.alarmKnown = false
		if err := s.exec("ROLLBACK TO " + name); err != nil {
			return s.check(err)
		}
	}
	return s.check(s.exec("RELEASE " + name))
}

// Dirty implements cairn.Store.
func (s *store) Dirty() bool { return s.dirty || s.broken != nil }

// Commit implements cairn.Store.
func (s *store) Commit() (cairn.CommitInfo, bool, error) {
	if s.broken != nil {
		return cairn.CommitInfo{}, false, s.broken
	}
	if !s.inTx {
		s.dirty = false
		return cairn.CommitInfo{}, false, nil
	}
	epoch := s.e.sync.epoch()
	if err := s.exec("COMMIT"); err != nil {
		err = s.check(err) // forgets the alarm, as every failed statement does
		if !s.conn.AutocommitEnabled() {
			s.exec("ROLLBACK")
		}
		s.inTx, s.dirty = false, false
		s.broken = err
		return cairn.CommitInfo{}, false, err
	}
	s.inTx, s.dirty = false, false
	s.seq++
	s.syncMu.Lock() // both at once: a Sync finishing now must see them together
	if !s.unsynced {
		s.unsynced, s.epoch = true, epoch
	}
	s.committed = s.seq
	s.syncMu.Unlock()
	if now := time.Now(); now.Sub(s.bytesAt) > 100*time.Millisecond {
		s.refreshBytes()
		s.bytesAt = now
	}
	if s.e.level == cairn.Disk {
		s.growWAL()
	}
	return cairn.CommitInfo{Seq: s.seq}, true, nil
}

// walChunk is how far past its end an object's WAL is extended with zeros
// at a time. A commit that appends to a file changes its size and block
// map, so its sync must commit the filesystem's journal; a commit that
// overwrites blocks already in the file needs only its data written (an
// fdatasync of a 4 KiB overwrite took 0.09 ms here, of an append 0.17 ms,
// and a syncfs of 16 files 0.63 ms against 1.53 ms). SQLite writes its WAL
// front to back and starts again at the front after a checkpoint, so an
// extended WAL is appended to once per chunk. The zeros are no valid
// frame (page number 0, salts that do not match the header): SQLite's
// recovery stops at the first of them.
const walChunk = 64 << 10

// growWAL extends the WAL with zeros once SQLite has written past the part
// extended before. It runs in the turn (Commit), when SQLite is not
// writing the WAL; failing changes nothing but speed.
func (s *store) growWAL() {
	path := s.path + "-wal"
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	size := fi.Size()
	if size < walHeaderSize || size <= s.walAlloc {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	end := (size/walChunk + 1) * walChunk
	if _, err := f.WriteAt(walZeros[:end-size], size); err != nil {
		return
	}
	s.walAlloc = end
}

// walZeros is what growWAL writes (never written to).
var walZeros = make([]byte, walChunk)

// walHeaderSize is the size of a WAL's header: a WAL shorter than that
// has not been started by SQLite yet.
const walHeaderSize = 32

func (s *store) refreshBytes() {
	var n int64
	sqlitex.Execute(s.conn, "PRAGMA page_count", &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		n = stmt.ColumnInt64(0)
		return nil
	}})
	s.bytes = n * s.pageSize
}

// noteWrites records that writes are about to be made that a Sync must
// cover; epoch is the sync stage's epoch read before them.
func (s *store) noteWrites(epoch uint64) {
	s.syncMu.Lock()
	if !s.unsynced {
		s.unsynced, s.epoch = true, epoch
	}
	s.syncMu.Unlock()
}

// Sync implements cairn.Store: the WAL (and, the first time after the
// database or its WAL was created, the database file, its directory and
// the catalog entry) is made durable by the engine's sync stage, with the
// other objects' requests of the moment.
func (s *store) Sync(c cairn.CommitInfo) error {
	s.syncMu.Lock()
	epoch, unsynced := s.epoch, s.unsynced
	s.syncMu.Unlock()
	if !unsynced {
		epoch = s.e.sync.epoch()
	}
	// The WAL is opened for each sync rather than kept open: an idle
	// object then holds two descriptors, not three.
	files := []syncFile{{path: s.path + "-wal"}}
	if !s.walSynced {
		if s.created {
			files = append(files, syncFile{path: s.path, full: true}, syncFile{f: s.e.catWAL})
		}
		files = append(files, syncFile{path: s.dir, full: true})
	}
	if err := s.e.sync.sync(files, epoch, s.e.sync.mode == SyncFiles); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	s.walSynced = true
	s.syncMu.Lock()
	if c.Seq >= s.committed {
		s.unsynced = false
	}
	s.syncMu.Unlock()
	return nil
}

// Bytes implements cairn.Store.
func (s *store) Bytes() int64 { return s.bytes }

// Close implements cairn.Store.
func (s *store) Close() error {
	if s.conn == nil {
		return nil
	}
	s.alarmKnown = false
	s.walAlloc = 0
	if s.inTx {
		s.exec("ROLLBACK")
		s.inTx = false
	}
	empty := s.empty()
	for _, st := range s.user {
		st.Finalize()
	}
	s.user = nil
	if s.e.level == cairn.Disk {
		// The checkpoint on close must fsync before the WAL is deleted.
		sqlitex.ExecuteTransient(s.conn, "PRAGMA synchronous=FULL", nil)
	}
	// Checkpoint now, so that the close under connMu is quick.
	sqlitex.ExecuteTransient(s.conn, "PRAGMA wal_checkpoint(TRUNCATE)", nil)
	err := closeConn(s.conn)
	s.conn = nil
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	if empty {
		// Nothing left (deleteAll, or never really written): remove it all.
		for _, p := range []string{s.path, s.path + "-wal", s.path + "-shm", s.path + "-journal"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove empty store: %w", err)
			}
		}
		return s.e.removeObject(s.ref.ID)
	}
	return nil
}

// empty reports whether the database holds no KV entries, no user schema
// and no alarm or schema version.
func (s *store) empty() bool {
	n := int64(-1)
	err := sqlitex.Execute(s.conn, `SELECT (SELECT count(*) FROM _cairn_kv)
		+ (SELECT count(*) FROM _cairn_meta WHERE k NOT IN ('id', 'namespace', 'name'))
		+ (SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE '\_cairn\_%' ESCAPE '\' AND name NOT LIKE 'sqlite\_%' ESCAPE '\')`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			n = stmt.ColumnInt64(0)
			return nil
		}})
	return err == nil && n == 0
}

// Get implements cairn.Store.
func (s *store) Get(keys []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	if s.conn == nil {
		return out, s.broken
	}
	stmt, err := s.conn.Prepare(`SELECT value FROM _cairn_kv WHERE key = ?`)
	if err != nil {
		return nil, s.check(err)
	}
	for _, k := range keys {
		stmt.BindBytes(1, []byte(k))
		row, err := stmt.Step()
		if err != nil {
			stmt.Reset()
			return nil, s.check(err)
		}
		if row {
			v := make([]byte, stmt.ColumnLen(0))
			stmt.ColumnBytes(0, v)
			out[k] = v
		}
		stmt.Reset()
	}
	return out, nil
}

// Put implements cairn.Store.
func (s *store) Put(entries []cairn.Entry) error {
	if err := s.writable(); err != nil {
		return err
	}
	stmt, err := s.conn.Prepare(`INSERT INTO _cairn_kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`)
	if err != nil {
		return s.check(err)
	}
	for _, e := range entries {
		stmt.BindBytes(1, []byte(e.Key))
		if e.Value == nil {
			stmt.BindBytes(2, []byte{})
		} else {
			stmt.BindBytes(2, e.Value)
		}
		_, err := stmt.Step()
		stmt.Reset()
		if err != nil {
			return s.check(err)
		}
	}
	return nil
}

// Delete implements cairn.Store.
func (s *store) Delete(keys []string) (int, error) {
	if s.conn == nil {
		return 0, s.broken
	}
	if err := s.writable(); err != nil {
		return 0, err
	}
	stmt, err := s.conn.Prepare(`DELETE FROM _cairn_kv WHERE key = ?`)
	if err != nil {
		return 0, s.check(err)
	}
	n := 0
	for _, k := range keys {
		stmt.BindBytes(1, []byte(k))
		_, err := stmt.Step()
		stmt.Reset()
		if err != nil {
			return n, s.check(err)
		}
		n += s.conn.Changes()
	}
	return n, nil
}

// List implements cairn.Store.
func (s *store) List(o cairn.ListOptions) ([]cairn.Entry, error) {
	if s.conn == nil {
		return nil, s.broken
	}
	lo := []byte(o.Start)
	if o.Prefix > o.Start {
		lo = []byte(o.Prefix)
	}
	var hi []byte
	if o.End != "" {
		hi = []byte(o.End)
	}
	if o.Prefix != "" {
		if pe := prefixEnd(o.Prefix); pe != nil && (hi == nil || string(pe) < string(hi)) {
			hi = pe
		}
	}
	order := "ASC"
	if o.Reverse {
		order = "DESC"
	}
	q := `SELECT key, value FROM _cairn_kv WHERE key >= ?1 ORDER BY key ` + order + ` LIMIT ?3`
	if hi != nil {
		q = `SELECT key, value FROM _cairn_kv WHERE key >= ?1 AND key < ?2 ORDER BY key ` + order + ` LIMIT ?3`
	}
	stmt, err := s.conn.Prepare(q)
	if err != nil {
		return nil, s.check(err)
	}
	if hi != nil {
		stmt.BindBytes(2, hi)
	}
	stmt.BindBytes(1, lo)
	limit := int64(-1)
	if o.Limit > 0 {
		limit = int64(o.Limit)
	}
	stmt.BindInt64(3, limit)
	defer stmt.Reset()
	var out []cairn.Entry
	for {
		row, err := stmt.Step()
		if err != nil {
			return nil, s.check(err)
		}
		if !row {
			return out, nil
		}
		k := make([]byte, stmt.ColumnLen(0))
		stmt.ColumnBytes(0, k)
		v := make([]byte, stmt.ColumnLen(1))
		stmt.ColumnBytes(1, v)
		out = append(out, cairn.Entry{Key: string(k), Value: v})
	}
}

// prefixEnd returns the smallest string greater than every string with
// prefix p, in byte order (p without its trailing 0xff bytes, its last byte
// incremented; not always UTF-8), or nil if there is none (p is empty or
// all 0xff bytes). KV listings and the catalog's name search use it.
func prefixEnd(p string) []byte {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}

// Alarm implements cairn.Store.
func (s *store) Alarm() (cairn.Alarm, bool, error) {
	if s.conn == nil {
		return cairn.Alarm{}, false, s.broken
	}
	if s.alarmKnown {
		return s.alarm, s.alarmOK, nil
	}
	var a cairn.Alarm
	ok := false
	err := sqlitex.Execute(s.conn, `SELECT (SELECT v FROM _cairn_meta WHERE k = 'alarm_at'), (SELECT v FROM _cairn_meta WHERE k = 'alarm_retries')`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			if !stmt.ColumnIsNull(0) {
				ok = true
				a.At = time.Unix(0, stmt.ColumnInt64(0))
				a.Retries = stmt.ColumnInt(1)
			}
			return nil
		}})
	if err != nil {
		return a, false, s.check(err)
	}
	s.alarm, s.alarmOK, s.alarmKnown = a, ok, true
	return a, ok, nil
}

// SetAlarm implements cairn.Store.
func (s *store) SetAlarm(a cairn.Alarm) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.exec(`INSERT INTO _cairn_meta (k, v) VALUES ('alarm_at', ?), ('alarm_retries', ?)
		ON CONFLICT (k) DO UPDATE SET v = excluded.v`, a.At.UnixNano(), a.Retries); err != nil {
		return s.check(err)
	}
	s.alarm, s.alarmOK, s.alarmKnown = cairn.Alarm{At: time.Unix(0, a.At.UnixNano()), Retries: a.Retries}, true, true
	return nil
}

// DeleteAlarm implements cairn.Store.
func (s *store) DeleteAlarm() error {
	if s.conn == nil {
		return s.broken
	}
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.exec(`DELETE FROM _cairn_meta WHERE k IN ('alarm_at', 'alarm_retries')`); err != nil {
		return s.check(err)
	}
	s.alarm, s.alarmOK, s.alarmKnown = cairn.Alarm{}, false, true
	return nil
}

// SchemaVersion implements cairn.Store.
func (s *store) SchemaVersion() (int, error) {
	if s.conn == nil {
		return 0, s.broken
	}
	v := 0
	err := sqlitex.Execute(s.conn, `SELECT v FROM _cairn_meta WHERE k = 'schema_version'`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			v = stmt.ColumnInt(0)
			return nil
		}})
	return v, s.check(err)
}

// SetSchemaVersion implements cairn.Store.
func (s *store) SetSchemaVersion(v int) error {
	if err := s.writable(); err != nil {
		return err
	}
	return s.check(s.exec(`INSERT INTO _cairn_meta (k, v) VALUES ('schema_version', ?)
		ON CONFLICT (k) DO UPDATE SET v = excluded.v`, v))
}

// DeleteAll implements cairn.Store.
func (s *store) DeleteAll() error {
	if s.conn == nil {
		return s.broken
	}
	s.alarmKnown = false
	if err := s.writable(); err != nil {
		return err
	}
	type obj struct{ typ, name string }
	var objs []obj
	err := sqlitex.Execute(s.conn, `SELECT type, name FROM sqlite_schema
		WHERE name NOT LIKE '\_cairn\_%' ESCAPE '\' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'
		AND type IN ('table', 'view', 'trigger') ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END`,
		&sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
			objs = append(objs, obj{stmt.ColumnText(0), stmt.ColumnText(1)})
			return nil
		}})
	if err != nil {
		return s.check(err)
	}
	// Foreign keys could make the drop order matter; defer them.
	if err := s.exec("PRAGMA defer_foreign_keys = ON"); err != nil {
		return s.check(err)
	}
	for _, o := range objs {
		q := "DROP " + strings.ToUpper(o.typ) + " IF EXISTS " + quoteIdent(o.name)
		if err := sqlitex.ExecuteTransient(s.conn, q, nil); err != nil {
			return s.check(err)
		}
	}
	if err := s.exec(`DELETE FROM _cairn_kv`); err != nil {
		return s.check(err)
	}
	return s.check(s.exec(`DELETE FROM _cairn_meta WHERE k NOT IN ('id', 'namespace', 'name')`))
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
