package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

// TestAgentsArchiveCommands runs a server whose agent keeps 4 messages
// hot, in the default local archive, and checks the client commands:
// export (the history, archived and hot, equal to the paged API), usage,
// archive (the session expires; the next request restores it), delete;
// and the agents' metrics.
func TestAgentsArchiveCommands(t *testing.T) {
	cfg := testConfig(t)
	cfg.Agents = []AgentConfig{{Name: "a", MaxHistory: 2, HotMessages: 4, ArchiveBatch: 2}}
	url := startServer(t, cfg)
	env := map[string]string{"CAIRN_URL": url}
	for i := 0; i < 10; i++ {
		resp, err := http.Post(url+"/v1/agents/a/s/messages", "application/json", strings.NewReader(fmt.Sprintf(`{"text":"hello %d"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	page := func() []agent.Message {
		var all []agent.Message
		before := ""
		for {
			resp, err := http.Get(url + "/v1/agents/a/s/messages?limit=3&before=" + before)
			if err != nil {
				t.Fatal(err)
			}
			var p agent.Page
			json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			for _, m := range p.Messages {
				all = append([]agent.Message{m}, all...)
			}
			if p.Next == "" {
				return all
			}
			before = p.Next
		}
	}
	waitFor(t, "archival", func() bool {
		r := run(t, env, "", "agents", "usage", "a", "s", "--json")
		var u agent.SessionUsage
		json.Unmarshal([]byte(r.stdout), &u)
		return u.ArchivedChunks > 0 && u.Messages == 20
	})
	keys, _ := filepath.Glob(filepath.Join(cfg.Data, "archive", "agent", "*", "c", "*"))
	if len(keys) == 0 {
		t.Fatalf("no chunk in %s/archive", cfg.Data)
	}

	out := filepath.Join(t.TempDir(), "s.jsonl")
	r := run(t, env, "", "agents", "export", "a", "s", "--out", out).want(t, ExitOK)
	if !strings.Contains(r.stderr, "20 messages") {
		t.Errorf("export: %s", r.stderr)
	}
	b, _ := os.ReadFile(out)
	var exported []agent.Message
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m agent.Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		exported = append(exported, m)
	}
	paged := page()
	eb, _ := json.Marshal(exported)
	pb, _ := json.Marshal(paged)
	if len(exported) != 20 || !bytes.Equal(eb, pb) {
		t.Fatalf("export (%d) differs from the paged history (%d)", len(exported), len(paged))
	}
	r = run(t, env, "", "agents", "export", "a", "s").want(t, ExitOK)
	if strings.Count(r.stdout, "\n") != 20 || !strings.Contains(r.stdout, `"text":"hello 0"`) {
		t.Errorf("export to stdout:\n%s", r.stdout)
	}

	r = run(t, env, "", "agents", "usage", "a", "s").want(t, ExitOK)
	if !strings.Contains(r.stdout, "ARCHIVED BYTES") {
		t.Errorf("usage: %s", r.stdout)
	}
	waitFor(t, "the agent's tally", func() bool {
		r = run(t, env, "", "agents", "usage", "a", "--json").want(t, ExitOK)
		var u agent.AgentUsage
		json.Unmarshal([]byte(r.stdout), &u)
		return u.ArchivedBytes > 0 && u.HotBytes > 0
	})

	r = run(t, env, "", "agents", "archive", "a", "s").want(t, ExitOK)
	if !strings.Contains(r.stdout, "archived 20 messages") {
		t.Errorf("archive: %s", r.stdout)
	}
	if got := page(); len(got) != 20 || got[0].Text() != "hello 0" {
		t.Errorf("after archive and restore: %d messages", len(got))
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`cairn_agent_archived_bytes{agent="a"}`, `cairn_agent_hot_bytes{agent="a"}`,
		`cairn_agent_sessions_total{agent="a",event="expired"} 1`, `cairn_agent_sessions_total{agent="a",event="restored"} 1`,
		`cairn_agent_archived_messages_total{agent="a"}`} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	run(t, env, "", "agents", "delete", "a", "s").want(t, ExitOK)
	if got := page(); len(got) != 0 {
		t.Errorf("%d messages after delete", len(got))
	}
	waitFor(t, "the blobs to go", func() bool {
		keys, _ := filepath.Glob(filepath.Join(cfg.Data, "archive", "agent", "*", "*"))
		return len(keys) == 0
	})
	run(t, env, "", "agents", "export", "nope", "s").want(t, ExitNotFound)
	run(t, env, "", "agents", "export", "a").want(t, ExitUsage)
}

// TestArchiveConfigS3 checks that the archive goes to S3 when configured
// (flags over environment over file), and that a bad bucket stops start.
func TestArchiveConfigS3(t *testing.T) {
	endpoint := archivetest.FakeS3(t)
	ctx := context.Background()
	if _, err := archive.NewS3(ctx, archive.S3Config{Endpoint: endpoint, Bucket: "arch", Region: "us-east-1", PathStyle: true, CreateBucket: true}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "cairn.json")
	os.WriteFile(file, []byte(`{"archive": {"s3": {"endpoint": "`+endpoint+`", "bucket": "wrong", "path_style": true, "region": "us-east-1"}},
		"agents": [{"name": "a", "hot_messages": 2, "max_history": 2, "archive_batch": 2, "session_ttl": "0s", "restore_expired": false}]}`), 0o600)
	m, _, _ := newTestMain("", map[string]string{"CAIRN_ARCHIVE_S3_PREFIX": "p1"})
	cfg, _, err := m.loadConfig([]string{"--config", file, "--archive-s3-bucket", "arch", "--data", dir})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Archive.S3.Bucket != "arch" || cfg.Archive.S3.Prefix != "p1" || !cfg.Archive.S3.PathStyle {
		t.Fatalf("archive config %+v", cfg.Archive)
	}
	cfg.Addr, cfg.Durability, cfg.LogLevel = "127.0.0.1:0", "process", "error"
	svc, err := m.agentService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = svc
	url := startServer(t, cfg)
	for i := 0; i < 4; i++ {
		resp, err := http.Post(url+"/v1/agents/a/s/messages", "application/json", strings.NewReader(`{"text":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	st, err := archive.NewS3(ctx, archive.S3Config{Endpoint: endpoint, Bucket: "arch", Prefix: "p1", Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a chunk in S3", func() bool {
		keys, _ := st.List(ctx, "agent/")
		return len(keys) > 0
	})
	if _, err := os.Stat(filepath.Join(dir, "archive")); err == nil {
		t.Error("a local archive was made although S3 is configured")
	}

	cfg.Archive.S3.Bucket = "missing"
	ctx2, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	m2, _, _ := newTestMain("", nil)
	cfg.Data = t.TempDir()
	if err := m2.serve(ctx2, cfg, nil); err == nil || !strings.Contains(err.Error(), "archive") {
		t.Errorf("serve with a missing bucket: %v", err)
	}

	// Agent settings reach the agent.
	cfg.Agents = []AgentConfig{{Name: "bad", MaxHistory: 10, HotMessages: 5}}
	if _, err := m.agentService(cfg); err == nil {
		t.Error("hot_messages below max_history accepted")
	}
	neg := Duration(-time.Second)
	cfg.Agents = []AgentConfig{{Name: "bad", SessionTTL: &neg}}
	if _, err := m.agentService(cfg); err == nil {
		t.Error("a negative session_ttl accepted")
	}
}
