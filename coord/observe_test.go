package coord_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
	"github.com/coder/websocket"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event string
	data      map[string]any
}

// openSSE opens an event stream; events arrive on the channel until ctx
// ends.
func openSSE(tb testing.TB, ctx context.Context, url string) <-chan sseEvent {
	tb.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	return openSSEReq(tb, req)
}

func nextEvent(tb testing.TB, ch <-chan sseEvent, want string) sseEvent {
	tb.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			tb.Fatalf("stream ended, want event %q", want)
		}
		if ev.event != want {
			tb.Fatalf("got event %q %v, want %q", ev.event, ev.data, want)
		}
		return ev
	case <-time.After(10 * time.Second):
		tb.Fatalf("no event %q within 10 s", want)
	}
	return sseEvent{}
}

func wsURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

func readWS(tb testing.TB, ctx context.Context, c *websocket.Conn) map[string]any {
	tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("websocket read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("websocket message %q: %v", b, err)
	}
	return m
}

// observeWS opens base's /observe WebSocket, closed when the test ends,
// and returns it with its first message, which must be the state.
func observeWS(tb testing.TB, ctx context.Context, base string) (*websocket.Conn, map[string]any) {
	tb.Helper()
	ws, _, err := websocket.Dial(ctx, wsURL(base)+"/observe", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ws.CloseNow() })
	first := readWS(tb, ctx, ws)
	if first["type"] != "state" {
		tb.Fatalf("first websocket message: %v", first)
	}
	return ws, first
}

func TestLeaderElection(t *testing.T) {
	srv := newServer(t, cairn.Process)
	base := srv.url + "/v1/objects/leader/g"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := openSSE(t, ctx, base+"/observe")
	nextEvent(t, events, "state")
	ws, _ := observeWS(t, ctx, base)

	a := mustPost[coord.CampaignResult](t, base+"/campaign", coord.CampaignArgs{Candidate: "a", TTLMs: 60000})
	if !a.Elected || a.Term != 1 {
		t.Fatalf("campaign of a: %+v", a)
	}
	if ev := nextEvent(t, events, "elected"); ev.data["leader"] != "a" || ev.data["term"] != 1.0 {
		t.Fatalf("elected event: %v", ev.data)
	}
	if m := readWS(t, ctx, ws); m["type"] != "elected" || m["leader"] != "a" {
		t.Fatalf("websocket event: %v", m)
	}
	b := mustPost[coord.CampaignResult](t, base+"/campaign", coord.CampaignArgs{Candidate: "b", TTLMs: 60000})
	if b.Elected || b.Leader != "a" || b.Term != 1 {
		t.Fatalf("campaign of b while a leads: %+v", b)
	}
	// b waits in line; a resigns; b is elected with a new term.
	wait := make(chan coord.CampaignResult, 1)
	go func() {
		wait <- mustPost[coord.CampaignResult](t, base+"/campaign", coord.CampaignArgs{Candidate: "b", TTLMs: 200, WaitMs: 10000})
	}()
	waitFor(t, "b to wait", func() bool {
		return len(mustGet[coord.LeaderInfo](t, base+"/").Candidates) == 1
	})
	r, _ := post(ctx, base+"/resign", coord.ResignArgs{Candidate: "a", Term: 2})
	if r.code != "conflict" {
		t.Fatalf("resign with a wrong term: %d %s", r.status, r.body)
	}
	mustPost[coord.ResignResult](t, base+"/resign", coord.ResignArgs{Candidate: "a", Term: 1})
	got := <-wait
	if !got.Elected || got.Leader != "b" || got.Term != 2 {
		t.Fatalf("b after a resigned: %+v", got)
	}
	nextEvent(t, events, "resigned")
	nextEvent(t, events, "elected")
	// b stops renewing: its term ends by alarm, with no traffic, within
	// TTL + 1 s.
	start := time.Now()
	ev := nextEvent(t, events, "expired")
	if d := time.Since(start); d > 200*time.Millisecond+expirySlack {
		t.Fatalf("expired %v after the election, want within TTL + %v", d, expirySlack)
	}
	if ev.data["leader"] != "b" || ev.data["term"] != 2.0 {
		t.Fatalf("expired event: %v", ev.data)
	}
	r, _ = post(ctx, base+"/renew", coord.LeaderRenewArgs{Candidate: "b", Term: 2, TTLMs: 1000})
	if r.code != "conflict" {
		t.Fatalf("renew of a lapsed term: %d %s", r.status, r.body)
	}
	c := mustPost[coord.CampaignResult](t, base+"/campaign", coord.CampaignArgs{Candidate: "c", TTLMs: 60000})
	if !c.Elected || c.Term != 3 {
		t.Fatalf("campaign after expiry: %+v", c)
	}
	// A stream resumed from an event id gets what it missed.
	cancel2ctx, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	req, _ := http.NewRequestWithContext(cancel2ctx, http.MethodGet, base+"/observe", nil)
	req.Header.Set("Last-Event-ID", ev.id)
	resumed := openSSEReq(t, req)
	if e := nextEvent(t, resumed, "elected"); e.data["leader"] != "c" {
		t.Fatalf("resumed stream: %v", e.data)
	}
}

// openSSEReq is openSSE for a prepared request.
func openSSEReq(tb testing.TB, req *http.Request) <-chan sseEvent {
	tb.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		resp.Body.Close()
		tb.Fatalf("GET %s: %d %q", req.URL, resp.StatusCode, ct)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(line[6:]), &ev.data)
			}
		}
	}()
	return ch
}

func TestPresence(t *testing.T) {
	srv := newServer(t, cairn.Process)
	base := srv.url + "/v1/objects/presence/room"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := openSSE(t, ctx, base+"/observe")
	nextEvent(t, events, "state")

	const ttl = 200 * time.Millisecond
	start := time.Now()
	h := mustPost[coord.HeartbeatResult](t, base+"/heartbeat", coord.HeartbeatArgs{Member: "a", TTLMs: ttl.Milliseconds(), Metadata: json.RawMessage(`{"status":"idle"}`)})
	if !h.Joined {
		t.Fatalf("first heartbeat: %+v", h)
	}
	if ev := nextEvent(t, events, "join"); ev.data["member"].(map[string]any)["member"] != "a" {
		t.Fatalf("join: %v", ev.data)
	}
	start = time.Now() // the lease runs from the last heartbeat
	mustPost[coord.HeartbeatResult](t, base+"/heartbeat", coord.HeartbeatArgs{Member: "a", TTLMs: ttl.Milliseconds(), Metadata: json.RawMessage(`{"status":"busy"}`)})
	nextEvent(t, events, "update")
	if l := mustGet[coord.PresenceList](t, base+"/"); len(l.Members) != 1 || string(l.Members[0].Metadata) != `{"status":"busy"}` {
		t.Fatalf("list: %+v", l)
	}
	// No more heartbeats and no traffic: a leaves by alarm.
	ev := nextEvent(t, events, "leave")
	if d := time.Since(start); d > ttl+expirySlack {
		t.Fatalf("left %v after the heartbeat, want within TTL + %v", d, expirySlack)
	}
	if ev.data["reason"] != "expired" {
		t.Fatalf("leave: %v", ev.data)
	}

	// A member connected by WebSocket is present until the socket closes.
	ws, _, err := websocket.Dial(ctx, wsURL(base)+"/connect?member=b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := readWS(t, ctx, ws); m["type"] != "state" {
		t.Fatalf("first message: %v", m)
	}
	nextEvent(t, events, "join")
	ws.Write(ctx, websocket.MessageText, []byte(`{"metadata":{"typing":true}}`))
	nextEvent(t, events, "update")
	ws.Close(websocket.StatusNormalClosure, "bye")
	if ev := nextEvent(t, events, "leave"); ev.data["reason"] != "disconnected" {
		t.Fatalf("leave on close: %v", ev.data)
	}
	if l := mustGet[coord.PresenceList](t, base+"/"); len(l.Members) != 0 {
		t.Fatalf("members left: %+v", l)
	}

	for _, c := range []struct{ body, code string }{
		{`{"member":"x","ttl_ms":0}`, "invalid"},
		{`{"member":"","ttl_ms":10}`, "invalid"},
		{`{"member":"x","ttl_ms":10,"metadata":` + `"` + strings.Repeat("m", coord.MaxMetadataBytes) + `"}`, "too_large"},
		{`{"member":"x",`, "invalid"},
	} {
		if r, _ := post(ctx, base+"/heartbeat", c.body); r.code != c.code {
			t.Errorf("heartbeat %.40s: got %d %q, want %q", c.body, r.status, r.code, c.code)
		}
	}
}
