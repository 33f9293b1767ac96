package coord

import (
	"bytes"
	"net/http"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// Classes returns the coordination classes by the namespace `cairn serve`
// registers them under.
func Classes() map[string]cairn.Class {
	return map[string]cairn.Class{
		"lock":     LockClass,
		"locks":    LockTableClass,
		"leader":   LeaderClass,
		"presence": PresenceClass,
		"queue":    QueueClass,
	}
}

// Input bounds. Ids (owners, candidates, members, request ids, dedup keys)
// are untrusted input (G11): bounded and checked before they reach SQL.
const (
	MaxIDBytes       = 256
	MaxTTL           = 24 * 60 * 60 * 1000 // ms: one day
	MaxWait          = 10 * 60 * 1000      // ms: ten minutes
	MaxMetadataBytes = 16 << 10
	MaxBodyBytes     = 256 << 10
)

// requestWindow is how long a request id's result is remembered for
// retries, in milliseconds, and requestCap how many are kept at most.
const (
	requestWindow = 15 * 60 * 1000
	requestCap    = 10000
)

func checkID(what, id string, required bool) error {
	if id == "" {
		if required {
			return cairn.Errorf(cairn.Invalid, "%s is required", what)
		}
		return nil
	}
	if len(id) > MaxIDBytes {
		return cairn.Errorf(cairn.Invalid, "%s is %d bytes; the limit is %d", what, len(id), MaxIDBytes)
	}
	if !utf8.ValidString(id) {
		return cairn.Errorf(cairn.Invalid, "%s must be valid UTF-8", what)
	}
	return nil
}

func checkTTL(ms int64) error {
	if ms <= 0 || ms > MaxTTL {
		return cairn.Errorf(cairn.Invalid, "ttl_ms must be 1 to %d", MaxTTL)
	}
	return nil
}

func checkWait(ms int64) error {
	if ms < 0 || ms > MaxWait {
		return cairn.Errorf(cairn.Invalid, "wait_ms must be 0 to %d", MaxWait)
	}
	return nil
}

// decodeBody decodes a JSON request body into v (cairn.DecodeJSON); an
// empty body decodes as {}.
func decodeBody(r *http.Request, v any) error {
	b, err := cairn.ReadBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return cairn.DecodeJSON(b, v)
}

// writeJSON and writeError write responses in the server's format.
var (
	writeJSON  = cairn.WriteJSON
	writeError = cairn.WriteError
)

// post serves a POST route: decode the body into A, call fn, write the
// result.
func post[A, R any](w http.ResponseWriter, r *http.Request, fn func(a A) (R, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": map[string]string{
			"code": "method_not_allowed", "message": r.Method + " is not supported here: use POST"}})
		return
	}
	var a A
	if err := decodeBody(r, &a); err != nil {
		writeError(w, err)
		return
	}
	res, err := fn(a)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client is gone (and the handler may have lost its turn)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// get serves a GET route.
func get[R any](w http.ResponseWriter, r *http.Request, fn func() (R, error)) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": map[string]string{
			"code": "method_not_allowed", "message": r.Method + " is not supported here: use GET"}})
		return
	}
	res, err := fn()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, cairn.Errorf(cairn.NotFound, "no route %s %s", r.Method, r.URL.Path))
}

func isWebSocket(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && r.Method == http.MethodGet
}
