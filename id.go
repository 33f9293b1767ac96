package cairn

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// ID identifies an object within its namespace. It is 32 bytes, written as 64
// lowercase hex characters: 24 bytes of identity followed by an 8-byte tag
// that binds the ID to its namespace, so an ID string of one namespace is
// rejected by another (as Durable Objects do).
//
// For a named object the identity is the first 24 bytes of SHA-256 over a
// versioned, length-prefixed encoding of namespace and name (G1), so the same
// name always gives the same ID and no two (namespace, name) pairs share an
// encoding. For a unique object the identity is 24 random bytes.
type ID struct {
	b [32]byte
}

// MaxNameLen is the longest object name accepted, in bytes.
const MaxNameLen = 1024

// MaxNamespaceLen is the longest namespace name accepted, in bytes.
const MaxNamespaceLen = 128

const idVersion = "cairn/id/v1"

// nameID returns the ID of the object named name in namespace ns. The caller
// has validated both.
func nameID(ns, name string) ID {
	h := sha256.New()
	h.Write(lengthPrefixed(idVersion))
	h.Write(lengthPrefixed(ns))
	h.Write(lengthPrefixed(name))
	var id ID
	copy(id.b[:24], h.Sum(nil))
	id.b[0] &^= 0x80 // top bit clear: a named ID
	id.seal(ns)
	return id
}

// uniqueID returns a new random ID in namespace ns.
func uniqueID(ns string) ID {
	var id ID
	rand.Read(id.b[:24])
	id.b[0] |= 0x80 // top bit set: a unique ID
	id.seal(ns)
	return id
}

func lengthPrefixed(s string) []byte {
	b := binary.AppendUvarint(nil, uint64(len(s)))
	return append(b, s...)
}

func (id *ID) seal(ns string) {
	copy(id.b[24:], id.tag(ns))
}

func (id *ID) tag(ns string) []byte {
	h := sha256.New()
	h.Write(lengthPrefixed(idVersion + "/tag"))
	h.Write(lengthPrefixed(ns))
	h.Write(id.b[:24])
	return h.Sum(nil)[:8]
}

// parseID parses s as an ID of namespace ns.
func parseID(ns, s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return ID{}, Errorf(Invalid, "object ID must be 64 hex characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, Errorf(Invalid, "object ID must be lowercase hex")
		}
	}
	if _, err := hex.Decode(id.b[:], []byte(s)); err != nil {
		return ID{}, Errorf(Invalid, "object ID must be lowercase hex")
	}
	want := id.tag(ns)
	for i := range want {
		if id.b[24+i] != want[i] {
			return ID{}, Errorf(Invalid, "object ID does not belong to namespace %q", ns)
		}
	}
	return id, nil
}

// String returns the ID as 64 lowercase hex characters.
func (id ID) String() string { return hex.EncodeToString(id.b[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Unique reports whether id was made by NewUniqueID rather than from a name.
func (id ID) Unique() bool { return id.b[0]&0x80 != 0 }

// ParseIDOf parses s as an ID of namespace ns, as Namespace.ParseID does,
// for code that has a namespace name but no registered Namespace.
func ParseIDOf(ns, s string) (ID, error) { return parseID(ns, s) }
