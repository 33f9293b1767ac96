package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-dev/cairn"
)

// Usage of storage, per session and per agent.
//
// A session knows its own figures exactly: hot bytes (its database, as
// the catalog has it) and archived bytes (the sum of its chunk index).
//
// An agent's figures are kept in a tally, one object per agent in
// namespace UsageNamespace, that its sessions add their changes to: the
// archiver reports a session's figures after it ran (and schedules itself
// when a reply moved the hot bytes by 256 KiB), expiry, restore and
// delete report theirs. So the totals cost no scan, and survive restarts;
// they are best effort: a crash between a report and its record in the
// session can count one change twice, and sessions never touched since
// this version (or deleted through the admin API) are not counted.
//
// The Service also counts, in memory since it started, chunks written and
// read, messages archived, bytes written, blobs deleted, and sessions
// expired, restored, discarded and deleted: see Stats.

// UsageNamespace is the namespace of the agents' usage tallies (one object
// per agent, named after it). Register registers it.
const UsageNamespace = "agent-usage"

// tallyKey is the KV key of a tally.
const tallyKey = "usage"

// tally is an agent's bytes, hot and archived.
type tally struct {
	HotBytes      int64 `json:"hot_bytes"`
	ArchivedBytes int64 `json:"archived_bytes"`
}

// coldDefaults fills in and checks an agent's cold storage settings.
func coldDefaults(a *Agent) error {
	if a.HotMessages <= 0 {
		a.HotMessages = max(DefaultHotMessages, a.MaxHistory)
	}
	if a.HotMessages < a.MaxHistory {
		return cairn.Errorf(cairn.Invalid, "agent %q: HotMessages (%d) must be at least MaxHistory (%d): the model's context is read from the hot messages", a.Name, a.HotMessages, a.MaxHistory)
	}
	if a.ArchiveBatch <= 0 {
		a.ArchiveBatch = DefaultArchiveBatch
	}
	if a.SessionTTL == 0 {
		a.SessionTTL = DefaultSessionTTL
	}
	if a.SessionTTL < 0 {
		a.SessionTTL = NeverExpire
	}
	return nil
}

// agentCounters are one agent's counters since the Service started.
type agentCounters struct {
	chunksWritten, messagesArchived, bytesWritten, blobsDeleted           atomic.Int64
	sessionsExpired, sessionsRestored, sessionsDiscarded, sessionsDeleted atomic.Int64
}

// serviceStats holds the counters of every agent (and of sessions of
// agents no longer configured, under their names), and chunk reads.
type serviceStats struct {
	mu         sync.Mutex
	byAgent    map[string]*agentCounters
	chunkReads atomic.Int64
}

// count returns the counters of agent name.
func (s *Service) count(name string) *agentCounters {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	if s.stats.byAgent == nil {
		s.stats.byAgent = make(map[string]*agentCounters)
	}
	c := s.stats.byAgent[name]
	if c == nil {
		c = &agentCounters{}
		s.stats.byAgent[name] = c
	}
	return c
}

// ArchiveStats are an agent's cold storage counters since the Service
// started: they only grow.
type ArchiveStats struct {
	Agent             string `json:"agent"`
	ChunksWritten     int64  `json:"chunks_written"`
	MessagesArchived  int64  `json:"messages_archived"`
	BytesWritten      int64  `json:"bytes_written"` // chunks and manifests, compressed
	BlobsDeleted      int64  `json:"blobs_deleted"`
	SessionsExpired   int64  `json:"sessions_expired"` // by TTL or POST /archive
	SessionsRestored  int64  `json:"sessions_restored"`
	SessionsDiscarded int64  `json:"sessions_discarded"` // expired, started fresh (DiscardExpired)
	SessionsDeleted   int64  `json:"sessions_deleted"`
}

// Stats returns the cold storage counters of each agent (configured ones
// first, in order, then any other that counted something), and how many
// chunks were read from the archive.
func (s *Service) Stats() ([]ArchiveStats, int64) {
	var out []ArchiveStats
	seen := map[string]bool{}
	add := func(name string) {
		c := s.count(name)
		seen[name] = true
		out = append(out, ArchiveStats{Agent: name,
			ChunksWritten: c.chunksWritten.Load(), MessagesArchived: c.messagesArchived.Load(),
			BytesWritten: c.bytesWritten.Load(), BlobsDeleted: c.blobsDeleted.Load(),
			SessionsExpired: c.sessionsExpired.Load(), SessionsRestored: c.sessionsRestored.Load(),
			SessionsDiscarded: c.sessionsDiscarded.Load(), SessionsDeleted: c.sessionsDeleted.Load()})
	}
	for _, n := range s.order {
		add(n)
	}
	s.stats.mu.Lock()
	var others []string
	for n := range s.stats.byAgent {
		if !seen[n] {
			others = append(others, n)
		}
	}
	s.stats.mu.Unlock()
	sort.Strings(others)
	for _, n := range others {
		add(n)
	}
	return out, s.stats.chunkReads.Load()
}

// registerUsage registers the tallies' namespace and sets up the chunk
// cache.
func (s *Service) registerUsage(rt *cairn.Runtime) error {
	s.chunks = newChunkCache(s.ChunkCacheBytes)
	ns, err := rt.Register(UsageNamespace, cairn.Class{New: func(st *cairn.State) (any, error) { return struct{}{}, nil }})
	if err != nil {
		return err
	}
	s.usageNS = ns
	return nil
}

// addTally adds d to agent's tally.
func (s *Service) addTally(ctx context.Context, agent string, d tally) error {
	if s.usageNS == nil {
		return nil
	}
	stub, err := s.usageNS.GetByName(agent)
	if err != nil {
		return err
	}
	return stub.Run(ctx, func(ctx context.Context, st *cairn.State) error {
		t, err := readTally(st)
		if err != nil {
			return err
		}
		t.HotBytes += d.HotBytes
		t.ArchivedBytes += d.ArchivedBytes
		b, _ := json.Marshal(t)
		return st.Put(tallyKey, b)
	})
}

func readTally(st *cairn.State) (tally, error) {
	var t tally
	b, ok, err := st.Get(tallyKey)
	if err != nil || !ok {
		return t, err
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, cairn.Errorf(cairn.Internal, "usage tally: %v", err)
	}
	return t, nil
}

// AgentUsage is an agent's storage: the bytes of its sessions, hot (in
// their databases) and archived (chunks and manifests), from its tally,
// and its counters since the server started.
type AgentUsage struct {
	Agent         string       `json:"agent"`
	HotBytes      int64        `json:"hot_bytes"`
	ArchivedBytes int64        `json:"archived_bytes"`
	TotalBytes    int64        `json:"total_bytes"`
	Counters      ArchiveStats `json:"since_start"`
}

// Usage returns the storage of each configured agent, in configuration
// order. It runs one event on each agent's tally.
func (s *Service) Usage(ctx context.Context) ([]AgentUsage, error) {
	stats, _ := s.Stats()
	var out []AgentUsage
	for _, st := range stats {
		if _, ok := s.agents[st.Agent]; !ok {
			continue
		}
		u, err := s.agentUsage(ctx, st.Agent)
		if err != nil {
			return nil, err
		}
		u.Counters = st
		out = append(out, u)
	}
	return out, nil
}

func (s *Service) agentUsage(ctx context.Context, agent string) (AgentUsage, error) {
	u := AgentUsage{Agent: agent}
	if s.usageNS == nil {
		return u, nil
	}
	stub, err := s.usageNS.GetByName(agent)
	if err != nil {
		return u, err
	}
	var t tally
	err = stub.Run(ctx, func(ctx context.Context, st *cairn.State) error {
		t, err = readTally(st)
		return err
	})
	u.HotBytes, u.ArchivedBytes, u.TotalBytes = t.HotBytes, t.ArchivedBytes, t.HotBytes+t.ArchivedBytes
	return u, err
}

// serveUsage serves GET /v1/agents/{agent}/usage.
func (s *Service) serveUsage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("agent")
	if _, ok := s.agents[name]; !ok {
		if err := validAgentName(name); err != nil {
			cairn.WriteError(w, err)
			return
		}
		cairn.WriteError(w, cairn.Errorf(cairn.NotFound, "no agent %q", name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	u, err := s.agentUsage(ctx, name)
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	stats, _ := s.Stats()
	for _, st := range stats {
		if st.Agent == name {
			u.Counters = st
		}
	}
	cairn.WriteJSON(w, http.StatusOK, u)
}

// SessionUsage is the answer of GET .../usage on a session.
type SessionUsage struct {
	HotBytes         int64      `json:"hot_bytes"` // the session's database
	HotMessages      int64      `json:"hot_messages"`
	ArchivedBytes    int64      `json:"archived_bytes"` // its chunks, compressed
	ArchivedRawBytes int64      `json:"archived_raw_bytes"`
	ArchivedChunks   int64      `json:"archived_chunks"`
	ArchivedMessages int64      `json:"archived_messages"`
	TotalBytes       int64      `json:"total_bytes"`
	Messages         int64      `json:"messages"`             // hot and archived
	ExpiresAt        *time.Time `json:"expires_at,omitempty"` // when it expires if left idle
}

// usage returns the session's figures.
func (s *session) usage() (SessionUsage, error) {
	var u SessionUsage
	n, err := s.store.hotCount()
	if err != nil {
		return u, err
	}
	a, err := s.store.archived()
	if err != nil {
		return u, err
	}
	u = SessionUsage{HotBytes: s.st.Bytes(), HotMessages: n, ArchivedBytes: a.Bytes, ArchivedRawBytes: a.RawBytes,
		ArchivedChunks: a.Chunks, ArchivedMessages: a.Messages}
	u.TotalBytes = u.HotBytes + u.ArchivedBytes
	u.Messages = u.HotMessages + u.ArchivedMessages
	if s.ttl() > 0 && !s.cold.ttlAt.IsZero() {
		t := s.cold.ttlAt.UTC()
		u.ExpiresAt = &t
	}
	return u, nil
}
