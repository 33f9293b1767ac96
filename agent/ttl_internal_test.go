package agent

import (
	"context"
	"iter"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// fakeClock is a clock a test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time                      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) add(d time.Duration)                 { c.ns.Add(int64(d)) }
func (c *fakeClock) setup(rt *cairn.Runtime, _ *Service) { rt.Now = c.now }

// expired reports whether session's storage is gone and its manifest is
// in the archive.
func (e *coldEnv) expired(tb testing.TB, session string) bool {
	tb.Helper()
	id := e.stub(tb, session).ID()
	if _, err := e.arc.Get(context.Background(), manifestKey(id)); err != nil {
		return false
	}
	info, err := e.rt.Engine().Object(context.Background(), Namespace, id)
	if cairn.ErrorCode(err) == cairn.NotFound {
		return true
	}
	return err == nil && !e.rt.IsActive(id) && info.Bytes == 0
}

// TestSessionTTL checks that an idle session expires by its own alarm,
// with no traffic (archived whole, its storage deleted), that activity
// pushes the deadline back, and that a new message restores it
// transparently: history, state, model context, seqs.
func TestSessionTTL(t *testing.T) {
	clock := newFakeClock()
	p := &recorder{}
	e := newColdEnv(t, "", nil, clock.setup, Agent{Name: "a", Provider: p, Model: "m", MaxHistory: 4, HotMessages: 6, ArchiveBatch: 4, SessionTTL: time.Hour})
	for _, text := range []string{"one", "two", "three", "four", "five"} {
		e.must(t, "POST", "/v1/agents/a/s/messages", []byte(`{"text":"`+text+`"}`), nil)
	}
	e.must(t, "PUT", "/v1/agents/a/s/state", []byte(`{"mood":"calm"}`), nil)
	before := e.pageAll(t, "a/s", 0)
	var u SessionUsage
	e.must(t, "GET", "/v1/agents/a/s/usage", nil, &u)
	if u.ExpiresAt == nil || !u.ExpiresAt.Equal(clock.now().Add(time.Hour)) {
		t.Errorf("expires_at %v, want %v", u.ExpiresAt, clock.now().Add(time.Hour))
	}

	// Activity at 50 min: the deadline moves to 1h50.
	clock.add(50 * time.Minute)
	e.must(t, "GET", "/v1/agents/a/s/messages", nil, nil)
	var at time.Time
	if err := e.onSession("a/s", func(s *session) error {
		sc, err := sessionScheduler.Get(s.st, scheduleTTL)
		at = sc.Time
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if want := clock.now().Add(time.Hour); !at.Equal(want) {
		t.Fatalf("TTL schedule at %v after a request, want %v", at, want)
	}
	clock.add(20 * time.Minute)
	if e.expired(t, "a/s") {
		t.Fatal("expired 20 minutes after a request")
	}
	clock.add(time.Hour)
	waitForCold(t, "the session to expire", func() bool { return e.expired(t, "a/s") })
	// Reading it restores it: the model's context comes back hot.
	if n := e.hotCount(t, "a/s"); n < 4 || n > 8 {
		t.Errorf("%d messages hot after restore, want MaxHistory (4) to 2 chunks (8)", n)
	}

	// A new message restores it.
	var m Message
	e.must(t, "POST", "/v1/agents/a/s/messages", []byte(`{"text":"six"}`), &m)
	after := e.pageAll(t, "a/s", 3)
	if len(after) != len(before)+2 {
		t.Fatalf("%d messages after restore, want %d", len(after), len(before)+2)
	}
	sameMessages(t, "history after restore", after[:len(before)], before)
	var st StateResponse
	e.must(t, "GET", "/v1/agents/a/s/state", nil, &st)
	if string(st.State) != `{"mood":"calm"}` || st.Version != 1 {
		t.Errorf("state after restore %s v%d", st.State, st.Version)
	}
	var ctx []string
	for _, m := range p.last() {
		ctx = append(ctx, m.Text())
	}
	if got, want := strings.Join(ctx, "|"), "echo: four|five|echo: five|six"; got != want {
		t.Errorf("model context after restore %q, want %q", got, want)
	}
	// The manifest and the restored chunks' blobs are deleted.
	waitForCold(t, "the manifest to go", func() bool {
		_, err := e.arc.Get(context.Background(), manifestKey(e.stub(t, "a/s").ID()))
		return cairn.ErrorCode(err) == cairn.NotFound
	})
	stats, _ := e.svc.Stats()
	if stats[0].SessionsExpired != 1 || stats[0].SessionsRestored != 1 {
		t.Errorf("stats %+v", stats[0])
	}
}

// recorder is an echo provider that records the history it was sent.
type recorder struct {
	Echo
	msgs atomic.Pointer[[]Message]
}

func (r *recorder) Stream(ctx context.Context, req *Request) iter.Seq[Event] {
	cp := append([]Message(nil), req.Messages...)
	r.msgs.Store(&cp)
	return r.Echo.Stream(ctx, req)
}

func (r *recorder) last() []Message {
	if p := r.msgs.Load(); p != nil {
		return *p
	}
	return nil
}

// TestSessionNotIdle checks that a session with a socket open, a
// schedule of its own or a message in flight does not expire.
func TestSessionNotIdle(t *testing.T) {
	clock := newFakeClock()
	e := newColdEnv(t, "", nil, clock.setup, Agent{Name: "a", SessionTTL: time.Minute})
	e.must(t, "POST", "/v1/agents/a/s/messages", []byte(`{"text":"hi"}`), nil)
	e.do(t, "POST", "/v1/agents/a/s/schedules", []byte(`{"id":"later","delay_seconds":100000}`))
	clock.add(2 * time.Minute)
	// The TTL fires, finds a schedule, and moves on by a TTL.
	waitForCold(t, "the TTL to move on", func() bool {
		var at time.Time
		e.onSession("a/s", func(s *session) error {
			sc, err := sessionScheduler.Get(s.st, scheduleTTL)
			at = sc.Time
			return err
		})
		return at.After(clock.now())
	})
	if e.expired(t, "a/s") {
		t.Fatal("a session with a schedule expired")
	}
	e.do(t, "DELETE", "/v1/agents/a/s/schedules/later", nil)
	clock.add(2 * time.Minute)
	waitForCold(t, "the session to expire", func() bool { return e.expired(t, "a/s") })
}

// TestArchiveNowAndDelete checks POST /archive (expire now; the next
// request restores), DiscardExpired, and DELETE (blobs and storage gone).
func TestArchiveNowAndDelete(t *testing.T) {
	e := newColdEnv(t, "", nil, nil,
		Agent{Name: "a", MaxHistory: 2, HotMessages: 2, ArchiveBatch: 3},
		Agent{Name: "fresh", MaxHistory: 2, HotMessages: 2, ArchiveBatch: 3, DiscardExpired: true})
	msgs := genMessages(0, 11, 100)
	e.insert(t, "a/s", msgs)
	e.maintain(t, "a/s")
	var x Expiry
	e.must(t, "POST", "/v1/agents/a/s/archive", nil, &x)
	if !x.Archived || x.Messages != 11 || x.Moved == 0 || x.Bytes <= 0 || !strings.HasSuffix(x.Manifest, "/manifest") {
		t.Fatalf("archive now: %+v", x)
	}
	if !e.expired(t, "a/s") {
		t.Fatal("not expired after POST /archive")
	}
	sameMessages(t, "restored", e.pageAll(t, "a/s", 4), msgs)
	exp, _ := e.export(t, "a/s")
	sameMessages(t, "export after restore", exp, msgs)

	// An archive of an empty session is an empty manifest.
	e.must(t, "POST", "/v1/agents/a/empty/archive", nil, &x)
	if !x.Archived || x.Messages != 0 {
		t.Errorf("archive of an empty session: %+v", x)
	}

	// DiscardExpired: the expired session starts fresh, its blobs go.
	e.insert(t, "fresh/s", genMessages(0, 9, 100))
	e.must(t, "POST", "/v1/agents/fresh/s/archive", nil, &x)
	if got := e.pageAll(t, "fresh/s", 0); len(got) != 0 {
		t.Fatalf("%d messages in a discarded session", len(got))
	}
	id := e.stub(t, "fresh/s").ID()
	waitForCold(t, "the discarded blobs to go", func() bool {
		keys, _ := e.arc.List(context.Background(), archivePrefix(id))
		return len(keys) == 0
	})
	more := genMessages(100, 4, 100)
	e.insert(t, "fresh/s", more)
	sameMessages(t, "fresh session", e.pageAll(t, "fresh/s", 0), more)

	// DELETE: blobs and storage.
	id = e.stub(t, "a/s").ID()
	e.must(t, "DELETE", "/v1/agents/a/s", nil, nil)
	keys, err := e.arc.List(context.Background(), archivePrefix(id))
	if err != nil || len(keys) != 0 {
		t.Fatalf("blobs after delete: %v %v", keys, err)
	}
	if got := e.pageAll(t, "a/s", 0); len(got) != 0 {
		t.Fatalf("%d messages after delete", len(got))
	}
	e.must(t, "DELETE", "/v1/agents/a/s/", nil, nil) // with a slash, again: fine
	stats, _ := e.svc.Stats()
	if stats[0].SessionsDeleted != 2 || stats[1].SessionsDiscarded != 1 {
		t.Errorf("stats %+v", stats)
	}
	// Busy: a reply in flight refuses both.
	if code, _, _ := e.do(t, "GET", "/v1/agents/a/s/archive", nil); code != http.StatusMethodNotAllowed && code != http.StatusBadRequest {
		t.Errorf("GET /archive: %d", code)
	}
}

// The admin API's delete of a session object (cairn objects delete) takes
// its archived history with it, as the agent's own DELETE does.
func TestAdminDeleteRemovesArchive(t *testing.T) {
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a", MaxHistory: 2, HotMessages: 2, ArchiveBatch: 3})
	e.insert(t, "a/s", genMessages(0, 11, 100))
	e.maintain(t, "a/s")
	stub := e.stub(t, "a/s")
	id := stub.ID()
	if keys, err := e.arc.List(context.Background(), archivePrefix(id)); err != nil || len(keys) == 0 {
		t.Fatalf("blobs before the delete: %v %v; want some", keys, err)
	}
	e.must(t, "DELETE", cairnhttp.ObjectPath("/v1/admin/objects", stub.Namespace().Name(), "a/s"), nil, nil)
	keys, err := e.arc.List(context.Background(), archivePrefix(id))
	if err != nil || len(keys) != 0 {
		t.Fatalf("blobs after the admin delete: %v %v", keys, err)
	}
	if got := e.pageAll(t, "a/s", 0); len(got) != 0 {
		t.Fatalf("%d messages after the admin delete", len(got))
	}
	if stats, _ := e.svc.Stats(); stats[0].SessionsDeleted != 1 {
		t.Errorf("stats %+v, want one session deleted", stats[0])
	}
}
