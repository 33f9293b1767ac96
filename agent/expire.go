package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
)

// Session TTL, archive-now, delete forever and restore.
//
// A session idle for longer than its agent's SessionTTL expires: its
// alarm (the reserved schedule cairn:ttl, moved forward by every request
// and WebSocket frame) archives it whole, with no traffic needed. Expiry,
// and POST /archive which does the same at once:
//
//  1. archive every hot message (chunks, as the archiver does);
//  2. in a turn, build the manifest: every chunk of the index, the
//     session's KV (its state document), the seq reached, and mark the
//     session 'expiring'; turn released, Put the manifest (durable,
//     verified) under "agent/{object ID}/manifest";
//  3. in a turn, if nothing happened meanwhile, State.DeleteAll: the
//     object's storage (database, alarm) is gone; its blobs stay.
//
// A crash before 3 leaves a session that still has everything (an
// 'expiring' mark makes its next activation trash the manifest); running
// it again is safe. A session is not idle, and does not expire, while a
// reply is generated or parked for approval, a message waits, a WebSocket
// is open, or it has schedules of its own (failed ones aside): its TTL
// then counts from that moment.
//
// A session that activates with an empty database reads its manifest, if
// any: the chunk index and the KV come back, new messages continue the
// seqs, and the newest chunks come back hot (as many as the model's
// context needs, MaxHistory messages), their blobs and the manifest going
// to the trash. With Agent.DiscardExpired the session starts fresh instead,
// and the old blobs are deleted.
//
// DELETE deletes a session forever: marked 'deleting', its blobs are
// deleted (the manifest first), then its storage. A crash in between
// leaves the mark, and the archiver finishes the job; meanwhile other
// requests are refused (409).

// manifest is an expired session, as its manifest blob holds it.
type manifest struct {
	Version  int        `json:"version"`
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Expired  time.Time  `json:"expired_at"`
	Reason   string     `json:"reason"`
	SeqFloor int64      `json:"seq_floor"`
	Chunks   []chunkRef `json:"chunks"`
	KV       []kvEntry  `json:"kv"`
	// What the agent's usage tally holds for the session, after expiry.
	ReportedHot      int64 `json:"reported_hot"`
	ReportedArchived int64 `json:"reported_archived"`
}

type kvEntry struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// ttl returns the session's TTL, or 0 if it never expires.
func (s *session) ttl() time.Duration {
	if s.agent == nil || s.agent.SessionTTL <= 0 || !s.archiving() {
		return 0
	}
	return s.agent.SessionTTL
}

// touch records activity: it counts the event and moves the TTL's
// deadline forward (a write at most every 1/64 of the TTL, an hour at
// most).
func (s *session) touch() {
	s.mu.Lock()
	s.cold.activity++
	gone := s.cold.gone
	s.mu.Unlock()
	if gone || s.cold.deleting {
		return
	}
	now := s.st.Now()
	s.cold.lastActive = now
	ttl := s.ttl()
	if ttl <= 0 {
		return
	}
	if !s.cold.ttlKnown {
		sc, err := sessionScheduler.Get(s.st, scheduleTTL)
		switch {
		case err == nil && !sc.Failed:
			s.cold.ttlAt = sc.Time
		case err != nil && cairn.ErrorCode(err) != cairn.NotFound:
			s.st.Runtime().Logger.Warn("session TTL", "session", s.st.Name(), "err", err)
			return
		}
		s.cold.ttlKnown = true
	}
	want := now.Add(ttl)
	if !s.cold.ttlAt.IsZero() && want.Sub(s.cold.ttlAt) <= min(ttl/64, time.Hour) {
		return
	}
	if err := s.armTTL(want); err != nil {
		s.st.Runtime().Logger.Warn("session TTL", "session", s.st.Name(), "err", err)
	}
}

// armTTL sets the TTL's schedule to at.
func (s *session) armTTL(at time.Time) error {
	if _, err := sessionScheduler.Add(s.st, schedule.Spec{ID: scheduleTTL, When: schedule.At(at), Callback: callbackTTL}); err != nil {
		return err
	}
	s.cold.ttlAt, s.cold.ttlKnown = at, true
	return nil
}

// busyReason says why the session is not idle, or "".
func (s *session) busyReason() (string, error) {
	s.mu.Lock()
	busy := s.busy
	s.mu.Unlock()
	if busy {
		return "a reply is being generated", nil
	}
	c := s.chat()
	c.mu.Lock()
	jobs := len(c.jobs) + len(c.queued)
	c.mu.Unlock()
	if jobs > 0 {
		return "a chat request is queued", nil
	}
	rows, err := s.st.Query(`SELECT COUNT(*) FROM messages WHERE status IN (?, ?, ?)`, string(Streaming), string(Pending), string(AwaitingApproval))
	if err != nil {
		return "", fmt.Errorf("check session: %w", err)
	}
	if i64(rows.Values[0][0]) > 0 {
		return "a message is in flight (streaming, pending or awaiting approval)", nil
	}
	all, err := sessionScheduler.List(s.st)
	if err != nil {
		return "", err
	}
	for _, sc := range all {
		if !sc.Failed && !reservedSchedule(sc.ID, sc.Callback) {
			return "it has schedules", nil
		}
	}
	return "", nil
}

// ttlFired runs when the TTL's schedule fires: the session expires if it
// has been idle for its TTL, else the schedule moves on.
func (s *session) ttlFired(ctx context.Context) error {
	ttl := s.ttl()
	if ttl <= 0 {
		return nil // TTL off since: the one-shot schedule goes
	}
	now := s.st.Now()
	if last := s.cold.lastActive; !last.IsZero() && now.Before(last.Add(ttl)) {
		return s.armTTL(last.Add(ttl))
	}
	if why, err := s.busyReason(); err != nil {
		return err
	} else if why != "" {
		return s.armTTL(now.Add(ttl))
	}
	if len(s.st.WebSockets("")) > 0 {
		return s.armTTL(now.Add(ttl))
	}
	_, err := s.expire(ctx, "ttl")
	if cairn.ErrorCode(err) == cairn.Conflict {
		// Used meanwhile: not idle after all.
		return s.armTTL(s.st.Now().Add(ttl))
	}
	return err
}

// Expiry is the answer of POST /archive: what the session's archive holds.
type Expiry struct {
	Archived bool      `json:"archived"`
	Messages int64     `json:"messages"` // messages in the archive
	Chunks   int64     `json:"chunks"`   // chunks in the archive
	Bytes    int64     `json:"bytes"`    // bytes in the archive (chunks and manifest)
	Moved    int64     `json:"moved"`    // messages moved by this call
	Manifest string    `json:"manifest"` // the manifest's key
	At       time.Time `json:"expired_at"`
}

// expire archives the whole session and deletes its storage (see the
// comment at the top). It returns Conflict, leaving the session as it is
// (some chunks archived), if the session is busy or was used meanwhile.
func (s *session) expire(ctx context.Context, reason string) (Expiry, error) {
	var out Expiry
	if !s.archiving() {
		return out, errNoArchive
	}
	if why, err := s.busyReason(); err != nil {
		return out, err
	} else if why != "" {
		return out, cairn.Errorf(cairn.Conflict, "the session cannot be archived now: %s", why)
	}
	unlock, err := s.lockArchiver()
	if err != nil {
		return out, err
	}
	defer unlock()
	if s.cold.deleting {
		return out, cairn.Errorf(cairn.Conflict, "the session is being deleted")
	}
	s.mu.Lock()
	act := s.cold.activity
	s.mu.Unlock()
	if err := s.settle(); err != nil {
		return out, err
	}
	_, batch := s.window()
	var run archiveRun
	for {
		n, err := s.store.hotCount()
		if err != nil {
			return out, err
		}
		if n == 0 {
			break
		}
		wrote, err := s.archiveOldest(int(n), batch, true, &run)
		if err != nil {
			return out, err
		}
		if !wrote {
			return out, cairn.Errorf(cairn.Conflict, "the session changed while it was archived")
		}
	}
	s.hook("expire-chunks")

	// 2: the manifest.
	refs, err := s.store.chunksWhere(`state = ? ORDER BY first_seq`, chunkDone)
	if err != nil {
		return out, err
	}
	kv, err := s.st.List(cairn.ListOptions{})
	if err != nil {
		return out, err
	}
	floor, err := s.st.Query(`SELECT ` + seqHigh)
	if err != nil {
		return out, fmt.Errorf("read seq: %w", err)
	}
	m := manifest{Version: 1, ID: s.st.ID().String(), Name: s.st.Name(), Expired: s.st.Now().UTC(), Reason: reason,
		SeqFloor: i64(floor.Values[0][0]), Chunks: refs}
	var archived int64
	for _, ref := range refs {
		archived += ref.Bytes
		out.Messages += ref.Count
	}
	for _, e := range kv {
		m.KV = append(m.KV, kvEntry{Key: e.Key, Value: e.Value})
	}
	if err := s.store.setMeta(metaExpiring, 1); err != nil {
		return out, err
	}
	key := manifestKey(s.st.ID())
	if err := s.store.untrash(key); err != nil {
		return out, err
	}
	// The tally will hold the archive with the manifest (its size is
	// known once encoded: the field is fixed-width enough to settle in
	// two rounds).
	var blob []byte
	for i := 0; i < 3; i++ {
		m.ReportedArchived = archived + int64(len(blob))
		if blob, err = json.Marshal(m); err != nil {
			return out, err
		}
	}
	err = s.st.Release(func(ctx context.Context) error {
		if err := s.svc.Archive.Put(ctx, key, blob); err != nil {
			return err
		}
		s.hook("expire-manifest")
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("archive session: manifest: %w", err)
	}
	s.svc.count(s.name).bytesWritten.Add(int64(len(blob)))
	if err := s.reportAs(0, m.ReportedArchived); err != nil {
		return out, err
	}

	// 3: nothing may have happened meanwhile.
	s.mu.Lock()
	changed := s.cold.activity != act
	s.mu.Unlock()
	n, err := s.store.hotCount()
	if err != nil {
		return out, err
	}
	totals, err := s.store.archived()
	if err != nil {
		return out, err
	}
	if changed || n > 0 || totals.Chunks != int64(len(refs)) {
		if err := s.store.trash(key); err != nil {
			return out, err
		}
		if err := s.store.delMeta(metaExpiring); err != nil {
			return out, err
		}
		if err := s.scheduleArchiver(); err != nil { // reports the hot bytes again
			return out, err
		}
		return out, cairn.Errorf(cairn.Conflict, "the session was used while it was archived; it stays")
	}
	if err := s.st.DeleteAll(); err != nil {
		return out, err
	}
	s.mu.Lock()
	s.cold.gone = true
	s.mu.Unlock()
	s.svc.count(s.name).sessionsExpired.Add(1)
	out = Expiry{Archived: true, Messages: out.Messages, Chunks: int64(len(refs)), Bytes: m.ReportedArchived,
		Moved: run.Messages, Manifest: key, At: m.Expired}
	return out, nil
}

// deleteForever deletes the session's blobs and storage.
func (s *session) deleteForever(ctx context.Context) error {
	if why, err := s.busyReason(); err != nil {
		return err
	} else if strings.HasPrefix(why, "a reply") || strings.HasPrefix(why, "a chat") {
		return cairn.Errorf(cairn.Conflict, "the session cannot be deleted now: %s (cancel it first)", why)
	}
	if !s.archiving() {
		if err := s.reportAs(0, 0); err != nil {
			return err
		}
		return s.deleteStorage()
	}
	if err := s.store.setMeta(metaDeleting, 1); err != nil {
		return err
	}
	s.cold.deleting = true
	unlock, err := s.lockArchiver()
	if err != nil {
		return err
	}
	defer unlock()
	if s.isGone() {
		return nil // the archiver finished it meanwhile
	}
	return s.finishDelete(ctx)
}

// finishDelete deletes the blobs of a session marked deleting, then its
// storage. The archiver guard is held.
func (s *session) finishDelete(ctx context.Context) error {
	prefix := archivePrefix(s.st.ID())
	var n int
	err := s.st.Release(func(ctx context.Context) error {
		if err := s.svc.Archive.Delete(ctx, manifestKey(s.st.ID())); err != nil {
			return err
		}
		keys, err := s.svc.Archive.List(ctx, prefix)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := s.svc.Archive.Delete(ctx, k); err != nil {
				return err
			}
			if i == len(keys)/2 {
				s.hook("delete-blobs")
			}
		}
		n = len(keys) + 1
		left, err := s.svc.Archive.List(ctx, prefix)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return fmt.Errorf("%d blobs left under %s", len(left), prefix)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete session archive: %w", err)
	}
	s.svc.chunks.drop(prefix)
	s.svc.count(s.name).blobsDeleted.Add(int64(n))
	if err := s.reportAs(0, 0); err != nil {
		return err
	}
	return s.deleteStorage()
}

// deleteStorage deletes the session's storage in the turn.
func (s *session) deleteStorage() error {
	if err := s.st.DeleteAll(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cold.gone = true
	s.mu.Unlock()
	s.svc.count(s.name).sessionsDeleted.Add(1)
	return nil
}

// activateCold runs when the session activates: a session set up before
// finds its cold storage work (chunks a crash left 'writing', trash, an
// interrupted expiry or delete) and schedules the archiver for it; an
// empty one restores itself from its manifest, if it has one.
func (s *session) activateCold() error {
	_, init, err := s.store.meta(metaInit)
	if err != nil {
		return err
	}
	if init {
		return s.resumeCold()
	}
	if !s.archiving() || !strings.Contains(s.st.Name(), "/") {
		return s.store.setMeta(metaInit, 1)
	}
	key := manifestKey(s.st.ID())
	var blob []byte
	err = inline(func(ctx context.Context) error {
		var err error
		blob, err = s.svc.Archive.Get(ctx, key)
		return err
	})
	if cairn.ErrorCode(err) == cairn.NotFound {
		return s.store.setMeta(metaInit, 1)
	}
	if err != nil {
		return cairn.Errorf(cairn.Unavailable, "session %s: read its archive manifest: %v", s.st.Name(), err)
	}
	var m manifest
	if err := json.Unmarshal(blob, &m); err != nil || m.Version != 1 || m.ID != s.st.ID().String() {
		return cairn.Errorf(cairn.Internal, "session %s: archive manifest %s is not this session's (version %d, id %q, %v)", s.st.Name(), key, m.Version, m.ID, err)
	}
	if err := s.store.setMeta(metaSeqFloor, m.SeqFloor); err != nil {
		return err
	}
	if s.agent != nil && s.agent.DiscardExpired {
		keys := []string{key}
		for _, ref := range m.Chunks {
			keys = append(keys, ref.Key)
		}
		if err := s.store.trash(keys...); err != nil {
			return err
		}
		if err := s.store.setMeta(metaArchived, m.ReportedArchived); err != nil {
			return err
		}
		s.svc.count(s.name).sessionsDiscarded.Add(1)
		if err := s.store.setMeta(metaInit, 1); err != nil {
			return err
		}
		return s.scheduleArchiver()
	}
	return s.restore(m)
}

// restore brings an expired session back from its manifest m.
func (s *session) restore(m manifest) error {
	for _, ref := range m.Chunks {
		if _, err := s.st.Exec(`INSERT INTO archive_chunks (`+chunkColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			ref.First, ref.Last, ref.Count, ref.Key, ref.Bytes, ref.RawBytes, chunkDone, ref.Created); err != nil {
			return fmt.Errorf("restore chunk index: %w", err)
		}
	}
	for i := 0; i < len(m.KV); i += 100 {
		var es []cairn.Entry
		for _, e := range m.KV[i:min(i+100, len(m.KV))] {
			es = append(es, cairn.Entry{Key: e.Key, Value: e.Value})
		}
		if err := s.st.PutMany(es); err != nil {
			return fmt.Errorf("restore state: %w", err)
		}
	}
	if err := s.store.setMeta(metaHot, m.ReportedHot); err != nil {
		return err
	}
	if err := s.store.setMeta(metaArchived, m.ReportedArchived); err != nil {
		return err
	}
	if err := s.store.trash(manifestKey(s.st.ID())); err != nil {
		return err
	}
	// The model's context comes back hot.
	want := int64(100)
	if s.agent != nil {
		want = int64(s.agent.MaxHistory)
	}
	var back int64
	for i := len(m.Chunks) - 1; i >= 0 && back < want; i-- {
		ref := m.Chunks[i]
		var msgs []archivedLine
		if err := inline(func(ctx context.Context) error {
			var err error
			msgs, err = s.svc.loadChunk(ctx, ref)
			return err
		}); err != nil {
			return cairn.Errorf(cairn.Unavailable, "session %s: restore: %v", s.st.Name(), err)
		}
		for j := range msgs {
			if err := s.store.insertAt(&msgs[j].Message, msgs[j].Seq); err != nil {
				return fmt.Errorf("restore messages: %w", err)
			}
		}
		if _, err := s.st.Exec(`DELETE FROM archive_chunks WHERE first_seq = ?`, ref.First); err != nil {
			return fmt.Errorf("restore chunk index: %w", err)
		}
		if err := s.store.trash(ref.Key); err != nil {
			return err
		}
		back += int64(len(msgs))
	}
	s.svc.count(s.name).sessionsRestored.Add(1)
	if err := s.store.setMeta(metaInit, 1); err != nil {
		return err
	}
	return s.scheduleArchiver()
}

// resumeCold schedules the archiver for work a stopped process left, and
// loads the marks the session carries.
func (s *session) resumeCold() error {
	_, deleting, err := s.store.meta(metaDeleting)
	if err != nil {
		return err
	}
	s.cold.deleting = deleting
	_, expiring, err := s.store.meta(metaExpiring)
	if err != nil {
		return err
	}
	if expiring && !deleting {
		// An expiry stopped after its manifest: the session lives on,
		// and that manifest must never restore it.
		if err := s.store.trash(manifestKey(s.st.ID())); err != nil {
			return err
		}
		if err := s.store.delMeta(metaExpiring); err != nil {
			return err
		}
	}
	rows, err := s.st.Query(`SELECT (SELECT COUNT(*) FROM archive_trash) + (SELECT COUNT(*) FROM archive_chunks WHERE state = ?)`, chunkWriting)
	if err != nil {
		return fmt.Errorf("read chunk index: %w", err)
	}
	if (deleting || i64(rows.Values[0][0]) > 0) && s.archiving() {
		return s.scheduleArchiver()
	}
	return nil
}
