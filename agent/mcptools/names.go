package mcptools

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxToolName is the longest tool name providers accept.
const maxToolName = 64

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// toolName returns the agent tool name of tool of server: "{server}_{tool}"
// with bytes outside [A-Za-z0-9_-] replaced by '_' (one per character),
// cut to 55 bytes and suffixed with '_' and 8 hex digits of a hash of the
// original names if it is longer than 64 bytes or already in used. It
// returns "" if even that name is taken.
func toolName(server, tool string, used map[string]bool) string {
	var b strings.Builder
	for _, r := range server + "_" + tool {
		if r < 0x80 && nameByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) <= maxToolName && !used[name] {
		return name
	}
	sum := sha256.Sum256([]byte(server + "\x00" + tool))
	suffix := "_" + hex.EncodeToString(sum[:4])
	name = name[:min(len(name), maxToolName-len(suffix))] + suffix
	if used[name] {
		return ""
	}
	return name
}
