package agent

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/schedule"
)

// Cold storage. With an archive store configured (Service.Archive), a
// session keeps its latest messages hot, in its database, and moves older
// ones to the archive in chunks: JSONL of Message (each line with its
// seq), compressed by archive.EncodeChunk, under the key
// "agent/{object ID}/c/{first seq}-{last seq}". Keys are built from the
// object's ID and sequence numbers only, never from names.
//
// Table archive_chunks is the index of a session's chunks (seq range,
// count, key, size, state). Moving a chunk is three steps:
//
//	(a) in a turn: the chunk's row is inserted with state 'writing'
//	(b) turn released: the chunk is encoded and Put (durable, verified)
//	(c) in a turn: if the rows are still what was written (their rev
//	    stamps), they are deleted and the chunk becomes 'done', atomically
//
// Readers take a seq range from its chunk only once the chunk is done, and
// from the hot rows otherwise, so a crash at any point leaves every message
// readable exactly once. A chunk left 'writing' (the process stopped
// between the steps) is written again from its rows, or dropped with its
// blob if it has none, the next time the session archives (at once when it
// next activates). Blobs no longer referenced (a chunk dropped, chat
// cleared, a restored manifest) are listed in archive_trash and deleted
// by the archiver before it writes anything, so a late delete never hits a
// blob written again under the same key.
//
// The archiver runs one at a time per session: after a reply leaves more
// than HotMessages + ArchiveBatch messages hot, it is scheduled on the
// session's alarm (a reserved schedule, not listed by GET /schedules), so
// that it never delays a reply; it runs in the alarm's event with its turn
// released while it writes.

// archiveSQL is the migration of the cold storage tables. The init row
// marks a session that was not made by a restore, so that a session with
// messages from before cold storage existed is never taken for an expired
// one.
const archiveSQL = `
CREATE TABLE archive_chunks (
	first_seq  INTEGER PRIMARY KEY,
	last_seq   INTEGER NOT NULL,
	count      INTEGER NOT NULL,
	key        TEXT NOT NULL,
	bytes      INTEGER NOT NULL DEFAULT 0,
	raw_bytes  INTEGER NOT NULL DEFAULT 0,
	state      TEXT NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE archive_trash (
	n   INTEGER PRIMARY KEY,
	key TEXT NOT NULL
);
CREATE TABLE archive_meta (
	k TEXT PRIMARY KEY,
	v INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO archive_meta (k, v) SELECT 'init', 1 WHERE EXISTS (SELECT 1 FROM messages);
`

// The states of a chunk.
const (
	chunkWriting = "writing"
	chunkDone    = "done"
)

// Keys of archive_meta.
const (
	metaInit     = "init"      // the session was set up (fresh, or restored)
	metaSeqFloor = "seq_floor" // new messages get seqs above this
	metaExpiring = "expiring"  // a manifest may exist for this live session
	metaDeleting = "deleting"  // delete forever began
	metaHot      = "reported_hot"
	metaArchived = "reported_archived"
)

// Defaults of the cold storage settings.
const (
	// DefaultHotMessages is Agent.HotMessages's default.
	DefaultHotMessages = 200
	// DefaultArchiveBatch is Agent.ArchiveBatch's default.
	DefaultArchiveBatch = 200
	// DefaultSessionTTL is Agent.SessionTTL's default: 30 days.
	DefaultSessionTTL = 30 * 24 * time.Hour
	// NeverExpire as Agent.SessionTTL keeps idle sessions forever.
	NeverExpire time.Duration = -1
)

const (
	// maxChunkRaw bounds the JSONL of one chunk: it stops growing past
	// this many bytes (holding at least one message).
	maxChunkRaw = 4 << 20
	// searchChunks is how many of the newest chunks are searched for a
	// message given by ID (a cursor, a stream to resume) that is no longer
	// hot. "s" cursors need no search.
	searchChunks = 16
	// maxChunksPerRun bounds the chunks one archiver run writes; it is
	// scheduled again if more are due.
	maxChunksPerRun = 64
	// archiveTimeout bounds an archive call made while holding the turn.
	archiveTimeout = 30 * time.Second
	// reportBytes is how far a session's hot bytes may drift from what its
	// agent's usage tally holds before the archiver reports them.
	reportBytes = 256 << 10
)

// Reserved schedules of a session: never listed, cancelled or replaced
// through the API.
const (
	reservedSchedulePrefix = "cairn:"
	scheduleArchive        = "cairn:archive"
	scheduleTTL            = "cairn:ttl"
	callbackArchive        = "archive"
	callbackTTL            = "ttl"
)

// reservedSchedule reports whether a schedule ID or callback is cold
// storage's own.
func reservedSchedule(id, callback string) bool {
	return strings.HasPrefix(id, reservedSchedulePrefix) || callback == callbackArchive || callback == callbackTTL
}

// coldState is a session instance's part of cold storage. busy, done,
// gone and activity are guarded by the session's mu; the rest is touched
// only in the turn.
type coldState struct {
	busy     bool          // the archiver guard is held
	done     chan struct{} // closed when it is let go
	gone     bool          // the storage was deleted (expired, deleted)
	activity int64         // events seen (touch): expiry checks nothing came

	deleting   bool      // delete forever began (archive_meta)
	lastActive time.Time // the last event's time, in this instance
	ttlAt      time.Time // the TTL schedule's time, as last set or read
	ttlKnown   bool
}

// archivePrefix is the key prefix of an object's blobs.
func archivePrefix(id cairn.ID) string { return "agent/" + id.String() + "/" }

// chunkKey is the key of the chunk of seqs first to last.
func chunkKey(id cairn.ID, first, last int64) string {
	return archivePrefix(id) + "c/" + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10)
}

// manifestKey is the key of an expired session's manifest.
func manifestKey(id cairn.ID) string { return archivePrefix(id) + "manifest" }

// chunkRef is a row of archive_chunks.
type chunkRef struct {
	First    int64  `json:"first_seq"`
	Last     int64  `json:"last_seq"`
	Count    int64  `json:"count"`
	Key      string `json:"key"`
	Bytes    int64  `json:"bytes"`
	RawBytes int64  `json:"raw_bytes"`
	State    string `json:"-"`
	Created  int64  `json:"created_at"`
}

const chunkColumns = `first_seq, last_seq, count, key, bytes, raw_bytes, state, created_at`

func scanChunks(rows *cairn.Rows) []chunkRef {
	out := make([]chunkRef, 0, len(rows.Values))
	for _, v := range rows.Values {
		out = append(out, chunkRef{First: i64(v[0]), Last: i64(v[1]), Count: i64(v[2]), Key: str(v[3]),
			Bytes: i64(v[4]), RawBytes: i64(v[5]), State: str(v[6]), Created: i64(v[7])})
	}
	return out
}

// archivedLine is one line of a chunk: a message and its seq.
type archivedLine struct {
	Seq int64 `json:"seq"`
	Message
}

// encodeLines returns the JSONL of msgs.
func encodeLines(msgs []archivedLine) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range msgs {
		if err := enc.Encode(&msgs[i]); err != nil {
			return nil, fmt.Errorf("encode archived message: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// decodeLines parses a chunk's JSONL and checks it against its index row:
// count, and ascending seqs within its range.
func decodeLines(raw []byte, ref chunkRef) ([]archivedLine, error) {
	out := make([]archivedLine, 0, ref.Count)
	prev := int64(-1)
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) == 0 {
			continue
		}
		var m archivedLine
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("archive chunk %s: line %d: %w", ref.Key, len(out)+1, err)
		}
		if m.Seq <= prev || m.Seq < ref.First || m.Seq > ref.Last {
			return nil, fmt.Errorf("archive chunk %s: seq %d out of order or range", ref.Key, m.Seq)
		}
		prev = m.Seq
		out = append(out, m)
	}
	if int64(len(out)) != ref.Count {
		return nil, fmt.Errorf("archive chunk %s: %d messages, the index says %d", ref.Key, len(out), ref.Count)
	}
	return out, nil
}

// chunkCache keeps decoded chunks for reads, shared by the sessions of a
// Service and bounded in bytes (an estimate of the decoded size).
type chunkCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List // of *cacheEntry, most recently used first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key  string
	msgs []archivedLine
	size int64
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, ll: list.New(), byKey: make(map[string]*list.Element)}
}

func (c *chunkCache) get(key string) ([]archivedLine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).msgs, true
}

func (c *chunkCache) put(key string, msgs []archivedLine, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.max {
		return
	}
	if e, ok := c.byKey[key]; ok {
		c.removeLocked(e)
	}
	c.byKey[key] = c.ll.PushFront(&cacheEntry{key: key, msgs: msgs, size: size})
	c.size += size
	for c.size > c.max {
		c.removeLocked(c.ll.Back())
	}
}

// drop forgets every chunk whose key starts with prefix.
func (c *chunkCache) drop(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.byKey {
		if strings.HasPrefix(k, prefix) {
			c.removeLocked(e)
		}
	}
}

func (c *chunkCache) removeLocked(e *list.Element) {
	ce := e.Value.(*cacheEntry)
	c.ll.Remove(e)
	delete(c.byKey, ce.key)
	c.size -= ce.size
}

// fetcher runs fn, which calls the archive: inline (holding the turn) or
// with the turn released.
type fetcher func(fn func(ctx context.Context) error) error

// inline runs fn in the turn, bounded by archiveTimeout.
func inline(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), archiveTimeout)
	defer cancel()
	return fn(ctx)
}

// errNoArchive answers a use of cold storage without an archive store.
var errNoArchive = cairn.Errorf(cairn.Unavailable, "no archive store is configured")

// loadChunk returns the messages of a done chunk, from the cache or the
// archive. Safe with the turn released.
func (s *Service) loadChunk(ctx context.Context, ref chunkRef) ([]archivedLine, error) {
	if msgs, ok := s.chunks.get(ref.Key); ok {
		return msgs, nil
	}
	if s.Archive == nil {
		return nil, errNoArchive
	}
	blob, err := s.Archive.Get(ctx, ref.Key)
	if err != nil {
		if cairn.ErrorCode(err) == cairn.NotFound {
			return nil, cairn.Errorf(cairn.Internal, "archive chunk %s is missing", ref.Key)
		}
		return nil, fmt.Errorf("read archived messages: %w", err)
	}
	raw, err := archive.DecodeChunk(blob)
	if err != nil {
		return nil, fmt.Errorf("read archived messages: %w", err)
	}
	msgs, err := decodeLines(raw, ref)
	if err != nil {
		return nil, err
	}
	s.stats.chunkReads.Add(1)
	s.chunks.put(ref.Key, msgs, 2*int64(len(raw))+256*int64(len(msgs)))
	return msgs, nil
}

// loadChunks loads refs through fetch (once for all of them, if any is
// not cached), in order.
func (s *Service) loadChunks(refs []chunkRef, fetch fetcher) ([][]archivedLine, error) {
	out := make([][]archivedLine, len(refs))
	missing := false
	for i, ref := range refs {
		if msgs, ok := s.chunks.get(ref.Key); ok {
			out[i] = msgs
		} else {
			missing = true
		}
	}
	if !missing {
		return out, nil
	}
	err := fetch(func(ctx context.Context) error {
		for i, ref := range refs {
			if out[i] != nil {
				continue
			}
			msgs, err := s.loadChunk(ctx, ref)
			if err != nil {
				return err
			}
			out[i] = msgs
		}
		return nil
	})
	return out, err
}

// doneChunks returns the done chunks matching the SQL condition cond
// (with args), in the order given.
func (s store) chunksWhere(cond string, args ...any) ([]chunkRef, error) {
	rows, err := s.st.Query(`SELECT `+chunkColumns+` FROM archive_chunks WHERE `+cond, args...)
	if err != nil {
		return nil, fmt.Errorf("read chunk index: %w", err)
	}
	return scanChunks(rows), nil
}

// pageResult is a page of history, newest first: the messages, their
// seqs, and whether each is hot.
type pageResult struct {
	msgs []Message
	seqs []int64
	hot  int // the first hot messages are hot, the rest archived
	more bool
}

// next returns the cursor of the page after p: the last message's ID if
// it is hot, else "s" and its seq.
func (p *pageResult) next() string {
	if !p.more || len(p.msgs) == 0 {
		return ""
	}
	i := len(p.msgs) - 1
	if i < p.hot {
		return p.msgs[i].ID
	}
	return "s" + strconv.FormatInt(p.seqs[i], 10)
}

// beyondAll is a seq above any message's.
const beyondAll = int64(1) << 62

// page returns up to limit messages before the cursor before (see
// pageAt), newest first, and whether older ones exist. Archived messages
// are read with the turn held.
func (s store) page(before string, limit int) ([]Message, bool, error) {
	p, err := s.pageAt(before, limit, inline)
	return p.msgs, p.more, err
}

// pageAt returns up to limit messages before cursor before: "" for the
// newest, a message ID, or "s" and a seq (what next returns for an
// archived message). Hot messages come first (they are the newest), then
// those of done chunks, read through fetch. The hot rows and the chunk
// index are read in the caller's turn, so the page is one consistent
// view even if fetch releases the turn.
func (s store) pageAt(before string, limit int, fetch fetcher) (pageResult, error) {
	var p pageResult
	upper, err := s.cursorSeq(before, fetch)
	if err != nil {
		return p, err
	}
	rows, err := s.st.Query(`SELECT `+messageColumns+`, seq FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?`, upper, limit+1)
	if err != nil {
		return p, fmt.Errorf("page messages: %w", err)
	}
	p.msgs, err = s.decode(rows)
	if err != nil {
		return p, err
	}
	for _, v := range rows.Values {
		p.seqs = append(p.seqs, i64(v[len(v)-1]))
	}
	p.hot = len(p.msgs)
	if need := limit + 1 - len(p.msgs); need > 0 && s.svc != nil {
		if len(p.seqs) > 0 {
			upper = min(upper, p.seqs[len(p.seqs)-1])
		}
		refs, err := s.chunksWhere(`state = ? AND first_seq < ? ORDER BY first_seq DESC LIMIT ?`, chunkDone, upper, 2+need)
		if err != nil {
			return p, err
		}
		var pick []chunkRef
		got := int64(0)
		for _, ref := range refs {
			pick = append(pick, ref)
			// At least this many of its messages are before upper: at
			// most last-upper+1 seqs of the range are not.
			got += max(0, ref.Count-max(0, ref.Last-upper+1))
			if got >= int64(need) {
				break
			}
		}
		if len(pick) > 0 {
			loaded, err := s.svc.loadChunks(pick, fetch)
			if err != nil {
				return p, err
			}
			for _, msgs := range loaded {
				for i := len(msgs) - 1; i >= 0 && len(p.msgs) <= limit; i-- {
					if msgs[i].Seq < upper {
						p.msgs = append(p.msgs, msgs[i].Message)
						p.seqs = append(p.seqs, msgs[i].Seq)
					}
				}
			}
		}
	}
	p.more = len(p.msgs) > limit
	if p.more {
		p.msgs, p.seqs = p.msgs[:limit], p.seqs[:limit]
		p.hot = min(p.hot, limit)
	}
	return p, nil
}

// cursorSeq returns the seq a page before the cursor stops at.
func (s store) cursorSeq(before string, fetch fetcher) (int64, error) {
	if before == "" {
		return beyondAll, nil
	}
	if rest, ok := strings.CutPrefix(before, "s"); ok && rest != "" && len(rest) <= 18 && strings.Trim(rest, "0123456789") == "" {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err == nil {
			return n, nil
		}
	}
	if !validMessageID(before) {
		return 0, cairn.Errorf(cairn.Invalid, "before must be a cursor from next")
	}
	seq, ok, err := s.seq(before)
	if err != nil {
		return 0, err
	}
	if ok {
		return seq, nil
	}
	line, _, ok, err := s.findArchived(before, fetch)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, cairn.Errorf(cairn.Invalid, "no message %s in this session (a message archived long ago is not searched by ID: page with the \"s\" cursors next gives)", before)
	}
	return line.Seq, nil
}

// findArchived looks for message id in the newest searchChunks done
// chunks, and returns it and the message before it in its chunk, if any.
func (s store) findArchived(id string, fetch fetcher) (archivedLine, *archivedLine, bool, error) {
	if s.svc == nil || s.svc.Archive == nil {
		return archivedLine{}, nil, false, nil
	}
	refs, err := s.chunksWhere(`state = ? ORDER BY first_seq DESC LIMIT ?`, chunkDone, searchChunks)
	if err != nil || len(refs) == 0 {
		return archivedLine{}, nil, false, err
	}
	var found archivedLine
	var prev *archivedLine
	ok := false
	err = fetch(func(ctx context.Context) error {
		for _, ref := range refs {
			msgs, err := s.svc.loadChunk(ctx, ref)
			if err != nil {
				return err
			}
			for i := range msgs {
				if msgs[i].ID == id {
					found, ok = msgs[i], true
					if i > 0 {
						p := msgs[i-1]
						prev = &p
					}
					return nil
				}
			}
		}
		return nil
	})
	return found, prev, ok, err
}

// nextSeq is the SQL of the seq of a new message: after every hot and
// archived one, and after the floor left by a clear or an expiry.
const nextSeq = `(SELECT ` + seqHigh + ` + 1)`

// seqHigh is the SQL of the highest seq the session used.
const seqHigh = `MAX(
	COALESCE((SELECT MAX(seq) FROM messages), 0),
	COALESCE((SELECT MAX(last_seq) FROM archive_chunks), 0),
	COALESCE((SELECT v FROM archive_meta WHERE k = 'seq_floor'), 0))`

// meta returns an archive_meta value (0 if unset).
func (s store) meta(k string) (int64, bool, error) {
	rows, err := s.st.Query(`SELECT v FROM archive_meta WHERE k = ?`, k)
	if err != nil {
		return 0, false, fmt.Errorf("read archive meta: %w", err)
	}
	if len(rows.Values) == 0 {
		return 0, false, nil
	}
	return i64(rows.Values[0][0]), true, nil
}

func (s store) setMeta(k string, v int64) error {
	if _, err := s.st.Exec(`INSERT INTO archive_meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, k, v); err != nil {
		return fmt.Errorf("write archive meta: %w", err)
	}
	return nil
}

func (s store) delMeta(k string) error {
	if _, err := s.st.Exec(`DELETE FROM archive_meta WHERE k = ?`, k); err != nil {
		return fmt.Errorf("write archive meta: %w", err)
	}
	return nil
}

// trash lists keys for the archiver to delete.
func (s store) trash(keys ...string) error {
	for _, k := range keys {
		if _, err := s.st.Exec(`INSERT INTO archive_trash (key) VALUES (?)`, k); err != nil {
			return fmt.Errorf("trash archive blob: %w", err)
		}
	}
	return nil
}

// untrash takes key off the trash: it is about to hold a blob again.
func (s store) untrash(key string) error {
	if _, err := s.st.Exec(`DELETE FROM archive_trash WHERE key = ?`, key); err != nil {
		return fmt.Errorf("trash archive blob: %w", err)
	}
	return nil
}

// archivedTotals sums the done chunks.
type archivedTotals struct {
	Chunks, Messages, Bytes, RawBytes int64
}

func (s store) archived() (archivedTotals, error) {
	rows, err := s.st.Query(`SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0), COALESCE(SUM(raw_bytes), 0) FROM archive_chunks WHERE state = ?`, chunkDone)
	if err != nil {
		return archivedTotals{}, fmt.Errorf("read chunk index: %w", err)
	}
	v := rows.Values[0]
	return archivedTotals{Chunks: i64(v[0]), Messages: i64(v[1]), Bytes: i64(v[2]), RawBytes: i64(v[3])}, nil
}

// hotCount returns how many messages are hot.
func (s store) hotCount() (int64, error) {
	rows, err := s.st.Query(`SELECT COUNT(*) FROM messages`)
	if err != nil {
		return 0, fmt.Errorf("count messages: %w", err)
	}
	return i64(rows.Values[0][0]), nil
}

// window returns the hot window and the chunk size of the session's agent
// (the defaults if it is not configured).
func (s *session) window() (hot, batch int) {
	if s.agent == nil {
		return DefaultHotMessages, DefaultArchiveBatch
	}
	return s.agent.HotMessages, s.agent.ArchiveBatch
}

// archiving reports whether the session has cold storage.
func (s *session) archiving() bool { return s.svc.Archive != nil }

// hook calls the Service's test hook, if any, at a step of the protocol.
func (s *session) hook(step string) {
	if h := s.svc.hook; h != nil {
		h(step)
	}
}

// lockArchiver takes the session's archiver guard, waiting (turn
// released) while another event holds it. The caller must call the
// returned function, holding the turn, when it is done.
func (s *session) lockArchiver() (func(), error) {
	for {
		s.mu.Lock()
		if !s.cold.busy {
			s.cold.busy = true
			done := make(chan struct{})
			s.cold.done = done
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				s.cold.busy = false
				s.mu.Unlock()
				close(done)
			}, nil
		}
		ch := s.cold.done
		s.mu.Unlock()
		closing := s.st.Closing()
		err := s.st.Release(func(ctx context.Context) error {
			select {
			case <-ch:
				return nil
			case <-closing:
				return errShutdown
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			return nil, err
		}
	}
}

// scheduleArchiver makes the archiver run soon, on the session's alarm.
func (s *session) scheduleArchiver() error {
	_, err := sessionScheduler.Add(s.st, schedule.Spec{ID: scheduleArchive, When: schedule.After(0), Callback: callbackArchive})
	return err
}

// afterReply runs in the turn that stores a reply's final status: it
// schedules the archiver if the hot window overflowed or the session's
// size drifted from its agent's tally. Cheap: two small queries.
func (s *session) afterReply() error {
	if !s.archiving() {
		return nil
	}
	n, err := s.store.hotCount()
	if err != nil {
		return err
	}
	hot, batch := s.window()
	due := n >= int64(hot+batch)
	if !due {
		reported, _, err := s.store.meta(metaHot)
		if err != nil {
			return err
		}
		d := s.st.Bytes() - reported
		due = d > reportBytes || d < -reportBytes
	}
	if !due {
		return nil
	}
	return s.scheduleArchiver()
}

// archiveRun is what one run of the archiver did.
type archiveRun struct {
	Chunks   int   `json:"chunks"`
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"` // compressed, as stored
	RawBytes int64 `json:"raw_bytes"`
}

// maintain is the archiver's run: it deletes the trash, settles chunks a
// crash left 'writing', moves the oldest messages beyond the hot window to
// the archive, and reports the session's bytes to its agent's tally. It
// finishes a delete forever that a crash interrupted. It is called in a
// turn and releases it while it calls the archive.
func (s *session) maintain(ctx context.Context) (archiveRun, error) {
	var run archiveRun
	if !s.archiving() {
		return run, nil
	}
	unlock, err := s.lockArchiver()
	if err != nil {
		return run, err
	}
	defer unlock()
	if s.cold.deleting {
		return run, s.finishDelete(ctx)
	}
	if err := s.settle(); err != nil {
		return run, err
	}
	hot, batch := s.window()
	more := false
	for {
		if run.Chunks >= maxChunksPerRun {
			more = true
			break
		}
		n, err := s.store.hotCount()
		if err != nil {
			return run, err
		}
		if n < int64(hot+batch) {
			break
		}
		wrote, err := s.archiveOldest(int(n)-hot, batch, false, &run)
		if err != nil {
			return run, err
		}
		if !wrote {
			break
		}
	}
	if err := s.report(); err != nil {
		return run, err
	}
	if more {
		return run, s.scheduleArchiver()
	}
	return run, nil
}

// settle deletes the trash and redoes the chunks left 'writing'.
func (s *session) settle() error {
	for {
		rows, err := s.st.Query(`SELECT n, key FROM archive_trash ORDER BY n LIMIT 256`)
		if err != nil {
			return fmt.Errorf("read archive trash: %w", err)
		}
		if len(rows.Values) == 0 {
			break
		}
		last := i64(rows.Values[len(rows.Values)-1][0])
		keys := make([]string, len(rows.Values))
		for i, v := range rows.Values {
			keys[i] = str(v[1])
		}
		err = s.st.Release(func(ctx context.Context) error {
			for _, k := range keys {
				if err := s.svc.Archive.Delete(ctx, k); err != nil {
					return err
				}
				s.svc.chunks.drop(k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete archive trash: %w", err)
		}
		s.svc.count(s.name).blobsDeleted.Add(int64(len(keys)))
		if _, err := s.st.Exec(`DELETE FROM archive_trash WHERE n <= ?`, last); err != nil {
			return fmt.Errorf("delete archive trash: %w", err)
		}
	}
	writing, err := s.store.chunksWhere(`state = ? ORDER BY first_seq`, chunkWriting)
	if err != nil {
		return err
	}
	for _, ref := range writing {
		var run archiveRun
		done, err := s.writeChunk(ref, &run)
		if err != nil {
			return err
		}
		if !done {
			return cairn.Errorf(cairn.Conflict, "messages %d-%d changed while they were archived; retrying later", ref.First, ref.Last)
		}
	}
	return nil
}

// archiveOldest moves the oldest messages, at most max of them and at
// most batch, to a new chunk. Only a prefix of the history can move: it
// stops before a message in flight (streaming, pending, awaiting
// approval), and never ends a chunk with a user message whose reply stays
// hot. With whole set, a message in flight is an error (Conflict). It
// reports whether it wrote a chunk.
func (s *session) archiveOldest(max, batch int, whole bool, run *archiveRun) (bool, error) {
	if max <= 0 {
		return false, nil
	}
	rows, err := s.st.Query(`SELECT seq, role, status, length(parts) + chunks * ? FROM messages ORDER BY seq LIMIT ?`, chunkBytes, min(max, batch)+1)
	if err != nil {
		return false, fmt.Errorf("plan archive chunk: %w", err)
	}
	vals := rows.Values
	n := 0
	var raw int64
	for n < len(vals) && n < min(max, batch) {
		st := Status(str(vals[n][2]))
		if st == Streaming || st == Pending || st == AwaitingApproval {
			if whole {
				return false, cairn.Errorf(cairn.Conflict, "the session has a message in flight (%s)", st)
			}
			break
		}
		size := i64(vals[n][3]) + 256
		if n > 0 && raw+size > maxChunkRaw {
			break
		}
		raw += size
		n++
	}
	if n > 0 && n < len(vals) && Role(str(vals[n-1][1])) == User && Role(str(vals[n][1])) == Assistant && (!whole || n > 1) {
		n-- // keep a question with its reply
	}
	if n == 0 {
		return false, nil
	}
	first, last := i64(vals[0][0]), i64(vals[n-1][0])
	ref := chunkRef{First: first, Last: last, Count: int64(n), Key: chunkKey(s.st.ID(), first, last), State: chunkWriting, Created: s.st.Now().UnixMilli()}
	if _, err := s.st.Exec(`INSERT INTO archive_chunks (`+chunkColumns+`) VALUES (?, ?, ?, ?, 0, 0, ?, ?)`,
		ref.First, ref.Last, ref.Count, ref.Key, ref.State, ref.Created); err != nil {
		return false, fmt.Errorf("plan archive chunk: %w", err)
	}
	// A stale blob under the same key is overwritten, not deleted after.
	if err := s.store.untrash(ref.Key); err != nil {
		return false, err
	}
	return s.writeChunk(ref, run)
}

// writeChunk takes chunk ref, recorded 'writing', through steps (b) and
// (c): it writes its hot rows to the archive and, if they did not change
// meanwhile, deletes them and marks it done. A chunk with no hot rows left
// (the chat was cleared) is dropped with its blob. Rows that changed are
// written again, a few times; then the chunk stays 'writing' for a later
// run. It reports whether the chunk was settled (done or dropped).
func (s *session) writeChunk(ref chunkRef, run *archiveRun) (bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		rows, err := s.st.Query(`SELECT `+messageColumns+`, seq, rev FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq`, ref.First, ref.Last)
		if err != nil {
			return false, fmt.Errorf("read messages to archive: %w", err)
		}
		if len(rows.Values) == 0 {
			return true, s.dropChunk(ref)
		}
		msgs, err := s.store.decode(rows)
		if err != nil {
			return false, err
		}
		lines := make([]archivedLine, len(msgs))
		revs := make([]int64, len(msgs))
		for i, v := range rows.Values {
			lines[i] = archivedLine{Seq: i64(v[len(v)-2]), Message: msgs[i]}
			revs[i] = i64(v[len(v)-1])
			if st := msgs[i].Status; st == Streaming || st == Pending || st == AwaitingApproval {
				return true, s.dropChunk(ref) // in flight again: not archivable now
			}
		}
		var blob []byte
		var rawLen int
		// (b): the 'writing' row is durable before the Put starts.
		err = s.st.Release(func(ctx context.Context) error {
			s.hook("chunk-writing")
			raw, err := encodeLines(lines)
			if err != nil {
				return err
			}
			rawLen = len(raw)
			if blob, err = archive.EncodeChunk(raw); err != nil {
				return err
			}
			s.svc.chunks.drop(ref.Key)
			if err := s.svc.Archive.Put(ctx, ref.Key, blob); err != nil {
				return err
			}
			s.hook("chunk-put")
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("archive messages %d-%d: %w", ref.First, ref.Last, err)
		}
		// (c): the rows must be what was written, and the chunk still ours.
		cur, err := s.st.Query(`SELECT rev FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq`, ref.First, ref.Last)
		if err != nil {
			return false, fmt.Errorf("check archived messages: %w", err)
		}
		same := len(cur.Values) == len(revs)
		for i := 0; same && i < len(revs); i++ {
			same = i64(cur.Values[i][0]) == revs[i]
		}
		state, err := s.st.Query(`SELECT state FROM archive_chunks WHERE first_seq = ?`, ref.First)
		if err != nil {
			return false, fmt.Errorf("check archived messages: %w", err)
		}
		if len(state.Values) == 0 || str(state.Values[0][0]) != chunkWriting {
			// Cleared meanwhile: the blob is nobody's.
			return true, s.store.trash(ref.Key)
		}
		if !same {
			continue
		}
		if _, err := s.st.Exec(`DELETE FROM message_chunks WHERE message_id IN (SELECT id FROM messages WHERE seq BETWEEN ? AND ? AND chunks > 0)`, ref.First, ref.Last); err != nil {
			return false, fmt.Errorf("delete archived messages: %w", err)
		}
		if _, err := s.st.Exec(`DELETE FROM messages WHERE seq BETWEEN ? AND ?`, ref.First, ref.Last); err != nil {
			return false, fmt.Errorf("delete archived messages: %w", err)
		}
		if _, err := s.st.Exec(`UPDATE archive_chunks SET state = ?, count = ?, bytes = ?, raw_bytes = ? WHERE first_seq = ?`,
			chunkDone, len(lines), len(blob), rawLen, ref.First); err != nil {
			return false, fmt.Errorf("index archived chunk: %w", err)
		}
		run.Chunks++
		run.Messages += int64(len(lines))
		run.Bytes += int64(len(blob))
		run.RawBytes += int64(rawLen)
		c := s.svc.count(s.name)
		c.chunksWritten.Add(1)
		c.messagesArchived.Add(int64(len(lines)))
		c.bytesWritten.Add(int64(len(blob)))
		return true, nil
	}
	return false, nil // changed under us every time: left 'writing' for the next run
}

// dropChunk forgets a 'writing' chunk whose rows cannot be archived now:
// its blob (if the Put happened) is trashed and the row deleted, in one
// turn, so the next run deletes the blob before writing anything.
func (s *session) dropChunk(ref chunkRef) error {
	if err := s.store.trash(ref.Key); err != nil {
		return err
	}
	if _, err := s.st.Exec(`DELETE FROM archive_chunks WHERE first_seq = ? AND state = ?`, ref.First, chunkWriting); err != nil {
		return fmt.Errorf("drop archive chunk: %w", err)
	}
	return nil
}

// clearArchive forgets the session's archived messages (the chat was
// cleared): the chunks' blobs go to the trash, and the seq floor keeps
// new messages' seqs, and so their chunks' keys, after the old ones.
func (s *session) clearArchive() error {
	if _, err := s.st.Exec(`INSERT INTO archive_meta (k, v) VALUES (?, (SELECT `+seqHigh+`))
		ON CONFLICT (k) DO UPDATE SET v = excluded.v`, metaSeqFloor); err != nil {
		return fmt.Errorf("clear archive: %w", err)
	}
	if _, err := s.st.Exec(`INSERT INTO archive_trash (key) SELECT key FROM archive_chunks ORDER BY first_seq`); err != nil {
		return fmt.Errorf("clear archive: %w", err)
	}
	if _, err := s.st.Exec(`DELETE FROM archive_chunks`); err != nil {
		return fmt.Errorf("clear archive: %w", err)
	}
	if !s.archiving() {
		return nil
	}
	return s.scheduleArchiver()
}

// report brings the session's figures in its agent's usage tally up to
// date: it adds the change since the last report. It releases the turn
// for the call to the tally.
func (s *session) report() error {
	if s.agent == nil || s.svc.ns == nil {
		return nil
	}
	hot := s.st.Bytes()
	totals, err := s.store.archived()
	if err != nil {
		return err
	}
	return s.reportAs(hot, totals.Bytes)
}

// reportAs reports the session's figures as hot and archived bytes.
func (s *session) reportAs(hot, archived int64) error {
	if s.agent == nil || s.svc.ns == nil {
		return nil
	}
	rh, _, err := s.store.meta(metaHot)
	if err != nil {
		return err
	}
	ra, _, err := s.store.meta(metaArchived)
	if err != nil {
		return err
	}
	d := tally{HotBytes: hot - rh, ArchivedBytes: archived - ra}
	if d.HotBytes == 0 && d.ArchivedBytes == 0 {
		return nil
	}
	var terr error
	if err := s.st.Release(func(ctx context.Context) error {
		terr = s.svc.addTally(ctx, s.name, d)
		return nil
	}); err != nil {
		return err
	}
	if terr != nil {
		// Best effort: the next report carries the difference.
		s.st.Runtime().Logger.Warn("agent usage tally", "agent", s.name, "err", terr)
		return nil
	}
	if err := s.store.setMeta(metaHot, hot); err != nil {
		return err
	}
	return s.store.setMeta(metaArchived, archived)
}

// isGone reports whether the session's storage was deleted by this
// instance (it expired or was deleted): nothing may touch it any more.
func (s *session) isGone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cold.gone
}

// errGone answers an event that came after the session's storage was
// deleted in the same instance.
var errGone = errors.New("the session's storage was deleted")
