package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

// BenchmarkArchive measures cold storage on each store: archival
// throughput (the archiver moving messages of realistic size, text from Go
// sources, ~1.5 KB each, to the archive; messages/s) and the latency of a
// page of 50 archived messages over HTTP, with the chunk read from the
// archive (cold: no chunk cache) and from the cache (warm).
//
//	go test -run XXX -bench Archive ./agent/
//
// The SeaweedFS store needs the binary of .ci/setup.d/30-seaweedfs.sh.
func BenchmarkArchive(b *testing.B) {
	stores := []struct {
		name string
		new  func(b *testing.B) archive.Store
	}{
		{"local", func(b *testing.B) archive.Store { return nil }},
		{"s3-gofakes3", func(b *testing.B) archive.Store { return archivetest.S3Store(b, archivetest.FakeS3(b)) }},
		{"s3-seaweedfs", func(b *testing.B) archive.Store { return archivetest.S3Store(b, seaweed(b)) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			arc := st.new(b)
			b.Run("archive", func(b *testing.B) { benchArchival(b, arc) })
			b.Run("page-cold", func(b *testing.B) { benchPage(b, arc, false) })
			b.Run("page-warm", func(b *testing.B) { benchPage(b, arc, true) })
		})
	}
}

var (
	seaweedOnce sync.Once
	seaweedURL  string
)

// seaweed starts one SeaweedFS server for all the benchmarks of the run.
func seaweed(b *testing.B) string {
	archivetest.SeaweedFSBinary(b)
	seaweedOnce.Do(func() { seaweedURL = archivetest.SeaweedFS(b) })
	if seaweedURL == "" {
		b.Skip("SeaweedFS did not start")
	}
	return seaweedURL
}

var (
	corpusOnce sync.Once
	corpus     string
)

// realistic returns n messages from first, each text a window of Go
// sources (technical English and code) of 300 to 2,700 bytes.
func realistic(first, n int) []Message {
	corpusOnce.Do(func() {
		// 4 MB of Go sources, so that 2,000 messages of 1.5 KB rarely
		// repeat text (which would flatter the compression).
		var sb strings.Builder
		for _, d := range []string{"net/http", "go/types", "encoding/json", "crypto/tls", "runtime"} {
			files, _ := filepath.Glob(filepath.Join(runtime.GOROOT(), "src", d, "*.go"))
			for _, f := range files {
				if sb.Len() > 4<<20 {
					break
				}
				if data, err := os.ReadFile(f); err == nil {
					sb.Write(data)
				}
			}
		}
		corpus = sb.String()
		if len(corpus) < 1<<16 {
			corpus = strings.Repeat(strings.Join(words, " ")+"\n", 2000)
		}
	})
	msgs := genMessages(first, n, 10)
	for i := range msgs {
		k := first + i
		size := 300 + (k*7919)%2400
		off := (k * 1931) % (len(corpus) - size)
		text := strings.ToValidUTF8(corpus[off:off+size], "")
		for j := range msgs[i].Parts {
			if msgs[i].Parts[j].Type == PartText {
				msgs[i].Parts[j].Text = text
			}
		}
	}
	return msgs
}

func benchArchival(b *testing.B, arc archive.Store) {
	e := newColdEnv(b, "", arc, nil, Agent{Name: "a"})
	const per = 2000
	var moved int64
	var rawBytes, bytes int64
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		session := fmt.Sprintf("a/s%d", i)
		e.insert(b, session, realistic(0, per))
		start := time.Now()
		run := e.maintain(b, session)
		elapsed += time.Since(start)
		moved += run.Messages
		rawBytes += run.RawBytes
		bytes += run.Bytes
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(moved)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(rawBytes)/elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(rawBytes)/float64(bytes), "ratio")
}

func benchPage(b *testing.B, arc archive.Store, warm bool) {
	setup := func(_ *cairn.Runtime, svc *Service) {
		if !warm {
			svc.ChunkCacheBytes = 1 // nothing fits: every page reads the archive
		}
	}
	e := newColdEnv(b, "", arc, setup, Agent{Name: "a"})
	e.insert(b, "a/p", realistic(0, 4000))
	run := e.maintain(b, "a/p")
	if run.Messages < 3000 {
		b.Fatalf("archived %d", run.Messages)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Pages well inside the archive, a different chunk each time.
		before := 100 + (i*211)%int(run.Messages-100)
		var p Page
		e.must(b, "GET", fmt.Sprintf("/v1/agents/a/p/messages?limit=50&before=s%d", before), nil, &p)
		if len(p.Messages) != 50 {
			b.Fatalf("page of %d", len(p.Messages))
		}
	}
}
