// Package jsonstate keeps a JSON document in an object's storage, with a
// version and patches: the "agent state" an agent session syncs to its
// clients. It reads and writes the object's KV inside the caller's turn,
// so a change is atomic with the rest of the turn (G4) and is gone if the
// turn fails.
//
// Each change (Replace, MergePatch, JSONPatch) returns the new version, the
// whole new value and, when one exists, an RFC 7396 merge patch from the
// previous value to the new one, so that a server can send patches to the
// clients that apply them and whole values to the others (the Cloudflare
// Agents SDK always sends the whole state: cloudflare/agents issue 312).
//
// Documents are stored canonical: compact, object members sorted by name,
// numbers as written, no HTML escaping. Values come back in that form.
//
//	var doc = jsonstate.New("state")
//
//	func (s *Session) SetState(ctx context.Context, v json.RawMessage) (int64, error) {
//		c, err := doc.Replace(s.st, v)
//		if err != nil {
//			return 0, err // Invalid or TooLarge: nothing changed
//		}
//		if c.Changed {
//			s.broadcast(c) // c.Patch if the client takes patches and c.Patch != nil, else c.Value
//		}
//		return c.Version, nil
//	}
package jsonstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/cairn-dev/cairn"
)

// Doc is one JSON document per object, stored under a KV key. A Doc holds
// no per-object state: one value serves every object of a class, from any
// number of goroutines. Set the fields before use; they must not change
// afterwards.
type Doc struct {
	// Key is the KV key of the document; its version is kept under Key +
	// ".version". Both belong to the Doc.
	Key string
	// MaxBytes bounds the stored document and each input (value or
	// patch). It must not exceed the runtime's Limits.MaxValueBytes.
	// Default 1 MiB.
	MaxBytes int
	// Initial is the value of a document never written (version 0).
	// Default null.
	Initial json.RawMessage
}

// New returns a Doc stored under key, with the defaults set.
func New(key string) *Doc {
	return &Doc{Key: key, MaxBytes: 1 << 20}
}

// Snapshot is a document's value at a version.
type Snapshot struct {
	Value   json.RawMessage // canonical JSON
	Version int64           // 0 for a document never written
}

// Change is the outcome of a change.
type Change struct {
	// Version is the document's version after the change: one more than
	// before, or the same if nothing changed. It never decreases, also
	// across restarts.
	Version int64
	// Value is the whole document after the change (canonical JSON).
	Value json.RawMessage
	// Patch is an RFC 7396 merge patch that turns the previous value into
	// Value: Diff's, so `{}` for an unchanged object. It is nil when no
	// merge patch can (Value holds an object member whose value is null
	// where the previous value differs, which a merge patch can only
	// delete): send Value then.
	Patch json.RawMessage
	// Changed is false if the value was left as it was: nothing was
	// written and Version is the previous one.
	Changed bool
}

// Get returns the document and its version.
func (d *Doc) Get(st *cairn.State) (Snapshot, error) {
	if d.Key == "" {
		return Snapshot{}, cairn.Errorf(cairn.Invalid, "jsonstate: Doc has no key")
	}
	m, err := st.GetMany([]string{d.Key, d.versionKey()})
	if err != nil {
		return Snapshot{}, fmt.Errorf("get state %q: %w", d.Key, err)
	}
	var s Snapshot
	if v, ok := m[d.versionKey()]; ok {
		s.Version, err = strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return Snapshot{}, fmt.Errorf("get state %q: bad version %q", d.Key, v)
		}
	}
	if v, ok := m[d.Key]; ok {
		s.Value = v
		return s, nil
	}
	s.Value = json.RawMessage("null")
	if len(d.Initial) > 0 {
		v, _, err := canonical(d.Initial)
		if err != nil {
			return Snapshot{}, fmt.Errorf("jsonstate: Initial: %w", err)
		}
		s.Value = v
	}
	return s, nil
}

// Replace sets the document to value. Its Patch is Diff(previous, value).
// Errors: Invalid if value is not JSON, TooLarge if it exceeds MaxBytes;
// then nothing changes.
func (d *Doc) Replace(st *cairn.State, value json.RawMessage) (Change, error) {
	if err := d.checkInput("value", value); err != nil {
		return Change{}, err
	}
	_, v, err := canonical(value)
	if err != nil {
		return Change{}, cairn.Errorf(cairn.Invalid, "state is not valid JSON: %v", err)
	}
	return d.change(st, func(any) (any, error) { return v, nil })
}

// MergePatch applies an RFC 7396 merge patch. Errors: Invalid if patch is
// not JSON, TooLarge if the patch or the result exceeds MaxBytes; then
// nothing changes.
func (d *Doc) MergePatch(st *cairn.State, patch json.RawMessage) (Change, error) {
	if err := d.checkInput("merge patch", patch); err != nil {
		return Change{}, err
	}
	_, p, err := canonical(patch)
	if err != nil {
		return Change{}, cairn.Errorf(cairn.Invalid, "merge patch is not valid JSON: %v", err)
	}
	return d.change(st, func(old any) (any, error) { return mergePatch(old, p), nil })
}

// JSONPatch applies an RFC 6902 JSON Patch (an array of operations), all
// or nothing. Errors, after which nothing changes: Invalid for a patch
// that is not a valid JSON Patch or does not apply (a missing path, an
// index out of range), Conflict if a "test" operation fails, TooLarge if
// the patch or the result exceeds MaxBytes.
func (d *Doc) JSONPatch(st *cairn.State, patch json.RawMessage) (Change, error) {
	if err := d.checkInput("JSON patch", patch); err != nil {
		return Change{}, err
	}
	return d.change(st, func(old any) (any, error) {
		oldJSON, err := encode(old)
		if err != nil {
			return nil, err
		}
		out, err := applyJSONPatch(oldJSON, patch, d.MaxBytes)
		if err != nil {
			return nil, err
		}
		_, v, err := canonical(out)
		if err != nil {
			return nil, cairn.Errorf(cairn.Invalid, "JSON patch result: %v", err)
		}
		return v, nil
	})
}

// change runs fn on the current value and stores its result.
func (d *Doc) change(st *cairn.State, fn func(old any) (any, error)) (Change, error) {
	cur, err := d.Get(st)
	if err != nil {
		return Change{}, err
	}
	old, err := decode(cur.Value)
	if err != nil {
		return Change{}, fmt.Errorf("state %q: stored value: %w", d.Key, err)
	}
	nv, err := fn(old)
	if err != nil {
		return Change{}, err
	}
	value, err := encode(nv)
	if err != nil {
		return Change{}, err
	}
	if len(value) > d.MaxBytes {
		return Change{}, cairn.Errorf(cairn.TooLarge, "state of %d bytes; the limit is %d", len(value), d.MaxBytes)
	}
	c := Change{Version: cur.Version, Value: value}
	if p, ok := diff(old, nv); ok {
		if c.Patch, err = encode(p); err != nil {
			return Change{}, err
		}
	}
	if bytes.Equal(value, cur.Value) {
		return c, nil
	}
	c.Version++
	c.Changed = true
	if err := st.PutMany([]cairn.Entry{
		{Key: d.Key, Value: value},
		{Key: d.versionKey(), Value: []byte(strconv.FormatInt(c.Version, 10))},
	}); err != nil {
		return Change{}, fmt.Errorf("put state %q: %w", d.Key, err)
	}
	return c, nil
}

func (d *Doc) versionKey() string { return d.Key + ".version" }

func (d *Doc) checkInput(what string, b json.RawMessage) error {
	if d.Key == "" {
		return cairn.Errorf(cairn.Invalid, "jsonstate: Doc has no key")
	}
	if len(b) > d.MaxBytes {
		return cairn.Errorf(cairn.TooLarge, "%s of %d bytes; the limit is %d", what, len(b), d.MaxBytes)
	}
	return nil
}

// Diff returns an RFC 7396 merge patch that turns old into new, and
// whether one exists: it does not when new holds an object member whose
// value is null (a merge patch can only delete it) in a part that differs
// from old. The patch is minimal in the sense that it names only members
// that changed; arrays are replaced whole, as merge patches do. Equal
// documents give `{}` when old is an object. Errors: Invalid if old or new
// is not JSON.
func Diff(old, new json.RawMessage) (json.RawMessage, bool, error) {
	_, o, err := canonical(old)
	if err != nil {
		return nil, false, cairn.Errorf(cairn.Invalid, "old value is not valid JSON: %v", err)
	}
	_, n, err := canonical(new)
	if err != nil {
		return nil, false, cairn.Errorf(cairn.Invalid, "new value is not valid JSON: %v", err)
	}
	p, ok := diff(o, n)
	if !ok {
		return nil, false, nil
	}
	b, err := encode(p)
	return b, err == nil, err
}

// Merge applies an RFC 7396 merge patch to doc and returns the result,
// canonical. Errors: Invalid if doc or patch is not JSON.
func Merge(doc, patch json.RawMessage) (json.RawMessage, error) {
	_, d, err := canonical(doc)
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "document is not valid JSON: %v", err)
	}
	_, p, err := canonical(patch)
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "merge patch is not valid JSON: %v", err)
	}
	return encode(mergePatch(d, p))
}

// mergePatch is RFC 7396's MergePatch, on decoded values. It does not
// modify target.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	out := make(map[string]any, len(t)+len(p))
	if ok {
		for k, v := range t {
			out[k] = v
		}
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}

// diff returns a merge patch from old to new, if one exists.
func diff(old, new any) (any, bool) {
	n, ok := new.(map[string]any)
	if !ok {
		return new, true // a non-object patch replaces the target
	}
	o, ok := old.(map[string]any)
	if !ok {
		// Merged into {}: members with null values would be dropped.
		return new, !hasNullMember(n)
	}
	p := make(map[string]any)
	for k := range o {
		if _, ok := n[k]; !ok {
			p[k] = nil
		}
	}
	for k, nv := range n {
		ov, had := o[k]
		if had && reflect.DeepEqual(ov, nv) {
			continue
		}
		if nv == nil {
			return nil, false
		}
		sub, ok := diff(ov, nv)
		if !ok {
			return nil, false
		}
		p[k] = sub
	}
	return p, true
}

// hasNullMember reports whether an object, or an object among its members
// (not inside arrays, which a merge patch copies as they are), has a
// member whose value is null.
func hasNullMember(o map[string]any) bool {
	for _, v := range o {
		switch v := v.(type) {
		case nil:
			return true
		case map[string]any:
			if hasNullMember(v) {
				return true
			}
		}
	}
	return false
}

// canonical decodes b (exactly one JSON value) and encodes it canonically.
func canonical(b []byte) (json.RawMessage, any, error) {
	v, err := decode(b)
	if err != nil {
		return nil, nil, err
	}
	out, err := encode(v)
	return out, v, err
}

func decode(b []byte) (any, error) {
	if !json.Valid(b) {
		// Checked first, as Decoder would accept a valid prefix; Unmarshal
		// says what is wrong.
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// encode writes v compact, members sorted (encoding/json sorts map keys),
// without HTML escaping.
func encode(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return json.RawMessage(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

// wrapKey is the member under which applyJSONPatch wraps a document.
// Not "": the library's objects answer a get of "" with themselves.
const wrapKey = "root"

// applyJSONPatch applies an RFC 6902 patch with evanphx/json-patch. The
// library cannot apply operations to the root ("" path) of a document
// that is not an object or array, so such patches (and any with a root
// path) run on the document wrapped in an object, their paths moved
// under it.
func applyJSONPatch(doc, patch []byte, maxBytes int) (out []byte, err error) {
	defer func() {
		// Third-party code fed untrusted input: a panic in it is a bad
		// patch, not a reason to discard the object's instance.
		if p := recover(); p != nil {
			out, err = nil, cairn.Errorf(cairn.Invalid, "JSON patch does not apply: %v", p)
		}
	}()
	var ops []map[string]json.RawMessage
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "JSON patch must be an array of operations: %v", err)
	}
	wrap := len(doc) == 0 || (doc[0] != '{' && doc[0] != '[')
	for _, op := range ops {
		for _, f := range []string{"path", "from"} {
			var s string
			if raw, ok := op[f]; ok && json.Unmarshal(raw, &s) == nil && s == "" {
				wrap = true
			}
		}
	}
	if wrap {
		for i, op := range ops {
			for _, f := range []string{"path", "from"} {
				raw, ok := op[f]
				if !ok {
					continue
				}
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					return nil, cairn.Errorf(cairn.Invalid, "JSON patch operation %d: %q is not a string", i, f)
				}
				op[f], _ = json.Marshal("/" + wrapKey + s)
			}
		}
		if patch, err = json.Marshal(ops); err != nil {
			return nil, err
		}
		doc = append(append([]byte(`{"`+wrapKey+`":`), doc...), '}')
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "invalid JSON patch: %v", err)
	}
	opts := jsonpatch.NewApplyOptions()
	opts.SupportNegativeIndices = false // not in RFC 6902
	opts.EscapeHTML = false
	opts.AccumulatedCopySizeLimit = int64(maxBytes)
	out, err = p.ApplyWithOptions(doc, opts)
	if err != nil {
		var copyErr *jsonpatch.AccumulatedCopySizeError
		switch {
		case errors.Is(err, jsonpatch.ErrTestFailed):
			return nil, cairn.Errorf(cairn.Conflict, "JSON patch test failed: %v", err)
		case errors.As(err, &copyErr):
			return nil, cairn.Errorf(cairn.TooLarge, "JSON patch copies too much: %v", err)
		}
		return nil, cairn.Errorf(cairn.Invalid, "JSON patch does not apply: %v", err)
	}
	if !wrap {
		return out, nil
	}
	var w map[string]json.RawMessage
	if err := json.Unmarshal(out, &w); err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "JSON patch does not apply: %v", err)
	}
	v, ok := w[wrapKey]
	if !ok || len(w) != 1 {
		return nil, cairn.Errorf(cairn.Invalid, "JSON patch does not apply: it removes or replaces the document's root")
	}
	return v, nil
}
