package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

// TestArchiveMovesChunks checks the hot window: the archiver moves the
// oldest messages to the archive in chunks and leaves the window hot, and
// every message stays readable exactly once, by paging (any page size,
// across the hot rows and the chunks), by export, by ID cursor and by
// resuming an archived reply's stream. It runs on the local store and on
// S3 (gofakes3).
func TestArchiveMovesChunks(t *testing.T) {
	for _, store := range []string{"local", "s3"} {
		t.Run(store, func(t *testing.T) {
			var arc archive.Store
			if store == "s3" {
				arc = archivetest.S3Store(t, archivetest.FakeS3(t))
			}
			e := newColdEnv(t, "", arc, nil, Agent{Name: "a", MaxHistory: 10, HotMessages: 20, ArchiveBatch: 10})
			msgs := genMessages(0, 105, 300)
			e.insert(t, "a/s", msgs)
			run := e.maintain(t, "a/s")
			// 105 hot: chunks of 10 while 30 or more are hot.
			if run.Chunks != 8 || run.Messages != 80 {
				t.Fatalf("archiver wrote %d chunks of %d messages, want 8 of 80", run.Chunks, run.Messages)
			}
			if n := e.hotCount(t, "a/s"); n != 25 {
				t.Fatalf("%d messages hot, want 25", n)
			}
			keys, err := e.arc.List(context.Background(), "agent/")
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 8 {
				t.Fatalf("archive holds %v, want 8 chunks", keys)
			}
			id := e.stub(t, "a/s").ID().String()
			if want := "agent/" + id + "/c/1-10"; keys[0] != want {
				t.Errorf("first chunk key %s, want %s", keys[0], want)
			}
			for _, limit := range []int{0, 1, 7, 50, 200} {
				got := e.pageAll(t, "a/s", limit)
				sameMessages(t, fmt.Sprintf("paged by %d", limit), got, msgs)
			}
			exp, count := e.export(t, "a/s")
			sameMessages(t, "export", exp, msgs)
			if count != "105" {
				t.Errorf("X-Message-Count %s, want 105", count)
			}
			var u SessionUsage
			e.must(t, "GET", "/v1/agents/a/s/usage", nil, &u)
			if u.HotMessages != 25 || u.ArchivedMessages != 80 || u.ArchivedChunks != 8 || u.Messages != 105 ||
				u.ArchivedBytes <= 0 || u.ArchivedRawBytes <= u.ArchivedBytes || u.HotBytes <= 0 || u.TotalBytes != u.HotBytes+u.ArchivedBytes {
				t.Errorf("usage %+v", u)
			}

			// A message ID as cursor, hot and archived; the "s" cursor.
			var p Page
			e.must(t, "GET", "/v1/agents/a/s/messages?limit=3&before="+msgs[50].ID, nil, &p)
			sameMessages(t, "before an archived ID", p.Messages, []Message{msgs[49], msgs[48], msgs[47]})
			if want := fmt.Sprintf("s%d", 48); p.Next != want {
				t.Errorf("next %q, want %q", p.Next, want)
			}
			e.must(t, "GET", "/v1/agents/a/s/messages?limit=2&before="+p.Next, nil, &p)
			sameMessages(t, "after an s cursor", p.Messages, []Message{msgs[46], msgs[45]})
			e.must(t, "GET", "/v1/agents/a/s/messages?limit=2&before="+msgs[100].ID, nil, &p)
			sameMessages(t, "before a hot ID", p.Messages, []Message{msgs[99], msgs[98]})
			if p.Next != msgs[98].ID {
				t.Errorf("next %q, want the hot message's ID %s", p.Next, msgs[98].ID)
			}
			for _, bad := range []string{"s", "sx", "msg_zz", "x" + msgs[1].ID, "s-1"} {
				if code, b, _ := e.do(t, "GET", "/v1/agents/a/s/messages?before="+bad, nil); code != http.StatusBadRequest {
					t.Errorf("before=%s: %d %s, want 400", bad, code, b)
				}
			}

			// An archived reply's stream, from storage.
			code, b, _ := e.do(t, "GET", "/v1/agents/a/s/messages/"+msgs[3].ID+"/stream", nil)
			if code != http.StatusOK || !strings.Contains(string(b), "event: message-end") ||
				!strings.Contains(string(b), `"userMessageId":"`+msgs[2].ID+`"`) || !strings.Contains(string(b), `"toolCallId":"call_3"`) {
				t.Errorf("stream of an archived reply: %d %s", code, b)
			}

			// Restart: the index and the chunks are still read.
			e.close(t)
			e2 := newColdEnv(t, e.dir, arc, nil, Agent{Name: "a", MaxHistory: 10, HotMessages: 20, ArchiveBatch: 10})
			sameMessages(t, "paged after a restart", e2.pageAll(t, "a/s", 0), msgs)
		})
	}
}

// TestArchiveAfterReplies checks that replies schedule the archiver on the
// session's alarm, and that the model's context stays what it was.
func TestArchiveAfterReplies(t *testing.T) {
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a", MaxHistory: 4, HotMessages: 6, ArchiveBatch: 4})
	var sent []string
	for i := 0; i < 12; i++ {
		text := fmt.Sprintf("message %d", i)
		var m Message
		e.must(t, "POST", "/v1/agents/a/s/messages", []byte(`{"text":"`+text+`"}`), &m)
		sent = append(sent, "user:"+text, "assistant:"+m.Text())
	}
	waitForCold(t, "archival after replies", func() bool { return e.hotCount(t, "a/s") < 10 })
	var u SessionUsage
	e.must(t, "GET", "/v1/agents/a/s/usage", nil, &u)
	if u.ArchivedChunks == 0 || u.Messages != 24 {
		t.Fatalf("usage %+v: want chunks archived, 24 messages", u)
	}
	var got []string
	for _, m := range e.pageAll(t, "a/s", 5) {
		got = append(got, string(m.Role)+":"+m.Text())
	}
	if strings.Join(got, "|") != strings.Join(sent, "|") {
		t.Fatalf("history\n%v\nwant\n%v", got, sent)
	}
	// Reserved schedules are not the client's.
	var list struct{ Schedules []Schedule }
	e.must(t, "GET", "/v1/agents/a/s/schedules", nil, &list)
	if len(list.Schedules) != 0 {
		t.Errorf("schedules %+v, want none listed", list.Schedules)
	}
	for _, id := range []string{scheduleTTL, scheduleArchive, "cairn:x"} {
		if code, b, _ := e.do(t, "POST", "/v1/agents/a/s/schedules", []byte(`{"id":"`+id+`","delay_seconds":60}`)); code != http.StatusBadRequest {
			t.Errorf("add schedule %s: %d %s, want 400", id, code, b)
		}
		if code, _, _ := e.do(t, "DELETE", "/v1/agents/a/s/schedules/"+id, nil); code != http.StatusNotFound {
			t.Errorf("cancel schedule %s: %d, want 404", id, code)
		}
	}
	// The agent's tally has the session's bytes.
	var au AgentUsage
	waitForCold(t, "the tally", func() bool {
		e.must(t, "GET", "/v1/agents/a/usage", nil, &au)
		return au.ArchivedBytes > 0
	})
	e.must(t, "GET", "/v1/agents/a/s/usage", nil, &u)
	if au.ArchivedBytes != u.ArchivedBytes || au.HotBytes <= 0 || au.Counters.ChunksWritten != u.ArchivedChunks {
		t.Errorf("agent usage %+v, session usage %+v", au, u)
	}
}

// waitForCold polls cond until it holds, for 20 s.
func waitForCold(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestArchiveSkipsMessagesInFlight checks that the archiver moves only a
// prefix of whole, settled messages: never past one in flight, and never
// a question without its reply.
func TestArchiveSkipsMessagesInFlight(t *testing.T) {
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a", MaxHistory: 2, HotMessages: 2, ArchiveBatch: 5})
	msgs := genMessages(0, 20, 100)
	msgs[7].Status = AwaitingApproval // an assistant message
	e.insert(t, "a/s", msgs)
	run := e.maintain(t, "a/s")
	// Chunks of 5 before message 7: 0-4, then 5-6 would end with a user
	// message (6) whose reply (7) stays: only 5.
	if run.Messages != 6 {
		t.Fatalf("archived %d messages, want 6 (up to the one awaiting approval, questions with their replies)", run.Messages)
	}
	sameMessages(t, "paged", e.pageAll(t, "a/s", 3), msgs)
	// Decided: the rest goes.
	err := e.stub(t, "a/s").Run(context.Background(), func(ctx context.Context, st *cairn.State) error {
		return store{st: st}.setStatus(msgs[7].ID, Complete, "")
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs[7].Status = Complete
	e.maintain(t, "a/s")
	if n := e.hotCount(t, "a/s"); n >= 7 {
		t.Fatalf("%d hot after the message settled, want fewer than 7", n)
	}
	sameMessages(t, "paged after", e.pageAll(t, "a/s", 0), msgs)
}

// TestClearChatDropsArchive checks that clearing the chat deletes the
// archived messages too (the blobs by the archiver), and that the
// messages after it start a history of their own with new chunk keys.
func TestClearChatDropsArchive(t *testing.T) {
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a", MaxHistory: 2, HotMessages: 2, ArchiveBatch: 4})
	e.insert(t, "a/s", genMessages(0, 20, 100))
	e.maintain(t, "a/s")
	if err := e.onSession("a/s", func(s *session) error { return s.clearMessages() }); err != nil {
		t.Fatal(err)
	}
	if got := e.pageAll(t, "a/s", 0); len(got) != 0 {
		t.Fatalf("%d messages after clear", len(got))
	}
	waitForCold(t, "the archiver to delete the blobs", func() bool {
		keys, _ := e.arc.List(context.Background(), "agent/")
		return len(keys) == 0
	})
	more := genMessages(100, 12, 100)
	e.insert(t, "a/s", more)
	e.maintain(t, "a/s")
	sameMessages(t, "after clear", e.pageAll(t, "a/s", 0), more)
	keys, _ := e.arc.List(context.Background(), "agent/")
	if len(keys) == 0 || !strings.HasSuffix(keys[0], "/c/21-24") {
		t.Errorf("chunks after clear: %v, want seqs after the cleared ones (21-24 first)", keys)
	}
}

// TestCursorErrors checks the answer to cursors that are not.
func TestCursorErrors(t *testing.T) {
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a"})
	e.insert(t, "a/s", genMessages(0, 3, 50))
	var p Page
	e.must(t, "GET", "/v1/agents/a/s/messages?before=s2", nil, &p)
	if len(p.Messages) != 1 || p.Messages[0].ID != genMessages(0, 1, 50)[0].ID {
		t.Errorf("before=s2: %+v", p)
	}
	code, b, _ := e.do(t, "GET", "/v1/agents/a/s/messages?before=msg_00000000000000000099", nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "no message") {
		t.Errorf("unknown ID: %d %s", code, b)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
}
