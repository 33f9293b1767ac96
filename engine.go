package cairn

import (
	"context"
	"time"
)

// Engine is the storage of one node: it opens each object's store and keeps
// the node catalog (the object directory, alarm index and usage counters).
// The sqlite package implements it.
//
// Catalog methods are safe for concurrent use. They return *Error with code
// NotFound for unknown objects; other errors are I/O failures.
type Engine interface {
	// OpenStore opens the store of an object. A store that does not exist
	// yet is not created by OpenStore: it reads as empty and is created by
	// its first write, so that addressing an object costs no disk.
	OpenStore(ctx context.Context, ref ObjectRef, opts StoreOptions) (Store, error)

	// Objects lists the objects of namespace ns with IDs greater than after
	// (the empty string starts at the beginning), in ID order, at most
	// limit of them. It does not activate them.
	Objects(ctx context.Context, ns string, after string, limit int) ([]ObjectInfo, error)

	// ObjectsByName lists the objects of namespace ns whose name starts
	// with prefix, in order of name (compared as bytes) then ID, at most
	// limit of them, after the cursor (afterName, afterID): pass the name
	// and ID of the last entry of the previous page; both empty start at
	// the beginning. An empty prefix matches every object (unique objects
	// have empty names, so they come first). It reads only the entries it
	// returns and does not activate them.
	ObjectsByName(ctx context.Context, ns, prefix, afterName, afterID string, limit int) ([]ObjectInfo, error)

	// Object returns the catalog entry of one object.
	Object(ctx context.Context, ns string, id ID) (ObjectInfo, error)

	// Namespaces lists the namespaces that have at least one object, with
	// their totals.
	Namespaces(ctx context.Context) ([]NamespaceInfo, error)

	// HintAlarm records that object ref must be looked at no later than at.
	// It must be durable (at the engine's level) when it returns: the
	// runtime calls it before committing an alarm that is new or earlier,
	// so the index never misses an alarm an object holds.
	HintAlarm(ref ObjectRef, at time.Time) error

	// ClearAlarm removes the hint of object id, or moves it to at if at is
	// not zero. The runtime calls it after the object's commit.
	ClearAlarm(id ID, at time.Time) error

	// DueAlarms returns up to limit hints due at or before now, earliest
	// first.
	DueAlarms(now time.Time, limit int) ([]AlarmHint, error)

	// NextAlarm returns the earliest hint, if any.
	NextAlarm() (time.Time, bool, error)

	// RecordUsage adds usage deltas to the catalog and updates sizes and
	// last-activity times. Usage figures are best effort: a crash loses at
	// most the deltas not yet recorded.
	RecordUsage(u []Usage) error

	// Close closes the catalog. All stores must be closed first.
	Close() error
}

// ObjectRef names an object in a namespace.
type ObjectRef struct {
	Namespace string
	ID        ID
	Name      string // empty for unique IDs
}

// StoreOptions are the limits and behaviour of one open store.
type StoreOptions struct {
	// MaxBytes caps the size of the object's database. Writes that would
	// exceed it fail with TooLarge.
	MaxBytes int64
	// MaxSQLLen caps the length of one SQL statement text.
	MaxSQLLen int
	// MaxValueBytes caps one value (a KV value, or a string or blob in SQL).
	MaxValueBytes int
}

// ObjectInfo is a catalog entry.
type ObjectInfo struct {
	Namespace  string
	ID         ID
	Name       string
	Created    time.Time
	LastActive time.Time
	Bytes      int64     // size of the object's storage on disk
	Alarm      time.Time // the alarm index's entry, at or before the object's alarm; zero if none
	Usage      Counters
}

// NamespaceInfo sums the catalog entries of one namespace.
type NamespaceInfo struct {
	Name    string
	Objects int64
	Bytes   int64
	Usage   Counters
}

// AlarmHint is an entry of the alarm index.
type AlarmHint struct {
	Ref ObjectRef
	At  time.Time
}

// Counters are usage figures, the inputs of a Durable Objects-style bill.
type Counters struct {
	Requests    int64 // events delivered: requests, RPC calls, alarms
	RowsRead    int64
	RowsWritten int64
}

// Add adds o to c.
func (c *Counters) Add(o Counters) {
	c.Requests += o.Requests
	c.RowsRead += o.RowsRead
	c.RowsWritten += o.RowsWritten
}

// Usage is a usage delta of one object.
type Usage struct {
	Ref        ObjectRef
	Delta      Counters
	Bytes      int64 // current size; -1 if unknown
	LastActive time.Time
}

// Store is the storage of one object: a KV table and a SQL database in one
// file, with the turn's implicit transaction. The runtime calls a store only
// from the goroutine that holds the object's turn, except Sync, which may run
// concurrently with everything but Close.
//
// Writes (Put, Delete, Exec, SetAlarm, ...) open the implicit transaction
// of the current group and a savepoint for the current turn on first use.
type Store interface {
	// BeginTurn starts a turn. EndTurn ends it, keeping its writes if keep
	// is true and rolling them back otherwise.
	BeginTurn()
	EndTurn(keep bool) error

	// BeginTx opens a nested explicit transaction; EndTx closes it.
	BeginTx() error
	EndTx(keep bool) error

	// Dirty reports whether writes wait to be committed.
	Dirty() bool

	// Commit commits the group's transaction so that it survives a crash of
	// this process (it reaches the OS), and returns what Sync needs to make
	// it durable on disk. If nothing was written it returns ok false.
	// After an error the store's transaction state is unknown: the runtime
	// closes it.
	Commit() (c CommitInfo, ok bool, err error)

	// Sync makes commits up to c durable on disk (fsync). Safe to call
	// concurrently with the other methods except Close.
	Sync(c CommitInfo) error

	// Get returns the value of each key that exists.
	Get(keys []string) (map[string][]byte, error)
	// Put writes each entry.
	Put(entries []Entry) error
	// Delete deletes keys and returns how many existed.
	Delete(keys []string) (int, error)
	// List returns entries in key order.
	List(opts ListOptions) ([]Entry, error)

	// Exec runs one or more statements of user SQL. User SQL cannot touch
	// the reserved `_cairn_` tables nor control transactions.
	Exec(query string, args ...any) (Result, error)
	// Query runs one statement of user SQL and returns its rows.
	Query(query string, args ...any) (*Rows, error)

	// Alarm returns the object's alarm.
	Alarm() (Alarm, bool, error)
	// SetAlarm sets the alarm; DeleteAlarm removes it.
	SetAlarm(a Alarm) error
	DeleteAlarm() error

	// SchemaVersion returns the number of migrations applied;
	// SetSchemaVersion records it.
	SchemaVersion() (int, error)
	SetSchemaVersion(v int) error

	// DeleteAll removes all user tables, KV entries, the alarm and the
	// schema version, inside the current transaction.
	DeleteAll() error

	// Bytes returns the current size of the object's storage.
	Bytes() int64

	// Close closes the store. Uncommitted writes are discarded. If the store
	// holds no data at all, its files and catalog entry are removed.
	Close() error
}

// CommitInfo describes one local commit for Sync and for a Committer.
type CommitInfo struct {
	Seq uint64 // per open store, increasing from 1
}

// Entry is a KV pair.
type Entry struct {
	Key   string
	Value []byte
}

// ListOptions select a range of keys. Start is inclusive, End exclusive;
// Prefix, Start and End combine.
type ListOptions struct {
	Prefix  string
	Start   string
	End     string
	Reverse bool
	Limit   int // 0 means no limit
}

// Alarm is an object's alarm as stored.
type Alarm struct {
	At      time.Time
	Retries int // failed deliveries so far
}

// Result reports what one Exec did.
type Result struct {
	RowsRead     int64
	RowsWritten  int64
	LastInsertID int64
}

// Rows is the materialized result of a query. Values are int64, float64,
// string, []byte or nil.
type Rows struct {
	Columns     []string
	Values      [][]any
	RowsRead    int64
	RowsWritten int64
}

// Committer makes an object's local commits durable before their outputs are
// released (G5, G6). The runtime calls Durable from one goroutine per object
// at a time, in commit order, while the object goes on running turns. The
// local committer syncs to disk or not, by durability level; the cluster
// committer appends the commit to a replicated log.
type Committer interface {
	Durable(ctx context.Context, ref ObjectRef, s Store, c CommitInfo) error
}

// Durability is how far a commit goes before its outputs are released.
type Durability int

// The durability levels (G6).
const (
	// Process: the commit reached the OS; it survives kill -9 of the
	// process but not a power loss.
	Process Durability = iota + 1
	// Disk: the commit was fsynced; it survives a power loss.
	Disk
)

// String returns "process" or "disk".
func (d Durability) String() string {
	switch d {
	case Process:
		return "process"
	case Disk:
		return "disk"
	}
	return "unknown"
}

// ParseDurability parses "process" or "disk".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "process":
		return Process, nil
	case "disk":
		return Disk, nil
	}
	return 0, Errorf(Invalid, "unknown durability %q (want process or disk)", s)
}

// LocalCommitter is the single-node Committer: at Disk it syncs the store,
// at Process the local commit is already enough.
type LocalCommitter struct {
	Level Durability
}

// Durable implements Committer.
func (l LocalCommitter) Durable(ctx context.Context, ref ObjectRef, s Store, c CommitInfo) error {
	if l.Level == Disk {
		return s.Sync(c)
	}
	return nil
}
