package agent

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// script of a reply, as a generation makes it: returns every event the
// live stream emitted, in order.
func playLive(l *live, final *Message) []*streamEvent {
	evs := []*streamEvent{l.start()}
	add := func(ev *streamEvent) {
		if ev != nil {
			evs = append(evs, ev)
		}
	}
	add(l.startRound())
	add(l.text(PartReasoning, "hm"))
	add(l.text(PartText, "Grüße, "))
	add(l.text(PartText, "world"))
	add(l.toolCallDelta(&ToolCall{Index: 0, ID: "c1", Name: "add", Input: `{"a":`}))
	p, ev := l.toolCall(&ToolCall{Index: 0, ID: "c1", Name: "add", Input: `{"a":1}`})
	add(ev)
	add(l.toolResult(Part{Type: PartToolResult, ToolCallID: p.ToolCallID, ToolName: p.ToolName, Output: json.RawMessage(`1`)}))
	add(l.endRound())
	// A last round that says nothing.
	add(l.startRound())
	add(l.endRound())
	if final != nil {
		final.Parts, final.Rounds = l.snapshot()
		ev, _ := l.end(final)
		add(ev)
	}
	return evs
}

func eventLines(evs []*streamEvent) string {
	var s []string
	for _, ev := range evs {
		if ev.name == "tool-call-delta" {
			continue
		}
		s = append(s, string(ev.sse()))
	}
	return strings.Join(s, "")
}

// TestReplayMatchesLive checks that the stream made again from a reply's
// content is the stream the generation sent, from any position: from
// the stored message (every round ended) and from the live state.
func TestReplayMatchesLive(t *testing.T) {
	final := &Message{ID: "msg_00000000000000000001", Role: Assistant, Status: Complete, Model: "m"}
	l := newLive(final.ID, "msg_00000000000000000000", "m")
	sent := playLive(l, final)
	stored := reply{msgID: final.ID, userID: l.userID, model: "m", parts: final.Parts, rounds: final.Rounds, final: final}
	// Text is replayed as one delta per part: compare the text runs' ends.
	var want []*streamEvent
	for i, ev := range sent {
		if (ev.name == "text-delta" || ev.name == "reasoning-delta") && i+1 < len(sent) && sent[i+1].name == ev.name {
			continue
		}
		want = append(want, ev)
	}
	var got []*streamEvent
	if err := stored.replay(-1, func(ev *streamEvent) { got = append(got, ev) }); err != nil {
		t.Fatal(err)
	}
	gotText, wantText := eventLines(got), eventLines(want)
	gotText = strings.ReplaceAll(gotText, `"delta":"Grüße, world"`, `"delta":"world"`)
	if gotText != wantText {
		t.Errorf("replayed =\n%s\nsent =\n%s", gotText, wantText)
	}
	if final.Rounds != 2 || len(Steps(final.Parts)) != 1 {
		t.Fatalf("rounds %d steps %d, want 2 rounds, the last empty", final.Rounds, len(Steps(final.Parts)))
	}

	// From each position sent, the rest replayed is what was sent after
	// it (text joined).
	for i, ev := range sent {
		pos := positionOf(t, ev.id)
		var rest []string
		if err := stored.replay(pos, func(e *streamEvent) { rest = append(rest, e.name+"@"+e.id) }); err != nil {
			t.Fatalf("replay after %s: %v", ev.id, err)
		}
		var after []string
		for j := i + 1; j < len(sent); j++ {
			e := sent[j]
			if e.name == "tool-call-delta" || (e.name == "text-delta" && j+1 < len(sent) && sent[j+1].name == "text-delta") {
				continue
			}
			after = append(after, e.name+"@"+e.id)
		}
		if strings.Join(rest, " ") != strings.Join(after, " ") {
			t.Errorf("after %s %s: replayed %v, sent %v", ev.name, ev.id, rest, after)
		}
	}
}

func positionOf(t *testing.T, id string) int64 {
	t.Helper()
	_, n, _ := strings.Cut(id, ":")
	p, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		t.Fatalf("event id %q: %v", id, err)
	}
	return p
}

// TestReplayLiveOpenRound checks the live state mid-round: the open
// round has no step-end, and a position past what was sent is refused.
func TestReplayLiveOpenRound(t *testing.T) {
	l := newLive("msg_00000000000000000001", "", "m")
	l.startRound()
	l.text(PartText, "abc")
	_, sub, err := l.subscribe(2)
	if err != nil {
		t.Fatal(err)
	}
	if sub == nil {
		t.Fatal("no subscriber for a live stream")
	}
	evs, _, err := l.subscribe(2)
	if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0]), `"delta":"bc"`) || !strings.Contains(string(evs[0]), "id: msg_00000000000000000001:4\n") {
		t.Errorf("subscribe(2) = %q, %v; want the text-delta bc at 4", evs, err)
	}
	if _, _, err := l.subscribe(5); err == nil {
		t.Error("subscribe past the position sent succeeded")
	}
	if evs, _, _ := l.subscribe(4); len(evs) != 0 {
		t.Errorf("subscribe at the end = %q, want nothing", evs)
	}
	l.text(PartText, "d")
	select {
	case b := <-sub.ch:
		if !strings.Contains(string(b), `"delta":"d"`) || !strings.Contains(string(b), ":5\n") {
			t.Errorf("live event = %q, want text-delta d at 5", b)
		}
	default:
		t.Error("the subscriber did not get the live event")
	}
}

// TestLiveDropsSlowReader checks that a reader that does not keep up is
// dropped without holding the generation up, while one that does gets
// every event.
func TestLiveDropsSlowReader(t *testing.T) {
	l := newLive("msg_00000000000000000001", "", "m")
	_, slow, _ := l.subscribe(-1)
	_, fast, _ := l.subscribe(-1)
	n := subBuffer + 100
	fastGot := 0
	read := func() {
		for {
			select {
			case _, ok := <-fast.ch:
				if !ok {
					return
				}
				fastGot++
			default:
				return
			}
		}
	}
	l.startRound()
	read()
	for range n - 1 {
		l.text(PartText, "x") // never blocks: the slow reader reads nothing
		read()
	}
	ev, subs := l.end(&Message{ID: l.msgID})
	deliver(ev, subs)
	read()
	c := 0
	for range slow.ch {
		c++
	}
	if c != subBuffer {
		t.Errorf("the slow reader got %d events before it was dropped, want %d", c, subBuffer)
	}
	if fastGot != n+1 {
		t.Errorf("the fast reader got %d events, want %d", fastGot, n+1)
	}
	if len(subs) != 1 {
		t.Errorf("%d readers at the end, want 1 (the slow one dropped)", len(subs))
	}
}
