// Package archive keeps immutable blobs outside the objects that own them:
// the cold tier of an agent session (chunks of old messages, whole expired
// sessions). A Store holds blobs under keys that the program builds, never
// under user input; CheckKey refuses anything but a short path of
// lowercase segments, so that a key is safe as a file path and as an S3
// object name.
//
// Two stores implement Store: Local, a directory on the node (the embedded
// default), and S3, any S3-compatible object store (AWS S3, Cloudflare R2,
// SeaweedFS, ...) through minio-go. Both pass the contract suite in
// archive/archivetest. docs/archive.md describes their configuration.
//
// A Put returns only when the blob is durable and reads back; what durable
// means depends on the store (see Local.Put and S3.Put). A caller that
// deletes its own copy of the data after a Put (moving a chunk of messages
// out of an object's database) relies on that.
//
// # Chunks
//
// EncodeChunk and DecodeChunk are the format of an archived chunk of
// messages: a 48-byte header (magic, version, codec, the uncompressed length
// and its SHA-256) followed by one zstd frame of the JSONL. DecodeChunk
// verifies length and checksum, so a damaged or truncated blob is reported
// (ErrCorrupt), never returned as messages.
//
// zstd at its default level was chosen over gzip on realistic chat JSONL
// (English prose and technical text of varied lengths, Markdown and Go
// code, tool calls with JSON arguments and results, ids, timestamps; see
// chat_test.go). On 1 MiB chunks, speed in MB of JSONL per CPU-second on
// the 2-core CI machine kind (go test -bench Codec):
//
//	codec          ratio   compress   decompress
//	zstd default   4.29    155        1,140-1,320   chosen
//	zstd better    4.50     66-72     1,460-1,490
//	gzip 6         3.42     38          213-225
//	gzip 1         2.78    110-113      171-173
//
// Ratios by chunk size, zstd default vs gzip 6: 64 KiB 3.04 vs 3.13,
// 256 KiB 3.82 vs 3.37, 1 MiB 4.32 vs 3.44 (3.55 vs 2.94 when messages
// share no topic). zstd compresses 4x and decompresses 5x faster than
// gzip, and from 256 KiB up its output is 12-20% smaller; its better level
// saves 5% more for twice the CPU. docs/archive.md has the details.
package archive

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/cairn-dev/cairn"
)

// Store keeps immutable blobs under program-built keys. All methods are safe
// for concurrent use, honour ctx, and refuse a key or prefix that CheckKey
// or CheckPrefix refuses with a *cairn.Error of code Invalid, before any
// I/O. Errors other than *cairn.Error are wrapped with the operation and the
// key; a cancelled or expired ctx is in their chain (context.Canceled,
// context.DeadlineExceeded).
//
// A key and a longer key under it ("a/b" and "a/b/c") must not both hold
// blobs: Local refuses the second with Conflict (a path cannot be both a
// file and a directory), while S3 (AWS, SeaweedFS, gofakes3) stores both.
// Build keys so that it cannot happen.
type Store interface {
	// Put stores data under key, replacing any blob there. It returns nil
	// only once the blob is durable (as the implementation defines it) and
	// a read would return exactly data. Readers see the old blob or the new
	// one, never a mix. On error the key holds the old blob, the new one,
	// or nothing if it held nothing; a retry with the same data is safe.
	// Put does not keep data after it returns. A blob larger than MaxBlob
	// is refused with TooLarge.
	Put(ctx context.Context, key string, data []byte) error

	// Get returns the blob under key, a slice the caller owns. It returns
	// a *cairn.Error of code NotFound when there is none.
	Get(ctx context.Context, key string) ([]byte, error)

	// Delete removes the blob under key. Deleting a missing blob is not an
	// error. When Delete returns nil, a later Get returns NotFound.
	Delete(ctx context.Context, key string) error

	// List returns the keys that start with prefix (a plain string prefix:
	// "s/1" matches "s/1/a" and "s/10"), sorted in byte order. An empty
	// prefix lists every key. Keys written concurrently may or may not be
	// listed.
	List(ctx context.Context, prefix string) ([]string, error)

	// Usage counts the blobs whose keys start with prefix and their bytes,
	// as List would select them.
	Usage(ctx context.Context, prefix string) (Usage, error)
}

// Usage is the number and total size of the blobs under a prefix.
type Usage struct {
	Blobs int64 `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

// Limits of keys and blobs.
const (
	// MaxKey is the longest key, in bytes.
	MaxKey = 512
	// MaxSegment is the longest segment of a key, in bytes.
	MaxSegment = 128
	// MaxBlob is the largest blob Put accepts, in bytes.
	MaxBlob = 64 << 20
)

// CheckKey returns nil if key is a valid archive key, or a *cairn.Error of
// code Invalid. A valid key is at most MaxKey bytes of '/'-separated
// segments; each segment is 1 to MaxSegment bytes of [a-z0-9._-] and starts
// with a letter or digit (so no segment is "." or "..", none is hidden, and
// none looks like a flag). Keys are built by the program: "agents/a1/
// sessions/s-9f2c/chunks/000001.jsonl.zst".
func CheckKey(key string) error {
	if key == "" {
		return cairn.Errorf(cairn.Invalid, "archive key is empty")
	}
	if len(key) > MaxKey {
		return cairn.Errorf(cairn.Invalid, "archive key is %d bytes, longer than %d", len(key), MaxKey)
	}
	rest := key
	for {
		seg, tail, more := strings.Cut(rest, "/")
		if err := checkSegment(seg); err != nil {
			return cairn.Errorf(cairn.Invalid, "archive key %q: %s", key, err.Error())
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// CheckPrefix returns nil if prefix may be passed to List and Usage: empty,
// a valid key (which also matches longer last segments: "s/1" matches
// "s/10"), or a valid key followed by '/'. Otherwise it returns a
// *cairn.Error of code Invalid.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := CheckKey(strings.TrimSuffix(prefix, "/")); err != nil {
		return cairn.Errorf(cairn.Invalid, "archive prefix %q is not a key or a key and '/'", prefix)
	}
	return nil
}

type segmentError string

func (e segmentError) Error() string { return string(e) }

// checkSegment checks one segment of a key.
func checkSegment(s string) error {
	if s == "" {
		return segmentError("empty segment (leading, trailing or double '/')")
	}
	if len(s) > MaxSegment {
		return segmentError("segment longer than 128 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return segmentError("segments are [a-z0-9._-] starting with [a-z0-9]")
		}
	}
	return nil
}

// tooLarge refuses a blob over MaxBlob.
func tooLarge(key string, n int) error {
	return cairn.Errorf(cairn.TooLarge, "archive blob %s is %d bytes, more than %d", key, n, MaxBlob)
}

// notFound reports a missing blob.
func notFound(key string) error {
	return cairn.Errorf(cairn.NotFound, "archive blob %s not found", key)
}

// check refuses, before any I/O, a key or prefix that valid (CheckKey or
// CheckPrefix) refuses, and a ctx that has ended, wrapped with op.
func check(ctx context.Context, op, key string, valid func(string) error) error {
	if err := valid(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("archive %s %s: %w", op, key, err)
	}
	return nil
}

// walkFunc calls fn for each blob whose key starts with prefix; op names
// the operation in its errors.
type walkFunc func(ctx context.Context, op, prefix string, fn func(key string, size int64)) error

// list is Store.List over a store's walk.
func list(ctx context.Context, walk walkFunc, prefix string) ([]string, error) {
	var keys []string
	err := walk(ctx, "list", prefix, func(key string, _ int64) {
		keys = append(keys, key)
	})
	if err != nil {
		return nil, err
	}
	// Neither walk is in the byte order of keys: Local's goes by file
	// names per directory ("a/b-c" < "a/b/x" < "a/b0"), and not every
	// S3-compatible server lists in byte order.
	sort.Strings(keys)
	return keys, nil
}

// usage is Store.Usage over a store's walk.
func usage(ctx context.Context, walk walkFunc, prefix string) (Usage, error) {
	var u Usage
	err := walk(ctx, "usage", prefix, func(_ string, size int64) {
		u.Blobs++
		u.Bytes += size
	})
	if err != nil {
		return Usage{}, err
	}
	return u, nil
}
