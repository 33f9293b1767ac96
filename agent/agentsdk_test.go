package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/internal/peertest"
)

// newSDKEnv is newEnvWith with the Agents SDK's routes mounted at
// /agents/ too, and tokens (none: auth off) for all of them.
func newSDKEnv(tb testing.TB, dir string, tokens []cairnhttp.Token, setup func(*cairn.Runtime), agents ...agent.Agent) *env {
	tb.Helper()
	return openEnv(tb, dir, setup, agents, func(hs *cairnhttp.Server, svc *agent.Service) {
		hs.Tokens = tokens
		h := svc.Handler()
		hs.Routes = []cairnhttp.Route{
			{Pattern: "/v1/agents", Handler: h, Namespace: agent.Namespace},
			{Pattern: "/v1/agents/", Handler: h, Namespace: agent.Namespace},
			{Pattern: "/agents/", Handler: svc.SDKHandler(), Namespace: agent.Namespace},
		}
	})
}

// holdProvider stops after "part one " until release is closed; a last
// user message starting with "forever" makes it wait until its context
// ends.
type holdProvider struct{ release chan struct{} }

func (holdProvider) Name() string { return "hold" }

func (p holdProvider) Stream(ctx context.Context, req *agent.Request) iter.Seq[agent.Event] {
	return func(yield func(agent.Event) bool) {
		var last string
		for _, m := range req.Messages {
			if m.Role == agent.User {
				last = m.Text()
			}
		}
		wait := p.release
		if strings.HasPrefix(last, "forever") {
			wait = nil
		}
		if !yield(textEv("part one ")) {
			return
		}
		select {
		case <-wait:
		case <-ctx.Done():
			yield(agent.Event{Type: agent.EventError, Err: cairn.Errorf(cairn.Unavailable, "stopped: %v", ctx.Err())})
			return
		}
		if yield(textEv("part two")) {
			yield(doneEv("stop"))
		}
	}
}

// guardAgent's model calls the tool "guarded", which needs approval, then
// says what it got.
func guardAgent(name string, ran *sync.Map, timeout time.Duration) agent.Agent {
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		last := req.Messages[len(req.Messages)-1]
		for _, part := range last.Parts {
			if part.Type == agent.PartToolResult {
				return []agent.Event{textEv("the tool said " + string(part.Output)), doneEv("stop")}
			}
		}
		return []agent.Event{textEv("Let me check."), callEv(0, "call_g"+strings.Repeat("x", n%2), "guarded", `{"what":"door"}`), doneEv("tool_calls")}
	}}
	return agent.Agent{Name: name, Provider: p, Model: "m", ApprovalTimeout: timeout, Tools: []agent.Tool{{
		Name: "guarded", NeedsApproval: true,
		Call: func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			ran.Store(string(in), true)
			return json.RawMessage(`"opened"`), nil
		},
	}}}
}

// agentsSummary is what testdata/agents_client.mjs prints.
type agentsSummary struct {
	Version  string
	Identity struct {
		Name, Agent string
		Identified  bool
	}
	InitialState json.RawMessage
	SeenByB      struct {
		State  json.RawMessage
		Source string
	}
	RPCState     json.RawMessage `json:"rpcState"`
	RPCSchedule  agent.Schedule  `json:"rpcSchedule"`
	RPCSchedules []agent.Schedule
	RPCUnknown   string `json:"rpcUnknown"`
	HTTPState    agent.StateResponse
	Chat         struct {
		Types          []string
		Text, ID, Role string
	}
	TranscriptSeenByB []string
	GetMessages       []string
	BeforeDrop        []string
	Resumed           struct {
		Types    []string
		Text, ID string
	}
	Cancel struct{ First, Outcome string }
	Parked struct {
		Types             []string
		State, ToolCallID string
	}
	Continued struct{ Types, Updated []string }
}

// TestAgentsSDKClient drives a session with the real Agents SDK client in
// Node (installed by .ci/setup.d/50-agents-node.sh), its token given as
// a WebSocket subprotocol: identity and state on connect, setState seen
// by another client and over HTTP, RPC, a streamed chat turn, a turn
// resumed after its socket dropped mid-stream, a cancelled turn, and a
// tool approval that continues the reply.
func TestAgentsSDKClient(t *testing.T) {
	node := peertest.Node(t)
	modules := peertest.NodeModules(t, "agents-node", "agents", "ai", "ws")
	script, err := filepath.Abs(filepath.Join("testdata", "agents_client.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "agents-sdk-test-secret-0123456789"
	release := make(chan struct{})
	var once sync.Once
	releaser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(release) })
	}))
	t.Cleanup(releaser.Close)
	var ran sync.Map
	e := newSDKEnv(t, "", []cairnhttp.Token{{Name: "t", Secret: secret, Namespaces: []string{agent.Namespace}}}, nil,
		agent.Agent{Name: "default"}, agent.Agent{Name: "hold", Provider: holdProvider{release}, Model: "h"},
		guardAgent("guard", &ran, time.Hour))
	auth := []string{"Authorization", "Bearer " + secret}
	if code, b := e.do(t, "PUT", "/v1/agents/default/sdk/state", []byte(`{"count":1}`), auth...); code != http.StatusOK {
		t.Fatalf("PUT state: %d %s", code, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, strings.TrimPrefix(e.url, "http://"), "sdk", releaser.URL)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "CAIRN_TOKEN="+secret)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v (context: %v)\nstdout: %s\nstderr: %s", script, err, ctx.Err(), stdout.Bytes(), stderr.Bytes())
	}
	var got agentsSummary
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("decode summary: %v\nstdout: %s\nstderr: %s", err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("agents %s: %s", got.Version, bytes.TrimSpace(stdout.Bytes()))
	join := func(s []string) string { return strings.Join(s, ",") }

	t.Run("identity and state", func(t *testing.T) {
		if got.Identity.Name != "sdk" || got.Identity.Agent != "default" || !got.Identity.Identified {
			t.Errorf("identity = %+v, want sdk of default, identified", got.Identity)
		}
		if string(got.InitialState) != `{"count":1}` {
			t.Errorf("state on connect = %s, want the state set before", got.InitialState)
		}
		want := `{"count":2,"who":"a"}`
		if string(got.SeenByB.State) != want || got.SeenByB.Source != "server" {
			t.Errorf("the other client saw %s from %s, want %s from server", got.SeenByB.State, got.SeenByB.Source, want)
		}
		if string(got.RPCState) != want || string(got.HTTPState.State) != want || got.HTTPState.Version != 2 {
			t.Errorf("getState = %s, GET /state = %s v%d; want %s v2", got.RPCState, got.HTTPState.State, got.HTTPState.Version, want)
		}
	})
	t.Run("rpc", func(t *testing.T) {
		if got.RPCSchedule.ID == "" || got.RPCSchedule.Type != "delayed" || string(got.RPCSchedule.Payload) != `{"note":"later"}` {
			t.Errorf("schedule() = %+v", got.RPCSchedule)
		}
		if len(got.RPCSchedules) != 1 || got.RPCSchedules[0].ID != got.RPCSchedule.ID {
			t.Errorf("listSchedules() = %+v, want the one added", got.RPCSchedules)
		}
		if !strings.Contains(got.RPCUnknown, "does not exist") {
			t.Errorf("an unknown method: %q, want a rejection saying it does not exist", got.RPCUnknown)
		}
	})
	history := func(session string) []agent.Message {
		t.Helper()
		code, b := e.do(t, "GET", "/v1/agents/"+session+"/messages?limit=200", nil, auth...)
		var p agent.Page
		if code != http.StatusOK || json.Unmarshal(b, &p) != nil {
			t.Fatalf("GET %s messages: %d %s", session, code, b)
		}
		slices.Reverse(p.Messages)
		return p.Messages
	}
	h := history("default/sdk")
	t.Run("chat", func(t *testing.T) {
		if r := roles(h); r != "user:hello streaming world|assistant:echo: hello streaming world" {
			t.Fatalf("history = %s", r)
		}
		c := got.Chat
		if c.Text != h[1].Text() || c.ID != h[1].ID || c.Role != "assistant" {
			t.Errorf("the client built %s %q (%s), want the stored reply %q (%s)", c.Role, c.Text, c.ID, h[1].Text(), h[1].ID)
		}
		if n := strings.Count(join(c.Types), "text-delta"); n < 2 {
			t.Errorf("chunks %s: want the text streamed in several deltas", join(c.Types))
		}
		if !strings.HasPrefix(join(c.Types), "start,start-step,text-start,text-delta") || !strings.HasSuffix(join(c.Types), "text-end,finish-step,finish") {
			t.Errorf("chunks %s, want start, start-step, text-start, deltas, text-end, finish-step, finish", join(c.Types))
		}
		want := "user:hello streaming world,assistant:echo: hello streaming world"
		if join(got.TranscriptSeenByB) != want || join(got.GetMessages) != want {
			t.Errorf("transcript pushed to the other client %q, get-messages %q; want %q", got.TranscriptSeenByB, got.GetMessages, want)
		}
	})
	hh := history("hold/sdk")
	t.Run("resume", func(t *testing.T) {
		if len(hh) < 2 || hh[1].Text() != "part one part two" || hh[1].Status != agent.Complete {
			t.Fatalf("history = %s", roles(hh))
		}
		if b := join(got.BeforeDrop); !strings.Contains(b, "text-delta") || !strings.HasSuffix(b, "error") {
			t.Errorf("before the drop: %s, want deltas, then the transport's error for the closed socket", b)
		}
		if got.Resumed.Text != "part one part two" || got.Resumed.ID != hh[1].ID {
			t.Errorf("resumed message %q (%s), want %q (%s): the replay and the rest", got.Resumed.Text, got.Resumed.ID, hh[1].Text(), hh[1].ID)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		if len(hh) != 4 || hh[3].Status != agent.Cancelled || hh[3].Text() != "part one " {
			t.Fatalf("history = %s; want the forever reply cancelled with its first part", roles(hh))
		}
		if got.Cancel.First != "start" {
			t.Errorf("cancelled stream began with %q, want start", got.Cancel.First)
		}
	})
	t.Run("approval", func(t *testing.T) {
		p := got.Parked
		if p.State != "approval-requested" || !strings.Contains(join(p.Types), "tool-input-available,tool-approval-request") {
			t.Errorf("parked turn: state %q, chunks %s", p.State, join(p.Types))
		}
		if ct := join(got.Continued.Types); !strings.Contains(ct, "tool-output-available") || !strings.Contains(ct, "text-delta") {
			t.Errorf("continuation chunks %s, want the tool's output and the model's text", ct)
		}
		if !strings.Contains(join(got.Continued.Updated), "approval-responded") {
			t.Errorf("message updates %q, want the approval responded", got.Continued.Updated)
		}
		gh := history("guard/sdk")
		if len(gh) != 2 || gh[1].Status != agent.Complete || gh[1].Text() != `Let me check.the tool said "opened"` {
			t.Fatalf("history = %s (%s)", roles(gh), gh[len(gh)-1].Status)
		}
		if _, ok := ran.Load(`{"what":"door"}`); !ok {
			t.Error("the approved tool did not run")
		}
	})
}

// wsDial connects to a session's agents protocol.
func wsDial(tb testing.TB, e *env, path string) *websocket.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+path, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s: %v (%d)", path, err, status)
	}
	tb.Cleanup(func() { c.CloseNow() })
	return c
}

// frame reads frames until one of type typ.
func frame(tb testing.TB, c *websocket.Conn, typ string) map[string]any {
	tb.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := c.Read(ctx)
		cancel()
		if err != nil {
			tb.Fatalf("waiting for %s: %v", typ, err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			tb.Fatalf("frame %s: %v", b, err)
		}
		if f["type"] == typ {
			return f
		}
	}
}

func writeFrame(tb testing.TB, c *websocket.Conn, f map[string]any) {
	tb.Helper()
	b, _ := json.Marshal(f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		tb.Fatal(err)
	}
}

// TestSDKProtocol checks frames the Node client does not: patches for
// clients that ask, state errors, and a clear.
func TestSDKProtocol(t *testing.T) {
	e := newSDKEnv(t, "", nil, nil)
	whole := wsDial(t, e, "/agents/default/p")
	frame(t, whole, "cf_agent_identity")
	patches := wsDial(t, e, "/agents/default/p?state_patches=1")
	if id := frame(t, patches, "cf_agent_identity"); id["name"] != "p" || id["agent"] != "default" || id["stateFollows"] != nil {
		t.Errorf("identity = %v, want p of default and no state to follow", id)
	}
	if code, b := e.do(t, "PUT", "/v1/agents/default/p/state", []byte(`{"a":1,"b":{"c":2}}`)); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, b)
	}
	if code, b := e.do(t, "PATCH", "/v1/agents/default/p/state", []byte(`{"b":{"c":3}}`), "Content-Type", "application/merge-patch+json"); code != http.StatusOK {
		t.Fatalf("PATCH: %d %s", code, b)
	}
	frame(t, whole, "cf_agent_state")
	if f := frame(t, whole, "cf_agent_state"); mustMarshal(f["state"]) != `{"a":1,"b":{"c":3}}` || f["version"] != 2.0 {
		t.Errorf("whole state = %v", f)
	}
	frame(t, patches, "cairn_state_patch")
	if f := frame(t, patches, "cairn_state_patch"); mustMarshal(f["patch"]) != `{"b":{"c":3}}` || f["version"] != 2.0 {
		t.Errorf("patch = %v", f)
	}
	code, b := e.do(t, "PATCH", "/v1/agents/default/p/state", []byte(`[{"op":"test","path":"/a","value":9}]`), "Content-Type", "application/json-patch+json")
	if code != http.StatusConflict {
		t.Errorf("failed JSON Patch test: %d %s, want 409", code, b)
	}
	if code, _ := e.do(t, "PATCH", "/v1/agents/default/p/state", []byte(`{}`)); code != http.StatusBadRequest {
		t.Errorf("PATCH without a patch type: %d, want 400", code)
	}
	writeFrame(t, whole, map[string]any{"type": "cf_agent_state"}) // no state: not JSON
	if f := frame(t, whole, "cf_agent_state_error"); f["error"] == "" {
		t.Errorf("state error = %v", f)
	}
	writeFrame(t, patches, map[string]any{"type": "rpc", "id": "r1", "method": "getState", "args": []any{}})
	if f := frame(t, patches, "rpc"); f["id"] != "r1" || f["success"] != true || f["done"] != true || mustMarshal(f["result"]) != `{"a":1,"b":{"c":3}}` {
		t.Errorf("rpc answer = %v", f)
	}

	e.send(t, "default/p", "one")
	writeFrame(t, whole, map[string]any{"type": "cf_agent_chat_clear"})
	frame(t, patches, "cf_agent_chat_clear")
	if h := e.history(t, "default/p"); len(h) != 0 {
		t.Errorf("history after a clear = %s", roles(h))
	}
	// A resume probe with nothing streaming.
	writeFrame(t, whole, map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "pr"})
	if f := frame(t, whole, "cf_agent_stream_resume_none"); f["probeId"] != "pr" || f["reason"] != "idle" {
		t.Errorf("resume none = %v", f)
	}
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestSDKSocketsSurviveEviction checks that the protocol's sockets are the
// runtime's hibernatable ones: the session is evicted from memory while a
// client stays connected, and the client's next frame wakes it.
func TestSDKSocketsSurviveEviction(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newSDKEnv(t, "", nil, func(rt *cairn.Runtime) { rt.Now = clock })
	c := wsDial(t, e, "/agents/default/evicted")
	frame(t, c, "cf_agent_identity")
	other := wsDial(t, e, "/agents/default/evicted")
	frame(t, other, "cf_agent_identity")
	stub, err := e.svc.Session("default", "evicted")
	if err != nil {
		t.Fatal(err)
	}
	id := stub.ID()
	waitFor(t, "the session's eviction", func() bool {
		mu.Lock()
		now = now.Add(e.rt.IdleTimeout + time.Second)
		mu.Unlock()
		e.rt.EvictIdle()
		return !e.rt.IsActive(id)
	})
	if n := e.rt.Sockets(); n != 2 {
		t.Fatalf("open sockets after eviction = %d, want 2", n)
	}
	writeFrame(t, c, map[string]any{"type": "cf_agent_state", "state": map[string]any{"woke": true}})
	if f := frame(t, other, "cf_agent_state"); mustMarshal(f["state"]) != `{"woke":true}` {
		t.Errorf("the other client got %v", f)
	}
	if !e.rt.IsActive(id) {
		t.Error("the session is not active after a frame")
	}
}

// PUT and PATCH /state with If-Match change the state only at the version
// they name; every answer carries the version as its ETag.
func TestStateIfMatch(t *testing.T) {
	e := newEnv(t, "")
	const path = "/v1/agents/default/c/state"
	tag := func(method string, body []byte, header ...string) (int, string, []byte) {
		t.Helper()
		code, b, h := e.doHeader(t, method, path, body, header...)
		return code, h.Get("ETag"), b
	}
	if code, etag, b := tag("GET", nil); code != 200 || etag != `"0"` {
		t.Fatalf("GET of a new state: %d, ETag %s, %s; want 200, \"0\"", code, etag, b)
	}
	if code, etag, b := tag("PUT", []byte(`{"n":1}`), "If-Match", `"0"`); code != 200 || etag != `"1"` {
		t.Fatalf("PUT at the version read: %d, ETag %s, %s; want 200, \"1\"", code, etag, b)
	}
	// Someone else's write meanwhile.
	if code, _, b := tag("PUT", []byte(`{"n":2}`)); code != 200 {
		t.Fatalf("PUT without If-Match: %d %s", code, b)
	}
	code, etag, b := tag("PUT", []byte(`{"n":99}`), "If-Match", `"1"`)
	if code != http.StatusPreconditionFailed || etag != `"2"` || !strings.Contains(string(b), `"conflict"`) {
		t.Fatalf("PUT at a stale version: %d, ETag %s, %s; want 412, \"2\", conflict", code, etag, b)
	}
	code, _, b = tag("PATCH", []byte(`{"n":99}`), "Content-Type", "application/merge-patch+json", "If-Match", `"0", "1"`)
	if code != http.StatusPreconditionFailed {
		t.Fatalf("PATCH at stale versions: %d %s; want 412", code, b)
	}
	if _, _, b := tag("GET", nil); !strings.Contains(string(b), `"n":2`) {
		t.Fatalf("refused writes changed the state: %s", b)
	}
	for _, bad := range []string{`W/"2"`, `2`, `"x"`, `"-1"`, `""`} {
		if code, _, b := tag("PUT", []byte(`{"n":3}`), "If-Match", bad); code != http.StatusBadRequest {
			t.Errorf("If-Match %s: %d %s; want 400", bad, code, b)
		}
	}
	if code, etag, b := tag("PATCH", []byte(`{"m":1}`), "Content-Type", "application/merge-patch+json", "If-Match", `"1", "2"`); code != 200 || etag != `"3"` {
		t.Fatalf("PATCH at one of the versions named: %d, ETag %s, %s; want 200, \"3\"", code, etag, b)
	}
	if code, etag, b := tag("PUT", []byte(`{"n":4}`), "If-Match", "*"); code != 200 || etag != `"4"` {
		t.Fatalf("PUT with If-Match *: %d, ETag %s, %s; want 200, \"4\"", code, etag, b)
	}
}

// TestSDKContinuationEndedBeforeProbe proves that a client that approves a
// tool and then probes for the continuation gets it even if the
// continuation ended before the probe came (the Node client does exactly
// this, and a quick reply ends in between): the probe is answered with the
// ended stream, its acknowledgement replays it whole, and a second probe
// finds nothing. A socket that did not follow the continuation (one that
// connects afterwards, as a page load does) is not offered it.
func TestSDKContinuationEndedBeforeProbe(t *testing.T) {
	var ran sync.Map
	e := newSDKEnv(t, "", nil, nil, guardAgent("guard", &ran, time.Hour))
	ws := wsDial(t, e, "/agents/guard/c")
	frame(t, ws, "cf_agent_identity")
	if m := e.send(t, "guard/c", "please use the tool"); m.Status != agent.AwaitingApproval {
		t.Fatalf("reply %s, want it parked for approval", m.Status)
	}
	code, b := e.do(t, "GET", "/v1/agents/guard/c/approvals", nil)
	var list struct{ Approvals []agent.PendingApproval }
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Approvals) != 1 {
		t.Fatalf("GET /approvals: %d %s, want one pending call", code, b)
	}
	writeFrame(t, ws, map[string]any{"type": "cf_agent_tool_approval", "toolCallId": list.Approvals[0].ToolCallID, "approved": true})
	// The continuation streams to the socket live, and ends.
	var id string
	for {
		f := frame(t, ws, "cf_agent_use_chat_response")
		if f["continuation"] == true && f["done"] == true {
			id, _ = f["id"].(string)
			break
		}
	}
	late := wsDial(t, e, "/agents/guard/c")
	frame(t, late, "cf_agent_identity")
	writeFrame(t, late, map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "late"})
	if f := frame(t, late, "cf_agent_stream_resume_none"); f["probeId"] != "late" {
		t.Errorf("a socket that did not follow the continuation: %v, want resume none", f)
	}

	writeFrame(t, ws, map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p1"})
	f := frame(t, ws, "cf_agent_stream_resuming")
	if f["id"] != id || f["probeId"] != "p1" {
		t.Fatalf("probe after the continuation ended: %v, want it offered (id %s)", f, id)
	}
	writeFrame(t, ws, map[string]any{"type": "cf_agent_stream_resume_ack", "id": id})
	var types []string
	for {
		f := frame(t, ws, "cf_agent_use_chat_response")
		if f["id"] != id || f["replay"] != true && f["done"] != true {
			t.Fatalf("replay frame %v, want a replay of %s (then its end)", f, id)
		}
		if body, _ := f["body"].(string); body != "" {
			var c struct{ Type string }
			json.Unmarshal([]byte(body), &c)
			types = append(types, c.Type)
		}
		if f["done"] == true {
			break
		}
	}
	if ct := strings.Join(types, ","); !strings.Contains(ct, "tool-output-available") || !strings.Contains(ct, "text-delta") {
		t.Errorf("replayed chunks %s, want the tool's output and the model's text", ct)
	}
	writeFrame(t, ws, map[string]any{"type": "cf_agent_stream_resume_request", "probeId": "p2"})
	if f := frame(t, ws, "cf_agent_stream_resume_none"); f["probeId"] != "p2" {
		t.Errorf("second probe: %v, want resume none (offered once)", f)
	}
}
