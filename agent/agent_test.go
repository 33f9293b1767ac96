package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/agent/internal/llmtest"
	"github.com/cairn-dev/cairn/agent/openai"
)

// openaiAgent is an agent named "gpt" on the double.
func openaiAgent(d *llmtest.OpenAI) agent.Agent {
	return agent.Agent{Name: "gpt", Model: "test-model", System: "be kind",
		Provider: openai.New(openai.Config{BaseURL: d.URL, APIKey: "sk-test", MaxRetries: -1})}
}

func TestListAgents(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		e := newEnv(t, "")
		code, b := e.do(t, "GET", "/v1/agents", nil)
		if code != http.StatusOK {
			t.Fatalf("GET /v1/agents: %d %s", code, b)
		}
		var got struct{ Agents []agent.AgentInfo }
		json.Unmarshal(b, &got)
		want := []agent.AgentInfo{{Name: "default", Provider: "echo", Model: "echo"}}
		if len(got.Agents) != 1 || got.Agents[0] != want[0] {
			t.Errorf("agents = %+v, want %+v", got.Agents, want)
		}
	})
	t.Run("configured", func(t *testing.T) {
		d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply { return llmtest.Reply{} })
		e := newEnv(t, "", agent.Agent{Name: "dev"}, openaiAgent(d))
		var got struct{ Agents []agent.AgentInfo }
		_, b := e.do(t, "GET", "/v1/agents", nil)
		json.Unmarshal(b, &got)
		want := []agent.AgentInfo{{Name: "dev", Provider: "echo", Model: "echo"}, {Name: "gpt", Provider: "openai", Model: "test-model"}}
		if len(got.Agents) != 2 || got.Agents[0] != want[0] || got.Agents[1] != want[1] {
			t.Errorf("agents = %+v, want %+v", got.Agents, want)
		}
	})
}

func TestNewServiceRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		agents []agent.Agent
	}{
		{"bad name", []agent.Agent{{Name: "a/b"}}},
		{"empty name", []agent.Agent{{Name: ""}}},
		{"duplicate", []agent.Agent{{Name: "a"}, {Name: "a"}}},
		{"no model", []agent.Agent{{Name: "a", Provider: openai.New(openai.Config{})}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.NewService(tc.agents...); err == nil {
				t.Error("NewService succeeded, want an error")
			}
		})
	}
}

func TestEchoRoundTrip(t *testing.T) {
	e := newEnv(t, "")
	m := e.send(t, "default/s1", "hello world")
	if m.Role != agent.Assistant || m.Status != agent.Complete {
		t.Errorf("role %s status %s, want assistant complete", m.Role, m.Status)
	}
	if got, want := m.Text(), "echo: hello world"; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	if m.Usage == nil || m.Usage.OutputTokens == 0 || m.Usage.InputTokens == 0 {
		t.Errorf("usage = %+v, want counts", m.Usage)
	}
	if m.Model != "echo" || m.CreatedAt.IsZero() || !strings.HasPrefix(m.ID, "msg_") {
		t.Errorf("model %q created %v id %q", m.Model, m.CreatedAt, m.ID)
	}
	got := e.history(t, "default/s1")
	if r, want := roles(got), "user:hello world|assistant:echo: hello world"; r != want {
		t.Errorf("history = %s, want %s", r, want)
	}
	if got[1].ID != m.ID {
		t.Errorf("history's reply id = %s, want %s", got[1].ID, m.ID)
	}
	// Another session of the same agent is another object.
	if h := e.history(t, "default/s2"); len(h) != 0 {
		t.Errorf("session s2 has %d messages, want 0", len(h))
	}
	// The generic object route reaches the same object.
	code, b := e.do(t, "GET", "/v1/objects/agent/default%2Fs1/messages", nil)
	if code != http.StatusOK || !strings.Contains(string(b), m.ID) {
		t.Errorf("GET via /v1/objects: %d %s", code, b)
	}
}

func TestHistoryPaging(t *testing.T) {
	e := newEnv(t, "")
	for i := range 7 {
		e.send(t, "default/p", "message "+string(rune('a'+i)))
	}
	all := e.page(t, "default/p", "?limit=200").Messages
	if len(all) != 14 {
		t.Fatalf("got %d messages, want 14", len(all))
	}
	if all[0].Role != agent.Assistant || all[0].Text() != "echo: message g" || all[13].Text() != "message a" {
		t.Errorf("not newest first: first %q, last %q", all[0].Text(), all[13].Text())
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		q := "?limit=3"
		if cursor != "" {
			q += "&before=" + cursor
		}
		p := e.page(t, "default/p", q)
		for _, m := range p.Messages {
			ids = append(ids, m.ID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(ids) != len(all) {
		t.Fatalf("paged %d messages, want %d", len(ids), len(all))
	}
	for i := range all {
		if ids[i] != all[i].ID {
			t.Errorf("message %d: paged %s, want %s", i, ids[i], all[i].ID)
		}
	}

	for _, q := range []string{"?limit=0", "?limit=201", "?limit=x", "?before=nope", "?before=msg_00000000000000000000"} {
		code, b := e.do(t, "GET", "/v1/agents/default/p/messages"+q, nil)
		if code != http.StatusBadRequest || errorCode(b) != "invalid" {
			t.Errorf("GET %s: %d %s, want 400 invalid", q, code, b)
		}
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, "", agent.Agent{Name: "small", MaxTextBytes: 100})
	e.svc.MaxBodyBytes = 1 << 10
	big := []byte(`{"text":"` + strings.Repeat("x", 2000) + `"}`)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"malformed JSON", "POST", "/v1/agents/small/s/messages", []byte(`{"text":`), 400, "invalid"},
		{"not an object", "POST", "/v1/agents/small/s/messages", []byte(`"hi"`), 400, "invalid"},
		{"two objects", "POST", "/v1/agents/small/s/messages", []byte(`{"text":"a"} {"text":"b"}`), 400, "invalid"},
		{"empty text", "POST", "/v1/agents/small/s/messages", []byte(`{"text":"  "}`), 400, "invalid"},
		{"no text", "POST", "/v1/agents/small/s/messages", []byte(`{}`), 400, "invalid"},
		{"text too large", "POST", "/v1/agents/small/s/messages", []byte(`{"text":"` + strings.Repeat("x", 101) + `"}`), 413, "too_large"},
		{"body too large", "POST", "/v1/agents/small/s/messages", big, 413, "too_large"},
		{"unknown agent", "POST", "/v1/agents/nobody/s/messages", []byte(`{"text":"hi"}`), 404, "not_found"},
		{"bad agent name", "GET", "/v1/agents/a%20b/s/messages", nil, 400, "invalid"},
		{"unknown path", "GET", "/v1/agents/small/s/other", nil, 404, "not_found"},
		{"bad method", "DELETE", "/v1/agents/small/s/messages", nil, 400, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := e.do(t, tc.method, tc.path, tc.body)
			if code != tc.status || errorCode(b) != tc.code {
				t.Errorf("%d %s, want %d %s", code, b, tc.status, tc.code)
			}
		})
	}
	// Nothing was stored by the refused requests.
	if h := e.history(t, "small/s"); len(h) != 0 {
		t.Errorf("history has %d messages, want 0", len(h))
	}
}

// TestStreamBeforeModelFinishes checks that deltas reach an SSE client as
// the model produces them, that history reads are served while the model
// runs, and that the finished message is stored.
func TestStreamBeforeModelFinishes(t *testing.T) {
	hold := make(chan struct{})
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"Hel", "lo", "!"}, Hold: hold, Usage: &llmtest.Usage{PromptTokens: 9, CompletionTokens: 3}}
	})
	e := newEnv(t, "", openaiAgent(d))
	req, _ := http.NewRequest("POST", e.url+"/v1/agents/gpt/s/messages", strings.NewReader(`{"text":"hi"}`))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	sse := &sseReader{bufio.NewReader(resp.Body)}
	start, ok := sse.next(t)
	if !ok || start.Event != "message-start" {
		t.Fatalf("first event = %+v, want message-start", start)
	}
	msgID, _ := start.Data["messageId"].(string)
	if msgID == "" || start.Data["userMessageId"] == nil || !strings.HasPrefix(start.ID, msgID+":") {
		t.Errorf("message-start = %+v", start)
	}
	if step, ok := sse.next(t); !ok || step.Event != "step-start" || step.Data["step"] != 1.0 || step.ID != msgID+":1" {
		t.Fatalf("second event = %+v, want step-start 1 at %s:1", step, msgID)
	}
	first, ok := sse.next(t)
	if !ok || first.Event != "text-delta" || first.Data["delta"] != "Hel" || first.ID != msgID+":4" {
		t.Fatalf("third event = %+v, want text-delta Hel at %s:4", first, msgID)
	}
	// The double still holds the rest: the turn is released, so a history
	// read is served, and shows the reply as streaming.
	h := e.history(t, "gpt/s")
	if r, want := roles(h), "user:hi|assistant:"; r != want {
		t.Fatalf("history while streaming = %s, want %s", r, want)
	}
	if h[1].Status != agent.Streaming || h[1].ID != msgID {
		t.Errorf("reply while streaming: %s %s, want %s streaming", h[1].ID, h[1].Status, msgID)
	}
	close(hold)
	var text string = "Hel"
	var end sseEvent
	for {
		ev, ok := sse.next(t)
		if !ok {
			t.Fatal("stream ended without message-end")
		}
		if ev.Event == "text-delta" {
			text += ev.Data["delta"].(string)
		}
		if ev.Event == "message-end" {
			end = ev
			break
		}
	}
	if text != "Hello!" {
		t.Errorf("streamed text = %q, want Hello!", text)
	}
	b, _ := json.Marshal(end.Data["message"])
	var m agent.Message
	json.Unmarshal(b, &m)
	if m.ID != msgID || m.Status != agent.Complete || m.Text() != "Hello!" || m.Usage == nil || m.Usage.InputTokens != 9 {
		t.Errorf("message-end message = %+v", m)
	}
	h = e.history(t, "gpt/s")
	if h[1].Status != agent.Complete || h[1].Text() != "Hello!" || h[1].Usage == nil || h[1].Usage.OutputTokens != 3 {
		t.Errorf("stored reply = %+v", h[1])
	}
	// The model got the system prompt and the user message.
	msgs := d.Requests()[0].Messages
	if len(msgs) != 2 || msgs[0].Role != "system" || msgs[0].Text() != "be kind" || msgs[1].Text() != "hi" {
		t.Errorf("model request messages = %+v", msgs)
	}
}

// TestConcurrentPostsInOrder checks that messages sent while another is
// generating are stored at once (pending), but reach the model one at a
// time, in arrival order, each with the replies before it in its context
// and none of the messages after it (G3).
func TestConcurrentPostsInOrder(t *testing.T) {
	hold := make(chan struct{})
	var mu sync.Mutex
	n := 0
	d := llmtest.NewOpenAI(t, func(r *llmtest.ChatRequest) llmtest.Reply {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 1 {
			return llmtest.Reply{Deltas: []string{"reply ", "1"}, Hold: hold}
		}
		return llmtest.Reply{Deltas: []string{"reply " + strconv.Itoa(n)}}
	})
	e := newEnv(t, "", openaiAgent(d))
	var wg sync.WaitGroup
	replies := make([]agent.Message, 3)
	post := func(i int, text string) {
		defer wg.Done()
		body, _ := json.Marshal(map[string]string{"text": text})
		code, b := e.do(t, "POST", "/v1/agents/gpt/c/messages", body)
		if code != http.StatusOK {
			t.Errorf("POST %q: %d %s", text, code, b)
			return
		}
		json.Unmarshal(b, &replies[i])
	}
	wg.Add(1)
	go post(0, "one")
	waitFor(t, "the first request at the model", func() bool { return len(d.Requests()) == 1 })
	// The later messages are stored while the first generates...
	wg.Add(1)
	go post(1, "two")
	waitFor(t, "the second message stored", func() bool { return len(e.history(t, "gpt/c")) == 3 })
	wg.Add(1)
	go post(2, "three")
	waitFor(t, "the third message stored", func() bool { return len(e.history(t, "gpt/c")) == 4 })
	h := e.history(t, "gpt/c")
	if r, want := roles(h), "user:one|assistant:|user:two|user:three"; r != want {
		t.Errorf("history while the first generates = %s, want %s", r, want)
	}
	if h[1].Status != agent.Streaming || h[2].Status != agent.Pending || h[3].Status != agent.Pending {
		t.Errorf("statuses %s %s %s, want streaming pending pending", h[1].Status, h[2].Status, h[3].Status)
	}
	// ...but do not reach the model.
	if got := len(d.Requests()); got != 1 {
		t.Fatalf("model got %d requests while the first generates, want 1", got)
	}
	close(hold)
	wg.Wait()
	for i, m := range replies {
		if want := "reply " + strconv.Itoa(i+1); m.Text() != want {
			t.Errorf("reply %d = %q, want %q", i, m.Text(), want)
		}
	}
	reqs := d.Requests()
	if len(reqs) != 3 {
		t.Fatalf("model got %d requests, want 3", len(reqs))
	}
	for i, want := range []string{
		"system:be kind|user:one",
		"system:be kind|user:one|assistant:reply 1|user:two",
		"system:be kind|user:one|assistant:reply 1|user:two|assistant:reply 2|user:three",
	} {
		var ctx []string
		for _, m := range reqs[i].Messages {
			ctx = append(ctx, m.Role+":"+m.Text())
		}
		if got := strings.Join(ctx, "|"); got != want {
			t.Errorf("request %d's context = %s, want %s", i, got, want)
		}
	}
	h = e.history(t, "gpt/c")
	if r, want := roles(h), "user:one|assistant:reply 1|user:two|assistant:reply 2|user:three|assistant:reply 3"; r != want {
		t.Errorf("history = %s, want %s", r, want)
	}
	for _, m := range h {
		if m.Status != agent.Complete {
			t.Errorf("message %s is %s, want complete", m.ID, m.Status)
		}
	}
}

func TestHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir)
	e.send(t, "default/r", "before restart")
	e.send(t, "default/r", "again")
	want := roles(e.history(t, "default/r"))
	e.close(t)

	e2 := newEnv(t, dir)
	if got := roles(e2.history(t, "default/r")); got != want {
		t.Errorf("history after restart = %s, want %s", got, want)
	}
	e2.send(t, "default/r", "after")
	if got := len(e2.history(t, "default/r")); got != 6 {
		t.Errorf("got %d messages, want 6", got)
	}
}

// TestProviderErrorMidStream checks that a failed generation keeps what
// arrived, is stored with status error, and is left out of the context of
// the next call.
func TestProviderErrorMidStream(t *testing.T) {
	var mu sync.Mutex
	n := 0
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 1 {
			return llmtest.Reply{Deltas: []string{"par", "tial"}, StreamError: "the model is overloaded"}
		}
		return llmtest.Reply{Deltas: []string{"fine"}}
	})
	e := newEnv(t, "", openaiAgent(d))
	m := e.send(t, "gpt/err", "one")
	if m.Status != agent.Failed || m.Text() != "partial" || !strings.Contains(m.Error, "overloaded") {
		t.Errorf("reply = %+v, want status error, text partial, the provider's error", m)
	}
	h := e.history(t, "gpt/err")
	if len(h) != 2 || h[1].Status != agent.Failed || h[1].Error != m.Error {
		t.Fatalf("history = %+v", h)
	}

	// Over SSE, the error reaches the client in message-end.
	req, _ := http.NewRequest("POST", e.url+"/v1/agents/gpt/err2/messages", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Accept", "text/event-stream")
	n = 0
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sse := &sseReader{bufio.NewReader(resp.Body)}
	var last sseEvent
	for {
		ev, ok := sse.next(t)
		if !ok {
			break
		}
		last = ev
	}
	msg, _ := last.Data["message"].(map[string]any)
	if last.Event != "message-end" || msg["status"] != "error" {
		t.Errorf("last event = %+v, want message-end with status error", last)
	}

	m2 := e.send(t, "gpt/err", "two")
	if m2.Status != agent.Complete {
		t.Errorf("next reply status = %s", m2.Status)
	}
	var ctx []string
	for _, cm := range d.Requests()[2].Messages {
		ctx = append(ctx, cm.Role+":"+cm.Text())
	}
	if got, want := strings.Join(ctx, "|"), "system:be kind|user:one|user:two"; got != want {
		t.Errorf("context after a failed reply = %s, want %s", got, want)
	}
}

func TestLargeMessage(t *testing.T) {
	e := newEnv(t, "", agent.Agent{Name: "default", MaxTextBytes: 6 << 20})
	// 5 MB of text with multi-byte runes, so that chunk and piece
	// boundaries fall inside them.
	var sb strings.Builder
	for sb.Len() < 5<<20 {
		sb.WriteString("héllo wörld ✓ ")
	}
	text := sb.String()
	m := e.send(t, "default/big", text)
	if got, want := m.Text(), "echo: "+text; got != want {
		t.Fatalf("reply is %d bytes, want %d (equal: %v)", len(got), len(want), got == want)
	}
	p := e.page(t, "default/big", "?limit=2")
	if len(p.Messages) != 2 || p.Messages[1].Text() != text || p.Messages[0].Text() != "echo: "+text {
		t.Fatalf("history does not round-trip the large messages")
	}
	// Stored in chunks, not as one value.
	ns, _ := e.rt.Namespace(agent.Namespace)
	stub, _ := ns.GetByName(agent.ObjectName("default", "big"))
	var chunks, inline int64
	err := stub.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		rows, err := st.Query(`SELECT (SELECT COUNT(*) FROM message_chunks), (SELECT COUNT(*) FROM messages WHERE parts IS NOT NULL)`)
		if err != nil {
			return err
		}
		chunks, inline = rows.Values[0][0].(int64), rows.Values[0][1].(int64)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if chunks < 20 || inline != 0 {
		t.Errorf("%d chunk rows and %d inline messages, want at least 20 and 0", chunks, inline)
	}
}

// TestShutdownCancelsGeneration checks that closing the runtime ends a
// generation in flight, stored as cancelled, and that a message waiting
// for it is answered 503 and stored as cancelled.
func TestShutdownCancelsGeneration(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	d := llmtest.NewOpenAI(t, func(*llmtest.ChatRequest) llmtest.Reply {
		return llmtest.Reply{Deltas: []string{"never ", "finished"}, Hold: hold}
	})
	dir := t.TempDir()
	e := newEnv(t, dir, openaiAgent(d))
	type answer struct {
		code int
		body []byte
	}
	first, second := make(chan answer, 1), make(chan answer, 1)
	go func() {
		code, b := e.do(t, "POST", "/v1/agents/gpt/x/messages", []byte(`{"text":"one"}`))
		first <- answer{code, b}
	}()
	waitFor(t, "the request at the model", func() bool { return len(d.Requests()) == 1 })
	go func() {
		code, b := e.do(t, "POST", "/v1/agents/gpt/x/messages", []byte(`{"text":"two"}`))
		second <- answer{code, b}
	}()
	waitFor(t, "the second message stored", func() bool { return len(e.history(t, "gpt/x")) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.rt.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	a1 := <-first
	var m agent.Message
	json.Unmarshal(a1.body, &m)
	if a1.code != http.StatusOK || m.Status != agent.Cancelled || m.Text() != "never " {
		t.Errorf("first reply = %d %s, want 200 cancelled with the text so far", a1.code, a1.body)
	}
	if a2 := <-second; a2.code != http.StatusServiceUnavailable || errorCode(a2.body) != "unavailable" {
		t.Errorf("second reply = %d %s, want 503 unavailable", a2.code, a2.body)
	}
	e.close(t)

	e2 := newEnv(t, dir, openaiAgent(d))
	h := e2.history(t, "gpt/x")
	if r, want := roles(h), "user:one|assistant:never |user:two"; r != want {
		t.Fatalf("history after restart = %s, want %s", r, want)
	}
	if h[1].Status != agent.Cancelled || h[2].Status != agent.Cancelled || h[2].Error == "" {
		t.Errorf("statuses after restart: reply %s, second message %s (%q); want cancelled, cancelled", h[1].Status, h[2].Status, h[2].Error)
	}
}

// TestInterruptedOnActivation checks that messages a stopped process left
// in flight are settled when the session activates again.
func TestInterruptedOnActivation(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir)
	e.send(t, "default/i", "one")
	e.send(t, "default/i", "two")
	h := e.history(t, "default/i")
	// Leave the state a killed process would: a reply streaming, the
	// next message pending.
	ns, _ := e.rt.Namespace(agent.Namespace)
	stub, _ := ns.GetByName(agent.ObjectName("default", "i"))
	err := stub.Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		if _, err := st.Exec(`UPDATE messages SET status = 'streaming' WHERE id = ?`, h[1].ID); err != nil {
			return err
		}
		_, err := st.Exec(`UPDATE messages SET status = 'pending' WHERE id = ?`, h[2].ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e.close(t)
	e2 := newEnv(t, dir)
	h = e2.history(t, "default/i")
	if h[1].Status != agent.Failed || h[2].Status != agent.Cancelled || h[3].Status != agent.Complete {
		t.Errorf("statuses %s %s %s, want error cancelled complete", h[1].Status, h[2].Status, h[3].Status)
	}
}

func TestEchoPieces(t *testing.T) {
	long := strings.Repeat("ü", 100<<10) // 200 KiB of two-byte runes
	for _, tc := range []struct{ name, text string }{
		{"short", "one two three"},
		{"long", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &agent.Request{Messages: []agent.Message{{Role: agent.User, Parts: []agent.Part{{Type: agent.PartText, Text: tc.text}}}}}
			var buf bytes.Buffer
			pieces := 0
			var last agent.Event
			for ev := range (agent.Echo{}).Stream(context.Background(), req) {
				if ev.Type == agent.EventText {
					if !utf8Valid(ev.Text) {
						t.Errorf("piece %d is not valid UTF-8", pieces)
					}
					buf.WriteString(ev.Text)
					pieces++
				}
				last = ev
			}
			if got, want := buf.String(), "echo: "+tc.text; got != want {
				t.Errorf("echo is %d bytes, want %d", len(got), len(want))
			}
			if pieces < 3 {
				t.Errorf("%d pieces, want several", pieces)
			}
			if last.Type != agent.EventDone {
				t.Errorf("last event %+v, want done", last)
			}
		})
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }
