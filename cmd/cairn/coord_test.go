package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/coord"
)

// The coordination commands against an in-process server, as a script
// would run them: exit codes, human output and --json.
func TestCoordCommands(t *testing.T) {
	url := startServer(t, testConfig(t))
	env := map[string]string{"CAIRN_URL": url}
	cairn := func(code int, args ...string) result {
		t.Helper()
		return run(t, env, "", args...).want(t, code, args...)
	}
	decode := func(r result, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("decode %q: %v", r.stdout, err)
		}
	}
	contains := func(what, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Errorf("%s: got %q, want it to contain %q", what, got, want)
		}
	}

	t.Run("lock", func(t *testing.T) {
		r := cairn(ExitOK, "lock", "acquire", "reports", "--owner", "a", "--ttl", "30s")
		contains("acquire", r.stdout, "acquired reports: token 1, owner a")
		r = cairn(ExitConflict, "lock", "acquire", "reports", "--owner", "b", "--ttl", "30s")
		contains("acquire held lock", r.stderr, `held by "a"`)
		start := time.Now()
		cairn(ExitUnavailbl, "lock", "acquire", "reports", "--owner", "b", "--ttl", "30s", "--wait", "100ms")
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("acquire --wait 100ms gave up after %v", d)
		}
		contains("inspect", cairn(ExitOK, "lock", "inspect", "reports").stdout, "holder:     a (token 1,")
		cairn(ExitOK, "lock", "renew", "reports", "--owner", "a", "--fencing-token", "1", "--ttl", "1m")
		cairn(ExitConflict, "lock", "renew", "reports", "--owner", "a", "--fencing-token", "2", "--ttl", "1m")
		cairn(ExitConflict, "lock", "release", "reports", "--owner", "b", "--fencing-token", "1")
		contains("release", cairn(ExitOK, "lock", "release", "reports", "--owner", "a", "--fencing-token", "1").stdout, "released reports (token 1)")
		cairn(ExitConflict, "lock", "release", "reports", "--owner", "a", "--fencing-token", "1")

		var g coord.AcquireResult
		decode(cairn(ExitOK, "lock", "acquire", "reports", "--owner", "b", "--ttl", "30s", "--json"), &g)
		if g.Token != 2 || g.Owner != "b" || g.ExpiresAt == 0 {
			t.Errorf("acquire --json: got %+v, want token 2 for b", g)
		}

		// A waiter in line is served when the holder releases.
		done := make(chan result, 1)
		go func() {
			done <- run(t, env, "", "lock", "acquire", "reports", "--owner", "c", "--ttl", "30s", "--wait", "20s", "--json")
		}()
		var info coord.LockInfo
		waitFor(t, "c waiting in line", func() bool {
			info = coord.LockInfo{}
			decode(cairn(ExitOK, "lock", "inspect", "reports", "--json"), &info)
			return len(info.Waiters) == 1
		})
		if info.Waiters[0].Owner != "c" || info.Holder == nil || info.Holder.Owner != "b" || info.LastToken != 2 {
			t.Errorf("inspect: got %+v, want b holding token 2 and c waiting", info)
		}
		contains("inspect waiters", cairn(ExitOK, "lock", "inspect", "reports").stdout, "waiters:    1")
		cairn(ExitOK, "lock", "release", "reports", "--owner", "b", "--fencing-token", "2")
		r = <-done
		r.want(t, ExitOK, "lock acquire (waiting)")
		decode(r, &g)
		if g.Token != 3 || g.Owner != "c" {
			t.Errorf("waiting acquire: got %+v, want token 3 for c", g)
		}

		// A retry with the same request id gets the same grant; cancel
		// with it gives the lock back.
		cairn(ExitOK, "lock", "acquire", "other", "--owner", "d", "--ttl", "30s", "--request-id", "r-1")
		contains("retried acquire", cairn(ExitOK, "lock", "acquire", "other", "--owner", "d", "--ttl", "30s", "--request-id", "r-1").stdout, "token 1,")
		contains("cancel", cairn(ExitOK, "lock", "cancel", "other", "--owner", "d", "--request-id", "r-1").stdout, "released the grant")
		contains("inspect after cancel", cairn(ExitOK, "lock", "inspect", "other").stdout, "holder:     none")
	})

	t.Run("lock table", func(t *testing.T) {
		contains("acquire", cairn(ExitOK, "locks", "acquire", "build", "--owner", "a", "--ttl", "30s").stdout, "acquired build: token 1, owner a")
		cairn(ExitOK, "locks", "acquire", "deploy prod", "--owner", "b", "--ttl", "30s")
		cairn(ExitOK, "locks", "release", "deploy prod", "--owner", "b", "--fencing-token", "1")
		cairn(ExitOK, "locks", "acquire", "release", "--owner", "b", "--ttl", "30s")
		// c waits in line for build.
		done := make(chan result, 1)
		go func() {
			done <- run(t, env, "", "locks", "acquire", "build", "--owner", "c", "--ttl", "30s", "--wait", "20s")
		}()
		waitFor(t, "c waiting in line for build", func() bool {
			var info coord.LockInfo
			decode(cairn(ExitOK, "locks", "inspect", "build", "--json"), &info)
			return len(info.Waiters) == 1
		})

		r := cairn(ExitOK, "locks", "list")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "NAME HOLDER TOKEN EXPIRES WAITERS" {
			t.Fatalf("locks list: got\n%s\nwant a header and 3 locks", r.stdout)
		}
		if f := strings.Fields(lines[1]); len(f) != 5 || f[0] != "build" || f[1] != "a" || f[2] != "1" || !strings.HasSuffix(f[3], "Z") || f[4] != "1" {
			t.Errorf("locks list: got %q, want build held by a with token 1, an expiry and 1 waiter", lines[1])
		}
		if got, want := strings.Join(strings.Fields(lines[2]), " "), "deploy prod (free) (last 1) - 0"; got != want {
			t.Errorf("locks list: got %q, want %q", got, want)
		}
		if f := strings.Fields(lines[3]); len(f) != 5 || f[0] != "release" || f[1] != "b" || f[2] != "1" || f[4] != "0" {
			t.Errorf("locks list: got %q, want release held by b with token 1", lines[3])
		}
		if r.stderr != "" {
			t.Errorf("locks list: stderr %q, want no next page", r.stderr)
		}

		var l coord.TableListResult
		decode(cairn(ExitOK, "locks", "list", "--json"), &l)
		if len(l.Locks) != 3 || l.Next != "" {
			t.Fatalf("locks list --json: got %+v, want 3 locks and no next", l)
		}
		if b := l.Locks[0]; b.Name != "build" || b.Holder == nil || b.Holder.Owner != "a" || b.Holder.Token != 1 || b.Waiters != 1 {
			t.Errorf("locks list --json: got %+v, want build held by a, 1 waiter", b)
		}
		if d := l.Locks[1]; d.Name != "deploy prod" || d.Holder != nil || d.LastToken != 1 || d.Waiters != 0 {
			t.Errorf("locks list --json: got %+v, want deploy prod free, last token 1", d)
		}

		// Page by page, each page's cursor leading to the next.
		for _, p := range []struct {
			after, lock, more string
		}{
			{"", "build ", "more: --after build\n"},
			{"build", "deploy prod ", "more: --after 'deploy prod'\n"},
			{"deploy prod", "release ", ""},
		} {
			args := []string{"locks", "list", "--limit", "1"}
			if p.after != "" {
				args = append(args, "--after", p.after)
			}
			r := cairn(ExitOK, args...)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[1], p.lock) || r.stderr != p.more {
				t.Errorf("%s: got\n%s\nstderr %q; want the lock %q and %q", strings.Join(args, " "), r.stdout, r.stderr, p.lock, p.more)
			}
		}
		l = coord.TableListResult{}
		decode(cairn(ExitOK, "locks", "list", "--limit", "1", "--after", "build", "--json"), &l)
		if len(l.Locks) != 1 || l.Locks[0].Name != "deploy prod" || l.Next != "deploy prod" {
			t.Errorf("locks list --limit 1 --after build --json: got %+v, want deploy prod and next deploy prod", l)
		}
		if r := cairn(ExitOK, "locks", "list", "--after", "release"); strings.Join(strings.Fields(r.stdout), " ") != "NAME HOLDER TOKEN EXPIRES WAITERS" || r.stderr != "" {
			t.Errorf("locks list --after release: got %q, %q; want the header alone", r.stdout, r.stderr)
		}

		cairn(ExitUsage, "locks", "list", "build")
		cairn(ExitUsage, "lock", "list") // lock objects are listed by `cairn objects list lock`
		cairn(ExitRejected, "locks", "list", "--limit", "0")
		cairn(ExitRejected, "locks", "list", "--limit", "1001")

		cairn(ExitOK, "locks", "release", "build", "--owner", "a", "--fencing-token", "1")
		(<-done).want(t, ExitOK, "locks acquire build (waiting)")
	})

	t.Run("leader", func(t *testing.T) {
		contains("campaign", cairn(ExitOK, "leader", "campaign", "indexers", "--candidate", "n1", "--ttl", "30s").stdout, "elected n1 in indexers: term 1")
		r := cairn(ExitConflict, "leader", "campaign", "indexers", "--candidate", "n2", "--ttl", "30s")
		contains("losing campaign", r.stdout, "not elected in indexers: the leader is n1, term 1")
		var cr coord.CampaignResult
		decode(cairn(ExitConflict, "leader", "campaign", "indexers", "--candidate", "n2", "--ttl", "30s", "--json"), &cr)
		if cr.Elected || cr.Leader != "n1" || cr.Term != 1 {
			t.Errorf("losing campaign --json: got %+v, want n1 in term 1", cr)
		}
		contains("get", cairn(ExitOK, "leader", "get", "indexers").stdout, "indexers: the leader is n1, term 1")
		cairn(ExitOK, "leader", "renew", "indexers", "--candidate", "n1", "--term", "1", "--ttl", "30s")
		cairn(ExitConflict, "leader", "renew", "indexers", "--candidate", "n2", "--term", "1", "--ttl", "30s")
		cairn(ExitOK, "leader", "resign", "indexers", "--candidate", "n1", "--term", "1")
		cairn(ExitConflict, "leader", "resign", "indexers", "--candidate", "n1", "--term", "1")
		contains("get after resign", cairn(ExitOK, "leader", "get", "indexers").stdout, "no leader (last term 1)")
		decode(cairn(ExitOK, "leader", "campaign", "indexers", "--candidate", "n2", "--ttl", "30s", "--json"), &cr)
		if !cr.Elected || cr.Leader != "n2" || cr.Term != 2 {
			t.Errorf("campaign after resign: got %+v, want n2 elected in term 2", cr)
		}
	})

	t.Run("presence", func(t *testing.T) {
		contains("first heartbeat", cairn(ExitOK, "presence", "heartbeat", "lobby", "--member", "ada", "--ttl", "30s", "--metadata", `{"task": "review"}`).stdout, "ada joined lobby until ")
		contains("second heartbeat", cairn(ExitOK, "presence", "heartbeat", "lobby", "--member", "ada", "--ttl", "30s").stdout, "ada present in lobby until ")
		cairn(ExitOK, "presence", "heartbeat", "lobby", "--member", "bob", "--ttl", "30s")
		r := cairn(ExitOK, "presence", "list", "lobby")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[1], "ada ") || !strings.Contains(lines[1], `{"task":"review"}`) || !strings.HasPrefix(lines[2], "bob ") {
			t.Errorf("presence list: got\n%s\nwant a header, ada with its metadata, bob", r.stdout)
		}
		contains("leave", cairn(ExitOK, "presence", "leave", "lobby", "--member", "ada").stdout, "ada left lobby")
		contains("leave again", cairn(ExitOK, "presence", "leave", "lobby", "--member", "ada").stdout, "ada was not in lobby")
		var l coord.PresenceList
		decode(cairn(ExitOK, "presence", "list", "lobby", "--json"), &l)
		if len(l.Members) != 1 || l.Members[0].Member != "bob" {
			t.Errorf("presence list --json: got %+v, want bob alone", l)
		}
		cairn(ExitUsage, "presence", "heartbeat", "lobby", "--member", "ada", "--ttl", "30s", "--metadata", "not json")
	})

	t.Run("queue", func(t *testing.T) {
		contains("enqueue", cairn(ExitOK, "queue", "enqueue", "emails", `{"to":"ada"}`, "--dedup-key", "welcome-ada").stdout, "enqueued message 1 in emails")
		contains("duplicate", cairn(ExitOK, "queue", "enqueue", "emails", `{"to":"ada"}`, "--dedup-key", "welcome-ada").stdout, "duplicate of message 1")
		run(t, env, `"from stdin"`+"\n", "queue", "enqueue", "emails").want(t, ExitOK, "queue enqueue (stdin)")
		cairn(ExitUsage, "queue", "enqueue", "emails", "not json")

		var c coord.ClaimResult
		decode(cairn(ExitOK, "queue", "claim", "emails", "--max", "10", "--visibility", "1ms", "--json"), &c)
		if len(c.Messages) != 2 || string(c.Messages[0].Body) != `{"to":"ada"}` || string(c.Messages[1].Body) != `"from stdin"` {
			t.Fatalf("claim --json: got %+v, want the two messages in order", c)
		}
		stale := c.Messages[0]
		// The visibility ran out: the next claim gets the message again,
		// and the first receipt is stale.
		var again coord.ClaimResult
		waitFor(t, "message 1 claimable again", func() bool {
			again = coord.ClaimResult{}
			decode(cairn(ExitOK, "queue", "claim", "emails", "--visibility", "1m", "--json"), &again)
			return len(again.Messages) == 1
		})
		if m := again.Messages[0]; m.ID != 1 || m.Attempt != 2 {
			t.Errorf("claim again: got %+v, want message 1, attempt 2", m)
		}
		cairn(ExitConflict, "queue", "ack", "emails", "--id", "1", "--receipt", stale.Receipt)
		contains("ack", cairn(ExitOK, "queue", "ack", "emails", "--id", "1", "--receipt", again.Messages[0].Receipt).stdout, "acked message 1")

		// Dead letters after max attempts: message 2 was delivered once
		// already (its 1 ms visibility ran out), so this is its last.
		contains("config", cairn(ExitOK, "queue", "config", "emails", "--max-attempts", "2").stdout, "max attempts: 2")
		r := cairn(ExitOK, "queue", "claim", "emails", "--visibility", "1m")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || len(strings.Fields(lines[1])) < 3 || strings.Fields(lines[1])[0] != "2" || strings.Fields(lines[1])[1] != "2" {
			t.Fatalf("claim: got\n%s\nwant message 2, attempt 2", r.stdout)
		}
		cairn(ExitOK, "queue", "nack", "emails", "--id", "2", "--receipt", strings.Fields(lines[1])[2], "--delay", "0s", "--reason", "smtp down")
		if r := cairn(ExitOK, "queue", "claim", "emails"); r.stdout != "" || !strings.Contains(r.stderr, "no messages") {
			t.Errorf("claim after the last attempt: got %q, want no messages", r.stdout)
		}
		r = cairn(ExitOK, "queue", "dead", "emails")
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "smtp down") || !strings.HasPrefix(lines[1], "2 ") {
			t.Errorf("dead: got\n%s\nwant message 2 with its reason", r.stdout)
		}
		var s coord.QueueStats
		decode(cairn(ExitOK, "queue", "stats", "emails", "--json"), &s)
		if s.Dead != 1 || s.Depth != 0 || s.Config.MaxAttempts != 2 {
			t.Errorf("stats --json: got %+v, want 1 dead, depth 0", s)
		}
		contains("stats", cairn(ExitOK, "queue", "stats", "emails").stdout, "dead:         1")
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"lock"},
			{"lock", "steal", "r"},
			{"lock", "acquire", "r", "--ttl", "30s"},
			{"lock", "acquire", "--owner", "a", "--ttl", "30s"},
			{"lock", "acquire", "r", "extra", "--owner", "a", "--ttl", "30s"},
			{"lock", "acquire", "r", "--owner", "a", "--ttl", "0s"},
			{"lock", "acquire", "r", "--owner", "a", "--ttl", "-1s"},
			{"lock", "acquire", "r", "--owner", "a", "--ttl", "30s", "--fencing-token", "1"},
			{"leader", "campaign", "g", "--owner", "a", "--ttl", "30s"},
			{"queue", "ack", "q", "--id", "1"},
		} {
			cairn(ExitUsage, args...)
		}
		cairn(ExitOK, "lock", "--help")
		// The server's own checks: exit 5.
		cairn(ExitRejected, "lock", "acquire", "r", "--owner", strings.Repeat("o", 300), "--ttl", "30s")
		cairn(ExitRejected, "lock", "acquire", "r", "--owner", "a", "--ttl", "48h")
	})
}

// An acquire whose answer never came says how to find out.
func TestCoordUnknownOutcome(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	env := map[string]string{"CAIRN_URL": dead}
	r := run(t, env, "", "lock", "acquire", "r", "--owner", "a", "--ttl", "30s", "--request-id", "r-9").want(t, ExitFailure)
	for _, want := range []string{"refused", "outcome is unknown", "--request-id r-9", "cairn lock cancel r --owner a --request-id r-9"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not contain %q", r.stderr, want)
		}
	}
	// Without a request id, the command makes one up and prints it.
	r = run(t, env, "", "leader", "campaign", "g", "--candidate", "n 1", "--ttl", "30s").want(t, ExitFailure)
	if !strings.Contains(r.stderr, "cairn leader cancel g --candidate 'n 1' --request-id cli-") {
		t.Errorf("stderr %q does not name the generated request id", r.stderr)
	}
}
