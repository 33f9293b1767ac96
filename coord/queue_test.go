package coord_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
)

func body(s string) json.RawMessage { b, _ := json.Marshal(s); return b }

func TestQueueBasics(t *testing.T) {
	rt := newRuntime(t)
	q := stub(t, rt, "queue", "jobs")
	ctx := context.Background()
	for i, s := range []string{"a", "b", "c"} {
		r := call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body(s)})
		if r.ID != int64(i+1) || r.Duplicate {
			t.Fatalf("enqueue %s: got %+v, want id %d", s, r, i+1)
		}
	}
	c := call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{Max: 2, VisibilityMs: 60000})
	if len(c.Messages) != 2 || string(c.Messages[0].Body) != `"a"` || string(c.Messages[1].Body) != `"b"` || c.Messages[0].Attempt != 1 {
		t.Fatalf("claim: got %+v, want a and b on attempt 1", c.Messages)
	}
	st := call[coord.QueueStats](t, q, "Stats", nil)
	if st.Ready != 1 || st.InFlight != 2 || st.Depth != 3 {
		t.Fatalf("stats: got %+v, want 1 ready, 2 in flight", st)
	}
	// A claimed message is with one claimant at a time.
	c2 := call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{Max: 10, VisibilityMs: 60000})
	if len(c2.Messages) != 1 || c2.Messages[0].ID != 3 {
		t.Fatalf("second claim: got %+v, want only message 3", c2.Messages)
	}
	m := c.Messages[0]
	err := q.Call(ctx, "Ack", coord.AckArgs{ID: m.ID, Receipt: c.Messages[1].Receipt}, nil)
	wantCode(t, "ack with another message's receipt", err, cairn.Conflict)
	call[coord.AckResult](t, q, "Ack", coord.AckArgs{ID: m.ID, Receipt: m.Receipt})
	call[coord.AckResult](t, q, "Ack", coord.AckArgs{ID: m.ID, Receipt: m.Receipt}) // a retry
	if st := call[coord.QueueStats](t, q, "Stats", nil); st.Depth != 2 {
		t.Fatalf("after ack: %+v", st)
	}
	// Empty queue: no messages, not an error.
	if c := call[coord.ClaimResult](t, q, "Claim", nil); len(c.Messages) != 0 {
		t.Fatalf("claim of an empty queue: %+v", c)
	}
}

func TestQueueVisibilityTimeout(t *testing.T) {
	rt := newRuntime(t)
	q := stub(t, rt, "queue", "jobs")
	call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("x")})
	c1 := call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{VisibilityMs: 100})
	var c2 coord.ClaimResult
	waitFor(t, "redelivery", func() bool {
		c2 = call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{VisibilityMs: 60000})
		return len(c2.Messages) == 1
	})
	if c2.Messages[0].Attempt != 2 || c2.Messages[0].Receipt == c1.Messages[0].Receipt {
		t.Fatalf("redelivery: got %+v, want attempt 2 with a new receipt", c2.Messages[0])
	}
	err := q.Call(context.Background(), "Ack", coord.AckArgs{ID: 1, Receipt: c1.Messages[0].Receipt}, nil)
	wantCode(t, "ack with the receipt of the lapsed claim", err, cairn.Conflict)
	call[coord.AckResult](t, q, "Ack", coord.AckArgs{ID: 1, Receipt: c2.Messages[0].Receipt})
}

func TestQueueNackBackoffAndDeadLetter(t *testing.T) {
	rt := newRuntime(t)
	q := stub(t, rt, "queue", "jobs")
	call[coord.QueueConfig](t, q, "Configure", coord.QueueConfig{MaxAttempts: 3, BackoffMs: 20, MaxBackoffMs: 40})
	call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("poison")})
	for attempt := 1; attempt <= 3; attempt++ {
		var c coord.ClaimResult
		start := time.Now()
		waitFor(t, "the message", func() bool {
			c = call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{VisibilityMs: 60000})
			return len(c.Messages) == 1
		})
		if attempt > 1 {
			if d := time.Since(start); d < 15*time.Millisecond {
				t.Errorf("attempt %d came back after %v: no backoff", attempt, d)
			}
		}
		if c.Messages[0].Attempt != attempt {
			t.Fatalf("got attempt %d, want %d", c.Messages[0].Attempt, attempt)
		}
		call[coord.AckResult](t, q, "Nack", coord.NackArgs{ID: 1, Receipt: c.Messages[0].Receipt, Reason: "boom"})
	}
	st := call[coord.QueueStats](t, q, "Stats", nil)
	if st.Depth != 0 || st.Dead != 1 {
		t.Fatalf("after max attempts: %+v, want 1 dead letter and nothing else", st)
	}
	d := call[coord.DeadResult](t, q, "DeadLetters", coord.DeadArgs{})
	if len(d.Messages) != 1 || d.Messages[0].Reason != "boom" || d.Messages[0].Attempts != 3 || string(d.Messages[0].Body) != `"poison"` {
		t.Fatalf("dead letters: %+v", d.Messages)
	}

	// Visibility running out counts as an attempt too.
	call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("slow")})
	for i := 0; i < 3; i++ {
		waitFor(t, "the message", func() bool {
			return len(call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{VisibilityMs: 1}).Messages) == 1
		})
	}
	waitFor(t, "the dead letter", func() bool {
		call[coord.ClaimResult](t, q, "Claim", coord.ClaimArgs{VisibilityMs: 1})
		return call[coord.QueueStats](t, q, "Stats", nil).Dead == 2
	})
}

func TestQueueDelayAndDedup(t *testing.T) {
	rt := newRuntime(t)
	q := stub(t, rt, "queue", "jobs")
	start := time.Now() // the delay runs from the enqueue, which is after this
	r1 := call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("x"), DedupKey: "k", DelayMs: 150})
	r2 := call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("x"), DedupKey: "k"})
	if !r2.Duplicate || r2.ID != r1.ID {
		t.Fatalf("dedup: got %+v, want a duplicate of %d", r2, r1.ID)
	}
	if st := call[coord.QueueStats](t, q, "Stats", nil); st.Delayed != 1 || st.Ready != 0 {
		t.Fatalf("stats with a delayed message: %+v", st)
	}
	waitFor(t, "the delayed message", func() bool {
		return len(call[coord.ClaimResult](t, q, "Claim", nil).Messages) == 1
	})
	// Times are in whole milliseconds: allow one.
	if d := time.Since(start); d < 149*time.Millisecond {
		t.Fatalf("delayed message (150 ms) claimed %v after its enqueue", d)
	}
}

func TestQueueClaimRetry(t *testing.T) {
	rt := newRuntime(t)
	q := stub(t, rt, "queue", "jobs")
	for i := 0; i < 3; i++ {
		call[coord.EnqueueResult](t, q, "Enqueue", coord.EnqueueArgs{Body: body("m")})
	}
	a := coord.ClaimArgs{Max: 2, RequestID: "c1"}
	c1 := call[coord.ClaimResult](t, q, "Claim", a)
	c2 := call[coord.ClaimResult](t, q, "Claim", a)
	if len(c1.Messages) != 2 || len(c2.Messages) != 2 || c1.Messages[0].Receipt != c2.Messages[0].Receipt || c1.Messages[1].Receipt != c2.Messages[1].Receipt {
		t.Fatalf("retried claim: got %+v and %+v, want the same", c1, c2)
	}
	if st := call[coord.QueueStats](t, q, "Stats", nil); st.Ready != 1 || st.InFlight != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestQueueInput(t *testing.T) {
	srv := newServer(t, cairn.Process)
	base := srv.url + "/v1/objects/queue/jobs"
	for _, c := range []struct {
		name, path string
		body       any
		code       string
	}{
		{"malformed", "/enqueue", `{"body":`, "invalid"},
		{"no body", "/enqueue", `{}`, "invalid"},
		{"negative delay", "/enqueue", `{"body":1,"delay_ms":-1}`, "invalid"},
		{"too large", "/enqueue", map[string]any{"body": string(make([]byte, coord.MaxBodyBytes))}, "too_large"},
		{"claim max", "/claim", `{"max":1000}`, "invalid"},
		{"claim visibility", "/claim", `{"visibility_ms":-1}`, "invalid"},
		{"ack no receipt", "/ack", `{"id":1}`, "invalid"},
		{"ack unknown", "/ack", `{"id":1,"receipt":"x"}`, "conflict"},
		{"config", "/config", `{"max_attempts":-1}`, "invalid"},
	} {
		r, err := post(context.Background(), base+c.path, c.body)
		if err != nil {
			t.Fatal(err)
		}
		if r.code != c.code {
			t.Errorf("%s: got %d %q (%s), want %q", c.name, r.status, r.code, r.body, c.code)
		}
	}
	mustPost[coord.EnqueueResult](t, base+"/enqueue", `{"body":{"task":1}}`)
	c := mustPost[coord.ClaimResult](t, base+"/claim", `{}`)
	if len(c.Messages) != 1 || string(c.Messages[0].Body) != `{"task":1}` {
		t.Fatalf("claim over HTTP: %+v", c)
	}
	mustPost[coord.AckResult](t, base+"/ack", coord.AckArgs{ID: c.Messages[0].ID, Receipt: c.Messages[0].Receipt})
	if st := mustGet[coord.QueueStats](t, base+"/"); st.Depth != 0 || st.Config.MaxAttempts != 5 {
		t.Fatalf("stats over HTTP: %+v", st)
	}
}
