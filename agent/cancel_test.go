package agent_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
)

// cancelSession posts to a session's cancel endpoint and returns its
// answer.
func (e *env) cancelSession(tb testing.TB, session string) bool {
	tb.Helper()
	code, b := e.do(tb, "POST", "/v1/agents/"+session+"/cancel", nil)
	var out struct {
		Cancelled *bool `json:"cancelled"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &out) != nil || out.Cancelled == nil {
		tb.Fatalf("POST %s/cancel: %d %s", session, code, b)
	}
	return *out.Cancelled
}

// TestCancel checks that POST /cancel stops the generation in flight: the
// stream ends with the reply cancelled and its text so far, the stored
// reply says the same, and the session goes on.
func TestCancel(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	var calls atomic.Int32
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		if calls.Add(1) == 1 {
			return llmtest.Reply{Deltas: []string{"Hel", "lo", "!"}, Hold: hold}
		}
		return llmtest.Reply{Deltas: []string{"fine"}}
	})
	e := newEnv(t, "", openaiAgent(d))
	if e.cancelSession(t, "gpt/c") {
		t.Error("cancel with no generation = true, want false")
	}
	req, _ := http.NewRequest("POST", e.url+"/v1/agents/gpt/c/messages", strings.NewReader(`{"text":"hi"}`))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sse := &sseReader{bufio.NewReader(resp.Body)}
	if ev, ok := sse.next(t); !ok || ev.Event != "message-start" {
		t.Fatalf("first event = %+v, want message-start", ev)
	}
	if ev, ok := sse.next(t); !ok || ev.Event != "step-start" {
		t.Fatalf("second event = %+v, want step-start", ev)
	}
	if ev, ok := sse.next(t); !ok || ev.Event != "text-delta" || ev.Data["delta"] != "Hel" {
		t.Fatalf("third event = %+v, want text-delta Hel", ev)
	}
	// The double holds the rest until the test ends: only the cancel
	// ends this generation.
	if !e.cancelSession(t, "gpt/c") {
		t.Fatal("cancel during a generation = false, want true")
	}
	var end sseEvent
	for {
		ev, ok := sse.next(t)
		if !ok {
			t.Fatal("stream ended without message-end")
		}
		if ev.Event == "message-end" {
			end = ev
			break
		}
	}
	b, _ := json.Marshal(end.Data["message"])
	var m agent.Message
	json.Unmarshal(b, &m)
	if m.Status != agent.Cancelled || m.Text() != "Hel" || m.Error == "" {
		t.Errorf("message-end message = %+v, want cancelled with text Hel and an error", m)
	}
	h := e.history(t, "gpt/c")
	if r, want := roles(h), "user:hi|assistant:Hel"; r != want {
		t.Fatalf("history = %s, want %s", r, want)
	}
	if h[1].Status != agent.Cancelled || h[1].ID != m.ID {
		t.Errorf("stored reply = %s %s, want %s cancelled", h[1].ID, h[1].Status, m.ID)
	}
	if e.cancelSession(t, "gpt/c") {
		t.Error("cancel after the generation ended = true, want false")
	}

	// The next message works, and the cancelled reply is not sent to the
	// model.
	if next := e.send(t, "gpt/c", "again"); next.Status != agent.Complete || next.Text() != "fine" {
		t.Errorf("next reply = %+v, want complete fine", next)
	}
	var sent []string
	for _, m := range d.Requests()[1].Messages {
		sent = append(sent, m.Role+":"+m.Text())
	}
	if got, want := strings.Join(sent, "|"), "system:be kind|user:hi|user:again"; got != want {
		t.Errorf("second model request = %s, want %s", got, want)
	}
}

func TestCancelRejectsGet(t *testing.T) {
	e := newEnv(t, "")
	if code, b := e.do(t, "GET", "/v1/agents/default/c/cancel", nil); code != http.StatusBadRequest {
		t.Errorf("GET cancel = %d %s, want 400", code, b)
	}
}
