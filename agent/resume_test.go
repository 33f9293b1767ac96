package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
)

// position returns the position of an event id ("{messageId}:{n}").
func position(tb testing.TB, id string) int64 {
	tb.Helper()
	_, n, _ := strings.Cut(id, ":")
	p, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		tb.Fatalf("event id %q: %v", id, err)
	}
	return p
}

// normalize renders a stream for comparison: the text of adjacent deltas
// joined (their split is the provider's), tool-call-delta events left out
// (a resumed stream has the whole call instead), every other event with
// its id and data.
func normalize(tb testing.TB, evs []sseEvent) []string {
	tb.Helper()
	var out []string
	for i := 0; i < len(evs); i++ {
		ev := evs[i]
		switch ev.Event {
		case "tool-call-delta":
			continue
		case "text-delta", "reasoning-delta":
			text := ev.Data["delta"].(string)
			for i+1 < len(evs) && evs[i+1].Event == ev.Event {
				i++
				text += evs[i].Data["delta"].(string)
				ev = evs[i]
			}
			// The position after the run is the same however it was split.
			out = append(out, fmt.Sprintf("%s %s %q", ev.Event, ev.ID, text))
		default:
			b, _ := json.Marshal(ev.Data)
			out = append(out, ev.Event+" "+ev.ID+" "+string(b))
		}
	}
	return out
}

// checkIDs checks that ids are positions of msgID that never go back.
func checkIDs(tb testing.TB, msgID string, after int64, evs []sseEvent) {
	tb.Helper()
	last := after
	for _, ev := range evs {
		if !strings.HasPrefix(ev.ID, msgID+":") {
			tb.Fatalf("event %s has id %q, not of message %s", ev.Event, ev.ID, msgID)
		}
		p := position(tb, ev.ID)
		zero := ev.Event == "tool-call-delta" || ev.Event == "message-start"
		if p < last || (!zero && p == last) {
			tb.Fatalf("event %s at %d after position %d: ids must grow", ev.Event, p, last)
		}
		last = p
	}
}

// resumeStream resumes a reply's stream after the event id after ("" for
// the whole stream) and reads it to its end.
func (e *env) resumeStream(tb testing.TB, session, msgID, after string) []sseEvent {
	tb.Helper()
	var h []string
	if after != "" {
		h = []string{"Last-Event-ID", after}
	}
	_, sse := e.open(tb, "GET", "/v1/agents/"+session+"/messages/"+msgID+"/stream", nil, h...)
	return sse.rest(tb)
}

// toolLoopDouble answers with reasoning, text and a tool call, then, once
// the call's result is in, with text: a stream with every kind of event.
func toolLoopDouble(t *testing.T, hold <-chan struct{}) (*llmtest.OpenAI, agent.Agent) {
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		if r.Messages[len(r.Messages)-1].Role != "tool" {
			return llmtest.Reply{Reasoning: []string{"think", "ing"}, Deltas: []string{"Sü", "m: "},
				ToolCalls: []llmtest.ToolCall{{ID: "call_1", Name: "add", Arguments: `{"a":2,"b":3}`}}}
		}
		return llmtest.Reply{Deltas: []string{"It is ", "fünf", ", ", "or 5."}, Hold: hold}
	})
	a := openaiAgent(d)
	a.Tools = []agent.Tool{addTool()}
	return d, a
}

// TestResumeMidStream reconnects to a reply being generated, from the
// last event a first client saw: the first client's events and the
// resumed ones make the whole stream, exactly, and several readers can
// follow at once.
func TestResumeMidStream(t *testing.T) {
	hold := make(chan struct{})
	_, a := toolLoopDouble(t, hold)
	e := newEnv(t, "", a)

	// The first client reads up to the first text of round 2 (where the
	// double holds), then goes away; the generation goes on.
	resp, sse := e.open(t, "POST", "/v1/agents/gpt/r/messages", []byte(`{"text":"2+3?"}`))
	var first []sseEvent
	for {
		ev, ok := sse.next(t)
		if !ok {
			t.Fatal("stream ended early")
		}
		first = append(first, ev)
		if ev.Event == "text-delta" && ev.Data["delta"] == "It is " {
			break
		}
	}
	resp.Body.Close()
	msgID := first[0].Data["messageId"].(string)
	last := first[len(first)-1].ID

	// Readers resume from the last event, from the middle of a text
	// part (a byte position), and from the start; all follow live.
	mid := position(t, last) - 3 // inside "It is "
	type reader struct {
		after string
		sse   *sseReader
	}
	var readers []reader
	for _, after := range []string{last, fmt.Sprintf("%s:%d", msgID, mid), ""} {
		var h []string
		if after != "" {
			h = []string{"Last-Event-ID", after}
		}
		_, r := e.open(t, "GET", "/v1/agents/gpt/r/messages/"+msgID+"/stream", nil, h...)
		readers = append(readers, reader{after, r})
	}
	// ?after= works as the header does.
	_, byQuery := e.open(t, "GET", "/v1/agents/gpt/r/messages/"+msgID+"/stream?after="+last, nil)

	// All are following (their responses began) before the rest comes.
	close(hold)
	results := make([][]sseEvent, len(readers))
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.sse.rest(t)
		}()
	}
	queried := byQuery.rest(t)
	wg.Wait()

	h := e.history(t, "gpt/r")
	final := h[1]
	if final.Status != agent.Complete || final.Text() != "Süm: It is fünf, or 5." {
		t.Fatalf("stored reply = %s %q", final.Status, final.Text())
	}
	full := e.resumeStream(t, "gpt/r", msgID, "")
	if full[0].Event != "message-start" || full[0].Data["userMessageId"] != h[0].ID || full[len(full)-1].Event != "message-end" {
		t.Fatalf("whole stream = %s", eventNames(full))
	}
	checkIDs(t, msgID, 0, full)
	want := strings.Join(normalize(t, full), "\n")

	// The first client's events plus the resumed ones are the stream.
	if got := strings.Join(normalize(t, append(append([]sseEvent{}, first...), results[0]...)), "\n"); got != want {
		t.Errorf("first client + resumed =\n%s\nwant\n%s", got, want)
	}
	if got := strings.Join(normalize(t, append(append([]sseEvent{}, first...), queried...)), "\n"); got != want {
		t.Errorf("first client + resumed by ?after= =\n%s\nwant\n%s", got, want)
	}
	checkIDs(t, msgID, position(t, last), results[0])
	// From the middle of "It is ": the rest of it, then the same.
	if len(results[1]) == 0 || results[1][0].Event != "text-delta" || results[1][0].Data["delta"] != "is " {
		t.Errorf("resumed mid-text: first event %+v, want text-delta \"is \"", results[1])
	}
	if got, want := normalize(t, results[1])[1:], normalize(t, results[0])[1:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("resumed mid-text =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// From the start: the whole stream, as the stored one.
	if got := strings.Join(normalize(t, results[2]), "\n"); got != want {
		t.Errorf("followed from the start =\n%s\nwant\n%s", got, want)
	}
	// The text the first client and a resumed reader saw is the reply's.
	text := ""
	for _, ev := range append(append([]sseEvent{}, first...), results[0]...) {
		if ev.Event == "text-delta" {
			text += ev.Data["delta"].(string)
		}
	}
	if text != final.Text() {
		t.Errorf("streamed text = %q, want %q", text, final.Text())
	}
	m := endMessage(t, results[0][len(results[0])-1])
	if m.ID != msgID || m.Status != agent.Complete || m.Text() != final.Text() {
		t.Errorf("resumed message-end = %+v", m)
	}
}

// TestResumeFromEveryEvent resumes a finished reply (from storage) after
// each of its events in turn: each time, what came before and the resumed
// rest are the whole stream. Then the same after the session was evicted
// from memory, and after a restart.
func TestResumeFromEveryEvent(t *testing.T) {
	_, a := toolLoopDouble(t, nil)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func(rt *cairn.Runtime) {
		rt.Now = func() time.Time { return time.Unix(0, now.Load()) }
		rt.IdleTimeout = time.Minute
	}
	dir := t.TempDir()
	e := newEnvWith(t, dir, clock, a)
	_, sse := e.open(t, "POST", "/v1/agents/gpt/f/messages", []byte(`{"text":"2+3?"}`))
	orig := sse.rest(t)
	msgID := orig[0].Data["messageId"].(string)
	want := strings.Join(normalize(t, orig), "\n")
	checkIDs(t, msgID, 0, orig)
	if got := strings.Join(normalize(t, e.resumeStream(t, "gpt/f", msgID, "")), "\n"); got != want {
		t.Fatalf("stored stream =\n%s\nthe original was\n%s", got, want)
	}
	check := func(t *testing.T, e *env) {
		for i, ev := range orig {
			rest := e.resumeStream(t, "gpt/f", msgID, ev.ID)
			got := strings.Join(normalize(t, append(append([]sseEvent{}, orig[:i+1]...), rest...)), "\n")
			if got != want {
				t.Fatalf("resumed after event %d (%s %s) =\n%s\nwant\n%s", i, ev.Event, ev.ID, got, want)
			}
			if i == len(orig)-1 && len(rest) != 0 {
				t.Errorf("resumed after message-end: %s, want nothing", eventNames(rest))
			}
		}
	}
	t.Run("stored", func(t *testing.T) { check(t, e) })

	t.Run("evicted", func(t *testing.T) {
		ns, _ := e.rt.Namespace(agent.Namespace)
		id, _ := ns.IDFromName(agent.ObjectName("gpt", "f"))
		now.Add(int64(2 * time.Minute))
		waitFor(t, "the session evicted", func() bool { e.rt.EvictIdle(); return !e.rt.IsActive(id) })
		check(t, e)
		if !e.rt.IsActive(id) {
			t.Error("the session did not activate again")
		}
	})

	t.Run("restarted", func(t *testing.T) {
		e.close(t)
		e2 := newEnvWith(t, dir, clock, a)
		check(t, e2)
	})
}

// TestResumeBadIDs checks that a resume the server cannot place is a
// clear 4xx error.
func TestResumeBadIDs(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		if r.Messages[len(r.Messages)-1].Text() == "hold" {
			return llmtest.Reply{Deltas: []string{"wait", "ing"}, Hold: hold}
		}
		return llmtest.Reply{Deltas: []string{"dün", "e"}}
	})
	e := newEnv(t, "", openaiAgent(d))
	done := e.send(t, "gpt/b", "hi")
	other := e.send(t, "gpt/b", "again")
	h := e.history(t, "gpt/b")
	// A reply in flight.
	_, sse := e.open(t, "POST", "/v1/agents/gpt/b/messages", []byte(`{"text":"hold"}`))
	evs := sse.until(t, "text-delta")
	live := evs[0].Data["messageId"].(string)
	livePos := position(t, evs[len(evs)-1].ID)

	base := "/v1/agents/gpt/b/messages/"
	for _, tc := range []struct {
		name, path, lastID string
		status             int
		code, words        string
	}{
		{"malformed", base + done.ID + "/stream", "garbage", 400, "invalid", "malformed"},
		{"no position", base + done.ID + "/stream", done.ID + ":", 400, "invalid", "malformed"},
		{"negative", base + done.ID + "/stream", done.ID + ":-1", 400, "invalid", "malformed"},
		{"signed", base + done.ID + "/stream", done.ID + ":+1", 400, "invalid", "malformed"},
		{"not a number", base + done.ID + "/stream", done.ID + ":x", 400, "invalid", "malformed"},
		{"too large", base + done.ID + "/stream", done.ID + ":99999999999999999999", 400, "invalid", "malformed"},
		{"bad message id", base + done.ID + "/stream", "msg_zz:1", 400, "invalid", "malformed"},
		{"another message's", base + done.ID + "/stream", other.ID + ":1", 400, "invalid", "belongs to message"},
		{"inside a rune", base + done.ID + "/stream", done.ID + ":3", 400, "invalid", "not a position"},
		{"beyond a live reply", base + live + "/stream", fmt.Sprintf("%s:%d", live, livePos+1), 400, "invalid", "not a position"},
		{"unknown message", base + "msg_00000000000000000000/stream", "", 404, "not_found", "no message"},
		{"not a message id", base + "nope/stream", "", 400, "invalid", "not a message id"},
		{"a user message", base + h[0].ID + "/stream", "", 400, "invalid", "only replies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := e.do(t, "GET", tc.path, nil, "Last-Event-ID", tc.lastID)
			if code != tc.status || errorCode(b) != tc.code || !strings.Contains(string(b), tc.words) {
				t.Errorf("%d %s, want %d %s saying %q", code, b, tc.status, tc.code, tc.words)
			}
		})
	}
	if code, b := e.do(t, "POST", base+done.ID+"/stream", nil); code != 400 {
		t.Errorf("POST stream = %d %s, want 400", code, b)
	}
	// A position past the end of a reply that ended: message-end alone.
	rest := e.resumeStream(t, "gpt/b", done.ID, done.ID+":999")
	if len(rest) != 1 || rest[0].Event != "message-end" {
		t.Errorf("resumed past the end = %s, want message-end", eventNames(rest))
	}
	// The position of the live reply's last event is fine.
	e.open(t, "GET", base+live+"/stream", nil, "Last-Event-ID", evs[len(evs)-1].ID)
}

// TestCancelOnDisconnect checks both settings: by default a reply goes on
// when its client leaves; with CancelOnDisconnect it is stopped and
// stored cancelled, saying why.
func TestCancelOnDisconnect(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprint("cancel=", cancel), func(t *testing.T) {
			hold := make(chan struct{})
			var holdOnce sync.Once
			release := func() { holdOnce.Do(func() { close(hold) }) }
			defer release()
			d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
				return llmtest.Reply{Deltas: []string{"Hel", "lo"}, Hold: hold}
			})
			a := openaiAgent(d)
			a.CancelOnDisconnect = cancel
			e := newEnv(t, "", a)
			resp, sse := e.open(t, "POST", "/v1/agents/gpt/d/messages", []byte(`{"text":"hi"}`))
			evs := sse.until(t, "text-delta")
			msgID := evs[0].Data["messageId"].(string)
			resp.Body.Close()
			reply := func() agent.Message {
				h := e.history(t, "gpt/d")
				if len(h) != 2 || h[1].ID != msgID {
					t.Fatalf("history = %s", roles(h))
				}
				return h[1]
			}
			if cancel {
				// The double holds until the test ends: only the
				// disconnect ends this generation.
				waitFor(t, "the reply to stop", func() bool { return reply().Status != agent.Streaming })
				m := reply()
				if m.Status != agent.Cancelled || m.Text() != "Hel" || !strings.Contains(m.Error, "disconnected") {
					t.Errorf("reply = %s %q %q, want cancelled, Hel, an error saying the client disconnected", m.Status, m.Text(), m.Error)
				}
				return
			}
			// The generation is still running after the disconnect: its
			// stream can be resumed live; then the model finishes.
			_, r := e.open(t, "GET", "/v1/agents/gpt/d/messages/"+msgID+"/stream", nil, "Last-Event-ID", evs[len(evs)-1].ID)
			release()
			rest := r.rest(t)
			if len(rest) == 0 || rest[len(rest)-1].Event != "message-end" {
				t.Fatalf("resumed = %s, want it to end with message-end", eventNames(rest))
			}
			if m := reply(); m.Status != agent.Complete || m.Text() != "Hello" {
				t.Errorf("reply = %s %q, want complete Hello", m.Status, m.Text())
			}
		})
	}
}

// TestResumeFollowerLeaves checks that a resumed reader that goes away
// does not hold up the generation or the session.
func TestResumeFollowerLeaves(t *testing.T) {
	hold := make(chan struct{})
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"a", "b"}, Hold: hold}
	})
	e := newEnv(t, "", openaiAgent(d))
	_, sse := e.open(t, "POST", "/v1/agents/gpt/l/messages", []byte(`{"text":"hi"}`))
	evs := sse.until(t, "text-delta")
	msgID := evs[0].Data["messageId"].(string)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/agents/gpt/l/messages/"+msgID+"/stream", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	close(hold)
	rest := sse.rest(t)
	if len(rest) == 0 {
		t.Fatal("the first client's stream ended with nothing")
	}
	if m := endMessage(t, rest[len(rest)-1]); m.Text() != "ab" || m.Status != agent.Complete {
		t.Errorf("reply = %s %q, want complete ab", m.Status, m.Text())
	}
	if h := e.history(t, "gpt/l"); len(h) != 2 {
		t.Errorf("history = %s", roles(h))
	}
}
