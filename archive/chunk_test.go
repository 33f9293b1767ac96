package archive_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/klauspost/compress/zstd"
)

func TestChunkRoundTrip(t *testing.T) {
	for _, raw := range [][]byte{nil, {}, []byte("{}\n"), newChat(1).jsonl(300 << 10), bytes.Repeat([]byte("x"), 5<<20)} {
		blob, err := archive.EncodeChunk(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := archive.DecodeChunk(blob)
		if err != nil {
			t.Fatalf("DecodeChunk of %d bytes: %v", len(raw), err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("DecodeChunk(EncodeChunk(%d bytes)) = %d bytes, differ", len(raw), len(got))
		}
	}
}

func TestChunkTooLarge(t *testing.T) {
	_, err := archive.EncodeChunk(make([]byte, archive.MaxChunk+1))
	if cairn.ErrorCode(err) != cairn.TooLarge {
		t.Fatalf("EncodeChunk of MaxChunk+1 bytes: %v, want TooLarge", err)
	}
}

// TestChunkCorrupt checks that every damaged blob is refused: each bit
// flipped in the header and in samples of the payload, every truncation
// at the edges, and chunks of another format.
func TestChunkCorrupt(t *testing.T) {
	raw := newChat(2).jsonl(64 << 10)
	blob, err := archive.EncodeChunk(raw)
	if err != nil {
		t.Fatal(err)
	}
	// A damaged payload may still decode to the chunk (a flipped bit in
	// an unused field of the zstd frame header): only the header must
	// refuse every change.
	refusedOrIntact := func(what string, b []byte) {
		t.Helper()
		got, err := archive.DecodeChunk(b)
		if err == nil && !bytes.Equal(got, raw) {
			t.Fatalf("%s: DecodeChunk returned %d bytes that are not the chunk", what, len(got))
		}
		if err != nil && !errors.Is(err, archive.ErrCorrupt) {
			t.Fatalf("%s: DecodeChunk error %v, want ErrCorrupt", what, err)
		}
	}
	refused := func(what string, b []byte) {
		t.Helper()
		got, err := archive.DecodeChunk(b)
		if !errors.Is(err, archive.ErrCorrupt) {
			t.Fatalf("%s: DecodeChunk = %d bytes, %v; want ErrCorrupt", what, len(got), err)
		}
		if got != nil {
			t.Fatalf("%s: DecodeChunk returned %d bytes with an error", what, len(got))
		}
	}
	var positions []int
	for i := range 48 + 64 {
		positions = append(positions, i)
	}
	for i := 48 + 64; i < len(blob); i += 97 {
		positions = append(positions, i)
	}
	positions = append(positions, len(blob)-1)
	for _, i := range positions {
		for bit := range 8 {
			if i >= 48+64 && bit > 0 {
				break
			}
			b := bytes.Clone(blob)
			b[i] ^= 1 << bit
			what := fmt.Sprintf("bit %d of byte %d flipped", bit, i)
			if i < 48 {
				refused(what, b)
			} else {
				refusedOrIntact(what, b)
			}
		}
	}
	for _, n := range []int{0, 3, 47, 48, 49, len(blob) / 2, len(blob) - 1} {
		refused(fmt.Sprintf("truncated to %d bytes", n), blob[:n])
	}
	refused("extra bytes", append(bytes.Clone(blob), 0))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw)
	w.Close()
	refused("a gzip file", gz.Bytes())
	refused("plain JSONL", raw)
}

// FuzzDecodeChunk checks that DecodeChunk never panics and returns only
// verified chunks.
func FuzzDecodeChunk(f *testing.F) {
	for _, raw := range [][]byte{nil, []byte("{\"id\":1}\n"), newChat(3).jsonl(2 << 10)} {
		blob, err := archive.EncodeChunk(raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(blob)
	}
	f.Add([]byte("CRNK"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		raw, err := archive.DecodeChunk(blob)
		if err != nil {
			if !errors.Is(err, archive.ErrCorrupt) {
				t.Fatalf("DecodeChunk error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := archive.EncodeChunk(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again[:48], blob[:48]) {
			t.Fatalf("DecodeChunk accepted a blob whose header does not describe what it returned")
		}
	})
}

// codecs are the candidates measured by TestChunkRatio and
// BenchmarkCodec; archive uses the first.
var codecs = []struct {
	name   string
	encode func([]byte) []byte
	decode func([]byte) ([]byte, error)
}{
	{"zstd-default", zstdEncoder(zstd.SpeedDefault), zstdDecode},
	{"zstd-better", zstdEncoder(zstd.SpeedBetterCompression), zstdDecode},
	{"gzip-6", gzipEncoder(gzip.DefaultCompression), gzipDecode},
	{"gzip-1", gzipEncoder(gzip.BestSpeed), gzipDecode},
}

func zstdEncoder(level zstd.EncoderLevel) func([]byte) []byte {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false))
	if err != nil {
		panic(err)
	}
	return func(b []byte) []byte { return e.EncodeAll(b, nil) }
}

var zd, _ = zstd.NewReader(nil)

func zstdDecode(b []byte) ([]byte, error) { return zd.DecodeAll(b, nil) }

func gzipEncoder(level int) func([]byte) []byte {
	return func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, level)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
}

func gzipDecode(b []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// TestChunkRatio measures the compression ratio of realistic chat JSONL
// (see chat_test.go) for each candidate codec and chunk size, logs it
// (go test -v -run ChunkRatio), and checks the chosen codec's floor.
func TestChunkRatio(t *testing.T) {
	t.Logf("corpus: %s", loadCorpus().name)
	for _, tc := range []struct {
		size    int
		uniform bool
	}{{64 << 10, false}, {256 << 10, false}, {1 << 20, false}, {1 << 20, true}} {
		g := newChat(uint64(tc.size))
		g.uniform = tc.uniform
		raw := g.jsonl(tc.size)
		if tc.uniform {
			t.Logf("without topic locality (sentences drawn from the whole corpus):")
		}
		for _, c := range codecs {
			start := time.Now()
			comp := c.encode(raw)
			enc := time.Since(start)
			start = time.Now()
			back, err := c.decode(comp)
			dec := time.Since(start)
			if err != nil || !bytes.Equal(back, raw) {
				t.Fatalf("%s: round trip failed: %v", c.name, err)
			}
			t.Logf("%4d KiB %-13s ratio %.2f  (%d -> %d bytes; one run: encode %v, decode %v)",
				len(raw)>>10, c.name, float64(len(raw))/float64(len(comp)), len(raw), len(comp), enc.Round(time.Microsecond), dec.Round(time.Microsecond))
		}
		blob, err := archive.EncodeChunk(raw)
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(len(raw)) / float64(len(blob))
		t.Logf("%4d KiB EncodeChunk   ratio %.2f (with its 48-byte header)", len(raw)>>10, ratio)
		if ratio < 2.5 {
			t.Errorf("EncodeChunk ratio %.2f on %d KiB of chat JSONL, want at least 2.5", ratio, len(raw)>>10)
		}
	}
}

// BenchmarkCodec measures each candidate codec on a 1 MiB chunk of chat
// JSONL: MB/s of uncompressed bytes, the ratio, and (on Linux) cpu-MB/s,
// the speed per second of CPU time of the benchmark's thread, which other
// processes on a loaded machine disturb less than wall time.
func BenchmarkCodec(b *testing.B) {
	raw := newChat(7).jsonl(1 << 20)
	run := func(b *testing.B, fn func() error) {
		b.SetBytes(int64(len(raw)))
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0, ok := threadCPU()
		for b.Loop() {
			if err := fn(); err != nil {
				b.Fatal(err)
			}
		}
		if cpu1, ok1 := threadCPU(); ok && ok1 && cpu1 > cpu0 {
			b.ReportMetric(float64(b.N)*float64(len(raw))/1e6/(cpu1-cpu0).Seconds(), "cpu-MB/s")
		}
	}
	for _, c := range codecs {
		comp := c.encode(raw)
		ratio := float64(len(raw)) / float64(len(comp))
		b.Run(c.name+"/encode", func(b *testing.B) {
			run(b, func() error { c.encode(raw); return nil })
			b.ReportMetric(ratio, "ratio")
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			run(b, func() error { _, err := c.decode(comp); return err })
			b.ReportMetric(ratio, "ratio")
		})
	}
	b.Run("EncodeChunk", func(b *testing.B) {
		run(b, func() error { _, err := archive.EncodeChunk(raw); return err })
	})
	blob, _ := archive.EncodeChunk(raw)
	b.Run("DecodeChunk", func(b *testing.B) {
		run(b, func() error { _, err := archive.DecodeChunk(blob); return err })
	})
}
