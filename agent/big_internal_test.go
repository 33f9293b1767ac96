package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestHundredThousandMessages checks a session of 100,000 messages (20,000
// under the race detector, which slows SQLite 20-fold; stored
// straight into the session's store, 1,000 a turn, the archiver run after
// each thousand as replies would trigger it): the hot window stays
// bounded, and so does the object's database; the whole history pages
// back, every message once and in order, and exports the same; the usage
// API reports the bytes.
func TestHundredThousandMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 messages")
	}
	start := time.Now()
	e := newColdEnv(t, "", nil, nil, Agent{Name: "a"}) // HotMessages 200, ArchiveBatch 200
	total, per := 100000, 1000
	if raceEnabled {
		total = 20000
	}
	var maxHot int64
	var maxFile int64
	var dbPath string
	for i := 0; i < total; i += per {
		e.insert(t, "a/big", genMessages(i, per, 120))
		e.maintain(t, "a/big")
		if n := e.hotCount(t, "a/big"); n > maxHot {
			maxHot = n
		}
		if dbPath == "" {
			m, _ := filepath.Glob(filepath.Join(e.dir, "data", "objects", "*", e.stub(t, "a/big").ID().String()+".db"))
			if len(m) != 1 {
				t.Fatalf("database file: %v", m)
			}
			dbPath = m[0]
		}
		var size int64
		for _, p := range []string{dbPath, dbPath + "-wal"} {
			if fi, err := os.Stat(p); err == nil {
				size += fi.Size()
			}
		}
		maxFile = max(maxFile, size)
	}
	inserted := time.Since(start)
	// 200 hot, and up to a batch (and the 1,000 of a turn) before the archiver runs.
	if maxHot >= 400 {
		t.Errorf("up to %d messages hot after the archiver, want under 400", maxHot)
	}
	// 1,200 messages of ~250 bytes at most, the index of 500 chunks, SQLite
	// pages: a few MiB, whatever the history's length.
	if maxFile > 8<<20 {
		t.Errorf("database and WAL up to %d bytes, want under 8 MiB", maxFile)
	}
	var u SessionUsage
	e.must(t, "GET", "/v1/agents/a/big/usage", nil, &u)
	if u.Messages != int64(total) || u.HotMessages >= 400 {
		t.Errorf("usage %+v", u)
	}
	want := make([]string, total)
	for i := range want {
		want[i] = genMessages(i, 1, 0)[0].ID
	}
	pageStart := time.Now()
	got := e.pageAll(t, "a/big", maxPage)
	paged := time.Since(pageStart)
	exactlyOnce(t, "paged", got, want)
	exp, count := e.export(t, "a/big")
	exactlyOnce(t, "exported", exp, want)
	sameMessages(t, "export vs pages", exp, got)
	if count != strconv.Itoa(total) {
		t.Errorf("X-Message-Count %s", count)
	}
	t.Logf("%d messages: inserted and archived in %v, paged in %v (%d pages); database+WAL at most %d KiB, %d hot at most",
		total, inserted.Round(time.Millisecond), paged.Round(time.Millisecond), (total+maxPage-1)/maxPage, maxFile>>10, maxHot)
	t.Logf("stored: hot %d bytes (%d messages), archived %d bytes in %d chunks (%d bytes of JSONL, ratio %.2f), total %d bytes",
		u.HotBytes, u.HotMessages, u.ArchivedBytes, u.ArchivedChunks, u.ArchivedRawBytes, float64(u.ArchivedRawBytes)/float64(u.ArchivedBytes), u.TotalBytes)
}
