// Package builtin holds the classes that `cairn serve` offers with no Go
// code: kv, a key-value store per object name; room, a chat room over
// hibernatable WebSockets; and session, the workloads of the Durable
// Objects peer used by `cairn bench`.
package builtin

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Classes returns the built-in classes by namespace name.
func Classes() map[string]cairn.Class {
	return map[string]cairn.Class{
		"kv":      KVClass,
		"session": SessionClass,
		"room":    RoomClass,
	}
}

// EntryJSON is a KV entry in JSON: the value as text if it is UTF-8, else
// base64 with encoding "base64".
type EntryJSON struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Encoding string `json:"encoding,omitempty"`
}

// EncodeEntry renders a KV entry for JSON.
func EncodeEntry(e cairn.Entry) EntryJSON {
	if utf8.Valid(e.Value) {
		return EntryJSON{Key: e.Key, Value: string(e.Value)}
	}
	return EntryJSON{Key: e.Key, Value: base64.StdEncoding.EncodeToString(e.Value), Encoding: "base64"}
}

// ListOptions reads prefix, start, end, reverse and limit from a request's
// query; limit defaults to, and may not exceed, maxLimit.
func ListOptions(r *http.Request, maxLimit int) (cairn.ListOptions, error) {
	q := r.URL.Query()
	o := cairn.ListOptions{Prefix: q.Get("prefix"), Start: q.Get("start"), End: q.Get("end"), Limit: maxLimit}
	if v := q.Get("reverse"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, cairn.Errorf(cairn.Invalid, "reverse must be true or false")
		}
		o.Reverse = b
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > maxLimit {
			return o, cairn.Errorf(cairn.Invalid, "limit must be 1 to %d", maxLimit)
		}
		o.Limit = n
	}
	return o, nil
}

// writeJSON, writeError and readBody follow the server's formats.
var (
	writeJSON  = cairn.WriteJSON
	writeError = cairn.WriteError
	readBody   = cairn.ReadBody
)
