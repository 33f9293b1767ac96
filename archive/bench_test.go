package archive_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

// chunk64K is an archived chunk of chat messages of about 64 KiB, as
// EncodeChunk makes it, and the number of messages in it.
var chunk64K = sync.OnceValues(func() ([]byte, int) {
	g := newChat(64)
	var raw []byte
	n := 0
	for {
		for range 8 {
			raw = append(raw, g.exchange()...)
			n += 2
		}
		blob, err := archive.EncodeChunk(raw)
		if err != nil {
			panic(err)
		}
		if len(blob) >= 64<<10 {
			return blob, n
		}
	}
})

// BenchmarkStore measures Put and Get of a 64 KiB archived chunk on each
// store: the local directory (with its fsyncs), gofakes3 in process, and
// SeaweedFS on loopback (skipped without the weed binary).
//
//	go test -run XXX -bench Store ./archive/
func BenchmarkStore(b *testing.B) {
	blob, msgs := chunk64K()
	b.Logf("chunk: %d bytes, %d messages", len(blob), msgs)
	stores := []struct {
		name string
		open func(b *testing.B) archive.Store
	}{
		{"local", func(b *testing.B) archive.Store { return newLocal(b) }},
		{"gofakes3", func(b *testing.B) archive.Store { return archivetest.S3Store(b, archivetest.FakeS3(b)) }},
		{"seaweedfs", func(b *testing.B) archive.Store { return archivetest.S3Store(b, archivetest.SeaweedFS(b)) }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			ctx := b.Context()
			b.Run("put", func(b *testing.B) {
				b.SetBytes(int64(len(blob)))
				i := 0
				for b.Loop() {
					// New chunks of a few sessions, as archival writes them.
					if err := s.Put(ctx, fmt.Sprintf("sessions/s%d/chunks/%06d", i%16, i), blob); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			const keys = 64
			for i := range keys {
				if err := s.Put(ctx, fmt.Sprintf("read/%02d", i), blob); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("get", func(b *testing.B) {
				b.SetBytes(int64(len(blob)))
				i := 0
				for b.Loop() {
					got, err := s.Get(ctx, fmt.Sprintf("read/%02d", i%keys))
					if err != nil || len(got) != len(blob) {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("get+decode", func(b *testing.B) {
				b.SetBytes(int64(len(blob)))
				i := 0
				for b.Loop() {
					got, err := s.Get(ctx, fmt.Sprintf("read/%02d", i%keys))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := archive.DecodeChunk(got); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}
