package coord_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
	"github.com/coder/websocket"
)

// Tests for issue 6's proof items that the primitive tests leave out:
// expiry by alarm of an object that is not even in memory, the leader
// taken over by a waiting candidate when its lease lapses, presence over
// WebSocket (observers, a member's socket closing or cut, a restart).

// newEvictingRuntime opens a runtime that evicts an object 20 ms after its
// last event, so that an alarm finds it on disk only.
func newEvictingRuntime(tb testing.TB) *cairn.Runtime {
	tb.Helper()
	rt := openRuntimeTuned(tb, "", cairn.Disk, func(rt *cairn.Runtime) { rt.IdleTimeout = 20 * time.Millisecond })
	tb.Cleanup(func() { closeRuntime(tb, rt) })
	return rt
}

// rawRows reads an object's table without going through its class: no
// lazy expiry, only what the alarm did.
func rawRows(tb testing.TB, s *cairn.Stub, query string) [][]any {
	tb.Helper()
	var out [][]any
	err := s.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		rows, err := st.Query(query)
		if err != nil {
			return err
		}
		out = rows.Values
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// expiresWhileEvicted checks that after start (the grant or heartbeat
// with the given TTL) the object is evicted, and that its alarm then fires
// (activating it) within TTL + slack, with no call from anyone.
func expiresWhileEvicted(t *testing.T, rt *cairn.Runtime, s *cairn.Stub, start time.Time, ttl time.Duration) {
	t.Helper()
	waitFor(t, "the object's eviction", func() bool { return !rt.IsActive(s.ID()) })
	if time.Since(start) >= ttl {
		t.Fatalf("evicted only %v after the grant: the test needs it evicted before the TTL (%v)", time.Since(start), ttl)
	}
	before := rt.Stats()
	waitFor(t, "the alarm", func() bool { return rt.Stats().AlarmsFired > before.AlarmsFired })
	d := time.Since(start)
	if d < ttl || d > ttl+expirySlack {
		t.Fatalf("alarm fired %v after the grant, want within [%v, %v]", d, ttl, ttl+expirySlack)
	}
	if after := rt.Stats(); after.Activations <= before.Activations {
		t.Errorf("the alarm did not activate the evicted object (%d activations before, %d after)", before.Activations, after.Activations)
	}
	t.Logf("alarm fired %v after the grant (TTL %v), the object evicted before", d, ttl)
}

func TestExpiryOfEvictedObjects(t *testing.T) {
	const ttl = time.Second
	t.Run("lock", func(t *testing.T) {
		rt := newEvictingRuntime(t)
		s := stub(t, rt, "lock", "res")
		start := time.Now()
		g := call[coord.AcquireResult](t, s, "Acquire", coord.AcquireArgs{Owner: "a", TTLMs: ttl.Milliseconds()})
		expiresWhileEvicted(t, rt, s, start, ttl)
		waitFor(t, "the lease cleared", func() bool { owner, _ := rawLease(t, s); return owner == "" })
		err := s.Call(context.Background(), "Release", coord.ReleaseArgs{Owner: "a", Token: g.Token}, nil)
		wantCode(t, "release of the expired grant", err, cairn.Conflict)
	})
	t.Run("leader", func(t *testing.T) {
		rt := newEvictingRuntime(t)
		s := stub(t, rt, "leader", "group")
		start := time.Now()
		c := call[coord.CampaignResult](t, s, "Campaign", coord.CampaignArgs{Candidate: "a", TTLMs: ttl.Milliseconds()})
		expiresWhileEvicted(t, rt, s, start, ttl)
		waitFor(t, "the term ended", func() bool { owner, _ := rawLease(t, s); return owner == "" })
		evs := rawRows(t, s, `SELECT data FROM feed ORDER BY seq`)
		if n := len(evs); n != 2 || !jsonHas(t, evs[1][0], "type", "expired") || !jsonHas(t, evs[1][0], "leader", "a") {
			t.Fatalf("feed after the lapse: %v, want elected then expired", evs)
		}
		err := s.Call(context.Background(), "Renew", coord.LeaderRenewArgs{Candidate: "a", Term: c.Term, TTLMs: 1000}, nil)
		wantCode(t, "renew of the lapsed term", err, cairn.Conflict)
	})
	t.Run("presence", func(t *testing.T) {
		rt := newEvictingRuntime(t)
		s := stub(t, rt, "presence", "room")
		start := time.Now()
		call[coord.HeartbeatResult](t, s, "Heartbeat", coord.HeartbeatArgs{Member: "a", TTLMs: ttl.Milliseconds()})
		expiresWhileEvicted(t, rt, s, start, ttl)
		waitFor(t, "the member removed", func() bool { return len(rawRows(t, s, `SELECT member FROM members`)) == 0 })
		evs := rawRows(t, s, `SELECT data FROM feed ORDER BY seq`)
		if n := len(evs); n != 2 || !jsonHas(t, evs[1][0], "type", "leave") || !jsonHas(t, evs[1][0], "reason", "expired") {
			t.Fatalf("feed after the lapse: %v, want join then leave (expired)", evs)
		}
	})
}

// jsonHas reports whether v, a JSON object as text, has key = want.
func jsonHas(tb testing.TB, v any, key, want string) bool {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(v.(string)), &m); err != nil {
		tb.Fatalf("%v: %v", v, err)
	}
	got, _ := m[key].(string)
	return got == want
}

// When the leader stops renewing, the candidate waiting in line takes over
// with the next term, by alarm, with no other traffic; observers over SSE
// and WebSocket see the lapse and the election in order.
func TestLeaderTakeoverOnLapse(t *testing.T) {
	srv := newServer(t, cairn.Disk)
	base := srv.url + "/v1/objects/leader/takeover"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := openSSE(t, ctx, base+"/observe")
	nextEvent(t, events, "state")
	ws, _ := observeWS(t, ctx, base)

	const ttl = 300 * time.Millisecond
	start := time.Now()
	a := mustPost[coord.CampaignResult](t, base+"/campaign", coord.CampaignArgs{Candidate: "a", TTLMs: ttl.Milliseconds()})
	if !a.Elected {
		t.Fatalf("campaign of a: %+v", a)
	}
	took := make(chan coord.CampaignResult, 1)
	go func() {
		r, err := post(ctx, base+"/campaign", coord.CampaignArgs{Candidate: "b", TTLMs: 60000, WaitMs: 10000})
		var c coord.CampaignResult
		if err == nil {
			json.Unmarshal(r.body, &c)
		}
		took <- c
	}()
	var b coord.CampaignResult
	select {
	case b = <-took:
	case <-time.After(ttl + expirySlack + 5*time.Second):
		t.Fatal("b not elected")
	}
	d := time.Since(start)
	if !b.Elected || b.Leader != "b" || b.Term != a.Term+1 {
		t.Fatalf("b after a's lease lapsed: %+v, want elected with term %d", b, a.Term+1)
	}
	if d < ttl || d > ttl+expirySlack {
		t.Fatalf("b elected %v after a, want within [%v, %v]", d, ttl, ttl+expirySlack)
	}
	t.Logf("b took over %v after a's election (TTL %v)", d, ttl)

	want := []struct {
		typ, leader string
		term        int64
	}{{"elected", "a", a.Term}, {"expired", "a", a.Term}, {"elected", "b", b.Term}}
	for _, w := range want {
		ev := nextEvent(t, events, w.typ)
		if ev.data["leader"] != w.leader || ev.data["term"] != float64(w.term) {
			t.Errorf("SSE %s: %v, want leader %s term %d", w.typ, ev.data, w.leader, w.term)
		}
		m := readWS(t, ctx, ws)
		if m["type"] != w.typ || m["leader"] != w.leader || m["term"] != float64(w.term) {
			t.Errorf("WebSocket: %v, want %s of %s term %d", m, w.typ, w.leader, w.term)
		}
	}
	// The old leader is fenced off.
	for _, c := range []struct {
		path string
		body any
	}{
		{"/renew", coord.LeaderRenewArgs{Candidate: "a", Term: a.Term, TTLMs: 1000}},
		{"/resign", coord.ResignArgs{Candidate: "a", Term: a.Term}},
	} {
		if r, _ := post(ctx, base+c.path, c.body); r.code != "conflict" {
			t.Errorf("%s by the lapsed leader: %d %s, want conflict", c.path, r.status, r.body)
		}
	}
	if g := mustGet[coord.LeaderInfo](t, base+"/"); g.Leader != "b" || g.Term != b.Term {
		t.Errorf("GET /: %+v, want b with term %d", g, b.Term)
	}
}

// Presence observed over a WebSocket: the same events as over SSE, in
// order, the expiry by alarm included; an SSE stream resumed with ?after
// gets what it missed.
func TestPresenceObserveWebSocket(t *testing.T) {
	srv := newServer(t, cairn.Disk)
	base := srv.url + "/v1/objects/presence/lobby"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, _ := observeWS(t, ctx, base)
	const ttl = 300 * time.Millisecond
	mustPost[coord.HeartbeatResult](t, base+"/heartbeat", coord.HeartbeatArgs{Member: "ada", TTLMs: 60000, Metadata: json.RawMessage(`{"task":"review"}`)})
	mustPost[coord.HeartbeatResult](t, base+"/heartbeat", coord.HeartbeatArgs{Member: "ada", TTLMs: 60000, Metadata: json.RawMessage(`{"task":"merge"}`)})
	mustPost[coord.HeartbeatResult](t, base+"/heartbeat", coord.HeartbeatArgs{Member: "bob", TTLMs: ttl.Milliseconds()})
	start := time.Now()
	mustPost[coord.LeaveResult](t, base+"/leave", coord.LeaveArgs{Member: "ada"})
	want := []struct{ typ, member, reason string }{
		{"join", "ada", ""}, {"update", "ada", ""}, {"join", "bob", ""}, {"leave", "ada", "left"}, {"leave", "bob", "expired"},
	}
	var seqs []float64
	for _, w := range want {
		m := readWS(t, ctx, ws)
		member, _ := m["member"].(map[string]any)
		if m["type"] != w.typ || member["member"] != w.member || w.reason != "" && m["reason"] != w.reason {
			t.Fatalf("WebSocket: %v, want %s of %s %s", m, w.typ, w.member, w.reason)
		}
		seqs = append(seqs, m["seq"].(float64))
	}
	if d := time.Since(start); d > ttl+expirySlack {
		t.Errorf("bob left %v after his heartbeat, want within TTL + %v", d, expirySlack)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("event seqs %v: want consecutive", seqs)
			break
		}
	}
	// Resume over SSE after the second event: the other three follow.
	resumed := openSSE(t, ctx, base+"/observe?after="+jsonNumber(seqs[1]))
	for _, w := range want[2:] {
		ev := nextEvent(t, resumed, w.typ)
		if member, _ := ev.data["member"].(map[string]any); member["member"] != w.member {
			t.Errorf("resumed SSE: %v, want %s of %s", ev.data, w.typ, w.member)
		}
	}
}

func jsonNumber(f float64) string { b, _ := json.Marshal(int64(f)); return string(b) }

// A member present through its WebSocket leaves when the socket goes:
// closed properly, cut without a close frame, or closed by a restart.
func TestPresenceSocketMemberLeaves(t *testing.T) {
	srv := newServer(t, cairn.Disk)
	base := srv.url + "/v1/objects/presence/desk"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := openSSE(t, ctx, base+"/observe")
	nextEvent(t, events, "state")
	connect := func(member string) *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, wsURL(base)+"/connect?member="+member, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m := readWS(t, ctx, c); m["type"] != "state" {
			t.Fatalf("first message on %s's socket: %v", member, m)
		}
		if ev := nextEvent(t, events, "join"); ev.data["member"].(map[string]any)["member"] != member {
			t.Fatalf("join: %v", ev.data)
		}
		return c
	}
	leave := func(member string) {
		t.Helper()
		ev := nextEvent(t, events, "leave")
		if ev.data["member"].(map[string]any)["member"] != member || ev.data["reason"] != "disconnected" {
			t.Fatalf("leave: %v, want %s disconnected", ev.data, member)
		}
	}

	connect("a").Close(websocket.StatusNormalClosure, "bye")
	leave("a")
	connect("b").CloseNow() // the TCP connection goes, no close frame
	leave("b")

	c := connect("c")
	defer c.CloseNow()
	c.CloseRead(ctx) // answer the server's close frame at the restart
	last := nextEventID(t, srv.url+"/v1/objects/presence/desk/observe")
	srv.restart(cairn.Disk)
	// The restart closed c's socket: c is gone, and the feed says so.
	if l := mustGet[coord.PresenceList](t, base+"/"); len(l.Members) != 0 {
		t.Fatalf("members after the restart: %+v", l.Members)
	}
	resumed := openSSE(t, ctx, base+"/observe?after="+last)
	leaveEv := nextEvent(t, resumed, "leave")
	if leaveEv.data["member"].(map[string]any)["member"] != "c" || leaveEv.data["reason"] != "disconnected" {
		t.Fatalf("after the restart: %v, want c disconnected", leaveEv.data)
	}
}

// nextEventID returns the id of a fresh stream's state event: the last
// event so far.
func nextEventID(tb testing.TB, url string) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	return nextEvent(tb, openSSEReq(tb, req), "state").id
}
