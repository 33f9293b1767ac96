package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/agent"
)

// TestHistorySeesEveryChange checks that the context sent to the model
// follows the stored messages, whoever changes them (the session keeps
// decoded messages between generations): an edit by SQL of a message's
// parts, of its status, and of a chunked message.
func TestHistorySeesEveryChange(t *testing.T) {
	p := &script{reply: func(ctx context.Context, n int, req *agent.Request) []agent.Event {
		return []agent.Event{textEv("ok"), doneEv("stop")}
	}}
	e := newEnv(t, "", agent.Agent{Name: "t", Provider: p, Model: "m", MaxTextBytes: 2 << 20})
	big := strings.Repeat("b", 600<<10) // over one chunk
	e.send(t, "t/h", "one")
	e.send(t, "t/h", big)
	e.send(t, "t/h", "three")
	sent := func() string {
		reqs := p.requests()
		var s []string
		for _, m := range reqs[len(reqs)-1].Messages {
			t := m.Text()
			if len(t) > 20 {
				t = t[:3] + "…" + t[len(t)-3:]
			}
			s = append(s, string(m.Role)+":"+t)
		}
		return strings.Join(s, "|")
	}
	if got, want := sent(), "user:one|assistant:ok|user:bbb…bbb|assistant:ok|user:three"; got != want {
		t.Fatalf("context = %s, want %s", got, want)
	}
	h := e.history(t, "t/h")
	ns, _ := e.rt.Namespace(agent.Namespace)
	stub, _ := ns.GetByName(agent.ObjectName("t", "h"))
	edit := func(query string, args ...any) {
		t.Helper()
		err := stub.Run(t.Context(), func(ctx context.Context, st *cairn.State) error {
			_, err := st.Exec(query, args...)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	edit(`UPDATE messages SET parts = '[{"type":"text","text":"uno"}]' WHERE id = ?`, h[0].ID)
	edit(`UPDATE messages SET status = 'error' WHERE id = ?`, h[1].ID)
	// The last chunk of the big message, edited alone.
	edit(`UPDATE message_chunks SET data = CAST(replace(CAST(data AS TEXT), 'bbb"}]', 'bbz"}]') AS BLOB)
		WHERE message_id = ? AND n = (SELECT MAX(n) FROM message_chunks WHERE message_id = ?)`, h[2].ID, h[2].ID)
	e.send(t, "t/h", "four")
	if got, want := sent(), "user:uno|user:bbb…bbz|assistant:ok|user:three|assistant:ok|user:four"; got != want {
		t.Errorf("context after edits = %s, want %s", got, want)
	}
}
