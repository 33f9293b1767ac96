package builtin

import (
	"context"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn"
)

// KVClass is the kv namespace: each object is a key-value store.
//
// HTTP, under /v1/objects/kv/{name}/:
//
//	GET    /{key}   the value (404 if absent)
//	PUT    /{key}   store the request body
//	DELETE /{key}   delete; {"deleted": bool}
//	GET    /        list: ?prefix=&start=&end=&reverse=&limit= (at most 1000)
//
// RPC: Get, Put, Delete and List with JSON arguments (see the methods).
var KVClass = cairn.Class{
	New: func(st *cairn.State) (any, error) { return &KV{st: st}, nil },
}

// KV is an instance of the kv class.
type KV struct{ st *cairn.State }

// ServeHTTP implements http.Handler.
func (kv *KV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	if key == "" {
		if r.Method != http.MethodGet {
			writeError(w, cairn.Errorf(cairn.Invalid, "%s / is not supported: use GET to list, or a key path", r.Method))
			return
		}
		opts, err := ListOptions(r, 1000)
		if err != nil {
			writeError(w, err)
			return
		}
		res, err := kv.List(r.Context(), ListArgs{Prefix: opts.Prefix, Start: opts.Start, End: opts.End, Reverse: opts.Reverse, Limit: opts.Limit})
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		v, ok, err := kv.st.Get(key)
		if err != nil {
			writeError(w, err)
			return
		}
		if !ok {
			writeError(w, cairn.Errorf(cairn.NotFound, "no key %q", key))
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(v)
	case http.MethodPut, http.MethodPost:
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if err := kv.st.Put(key, body); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	case http.MethodDelete:
		existed, err := kv.st.Delete(key)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deleted": existed})
	default:
		w.Header().Set("Allow", "GET, PUT, POST, DELETE")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": map[string]string{
			"code": "method_not_allowed", "message": r.Method + " is not supported on a key"}})
	}
}

// KeyArgs names a key.
type KeyArgs struct {
	Key string `json:"key"`
}

// GetResult is the result of Get: Value is null if the key is absent; a
// value that is not UTF-8 comes base64-encoded with Encoding "base64".
type GetResult struct {
	Value    *string `json:"value"`
	Encoding string  `json:"encoding,omitempty"`
}

// Get returns the value of a key.
func (kv *KV) Get(ctx context.Context, a KeyArgs) (GetResult, error) {
	v, ok, err := kv.st.Get(a.Key)
	if err != nil || !ok {
		return GetResult{}, err
	}
	e := EncodeEntry(cairn.Entry{Key: a.Key, Value: v})
	return GetResult{Value: &e.Value, Encoding: e.Encoding}, nil
}

// PutArgs is a key and its new value.
type PutArgs struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Put stores a value.
func (kv *KV) Put(ctx context.Context, a PutArgs) error {
	return kv.st.Put(a.Key, []byte(a.Value))
}

// DeleteResult says whether the key existed.
type DeleteResult struct {
	Deleted bool `json:"deleted"`
}

// Delete deletes a key.
func (kv *KV) Delete(ctx context.Context, a KeyArgs) (DeleteResult, error) {
	ok, err := kv.st.Delete(a.Key)
	return DeleteResult{Deleted: ok}, err
}

// ListArgs select keys, as cairn.ListOptions.
type ListArgs struct {
	Prefix  string `json:"prefix,omitempty"`
	Start   string `json:"start,omitempty"`
	End     string `json:"end,omitempty"`
	Reverse bool   `json:"reverse,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// ListResult holds the entries found.
type ListResult struct {
	Entries []EntryJSON `json:"entries"`
}

// List lists entries (at most 1000).
func (kv *KV) List(ctx context.Context, a ListArgs) (ListResult, error) {
	if a.Limit <= 0 || a.Limit > 1000 {
		a.Limit = 1000
	}
	es, err := kv.st.List(cairn.ListOptions{Prefix: a.Prefix, Start: a.Start, End: a.End, Reverse: a.Reverse, Limit: a.Limit})
	if err != nil {
		return ListResult{}, err
	}
	out := ListResult{Entries: make([]EntryJSON, 0, len(es))}
	for _, e := range es {
		out.Entries = append(out.Entries, EncodeEntry(e))
	}
	return out, nil
}
