package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cairn-dev/cairn"
	"github.com/klauspost/compress/zstd"
)

// The chunk envelope, all integers big-endian:
//
//	offset  size  field
//	0       4     magic "CRNK"
//	4       1     version, 1
//	5       1     codec: 1 = zstd
//	6       2     reserved, 0
//	8       8     length of the uncompressed chunk
//	16      32    SHA-256 of the uncompressed chunk
//	48      ...   the compressed chunk: one zstd frame
const (
	chunkMagic   = "CRNK"
	chunkVersion = 1
	codecZstd    = 1
	chunkHeader  = 48
)

// MaxChunk is the largest uncompressed chunk EncodeChunk accepts and
// DecodeChunk returns, in bytes.
const MaxChunk = 64 << 20

// ErrCorrupt is in the chain of DecodeChunk's errors for a blob that is not
// an intact chunk: bad header, undecodable payload, wrong length or
// checksum.
var ErrCorrupt = errors.New("corrupt archive chunk")

// The zstd encoder and decoder are safe for concurrent EncodeAll and
// DecodeAll and costly to build, so the package makes each once, on first
// use. Neither holds state between calls nor starts goroutines for them.
var (
	chunkEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderCRC(false), // the envelope has a SHA-256
			zstd.WithZeroFrames(true))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	})
	chunkDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxChunk),
			zstd.WithDecoderMaxWindow(MaxChunk))
		if err != nil {
			panic(err) // only for invalid options
		}
		return d
	})
)

// EncodeChunk returns the archived form of an uncompressed chunk (JSONL,
// one message per line): the envelope above around its zstd compression.
// It returns a *cairn.Error of code TooLarge for a chunk over MaxChunk.
// Safe for concurrent use.
func EncodeChunk(raw []byte) ([]byte, error) {
	if len(raw) > MaxChunk {
		return nil, cairn.Errorf(cairn.TooLarge, "archive chunk is %d bytes, more than %d", len(raw), MaxChunk)
	}
	out := make([]byte, chunkHeader, chunkHeader+len(raw)/3+64)
	copy(out, chunkMagic)
	out[4] = chunkVersion
	out[5] = codecZstd
	binary.BigEndian.PutUint64(out[8:], uint64(len(raw)))
	sum := sha256.Sum256(raw)
	copy(out[16:], sum[:])
	return chunkEncoder().EncodeAll(raw, out), nil
}

// DecodeChunk checks an archived chunk and returns it uncompressed. Any
// damage returns an error wrapping ErrCorrupt; nothing unverified is
// returned. Safe for concurrent use.
func DecodeChunk(blob []byte) ([]byte, error) {
	if len(blob) < chunkHeader || string(blob[:4]) != chunkMagic {
		return nil, fmt.Errorf("%w: no chunk header", ErrCorrupt)
	}
	if blob[4] != chunkVersion || blob[5] != codecZstd || blob[6] != 0 || blob[7] != 0 {
		return nil, fmt.Errorf("%w: version %d codec %d not supported", ErrCorrupt, blob[4], blob[5])
	}
	n := binary.BigEndian.Uint64(blob[8:])
	if n > MaxChunk {
		return nil, fmt.Errorf("%w: length %d over %d", ErrCorrupt, n, MaxChunk)
	}
	raw, err := chunkDecoder().DecodeAll(blob[chunkHeader:], make([]byte, 0, n))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if uint64(len(raw)) != n {
		return nil, fmt.Errorf("%w: %d bytes, header says %d", ErrCorrupt, len(raw), n)
	}
	sum := sha256.Sum256(raw)
	if !bytes.Equal(sum[:], blob[16:48]) {
		return nil, fmt.Errorf("%w: SHA-256 mismatch", ErrCorrupt)
	}
	return raw, nil
}
