package jsonstate

import (
	"encoding/json"
	"testing"

	"github.com/cairn-dev/cairn"
)

// FuzzJSONPatch: any document and patch give a JSON result or an error
// with a code, never a panic nor an oversized result.
func FuzzJSONPatch(f *testing.F) {
	f.Add(`{"foo":["bar","baz"]}`, `[{"op":"add","path":"/foo/1","value":"qux"}]`)
	f.Add(`{"a":{"b":1}}`, `[{"op":"move","from":"/a","path":"/a/b"}]`)
	f.Add(`[1,2,3]`, `[{"op":"copy","from":"/0","path":"/-"},{"op":"remove","path":"/1"}]`)
	f.Add(`3`, `[{"op":"test","path":"","value":3},{"op":"replace","path":"","value":4}]`)
	f.Add(`{"/":9,"~1":10}`, `[{"op":"test","path":"/~01","value":10}]`)
	f.Add(`null`, `[{"op":"add","path":"","value":{"x":[]}},{"op":"add","path":"/x/0","value":1}]`)
	f.Fuzz(func(t *testing.T, doc, patch string) {
		if !json.Valid([]byte(doc)) {
			return
		}
		out, err := applyJSONPatch([]byte(doc), []byte(patch), 1<<16)
		if err != nil {
			switch cairn.ErrorCode(err) {
			case cairn.Invalid, cairn.Conflict, cairn.TooLarge:
			default:
				t.Fatalf("error %v has code %s", err, cairn.ErrorCode(err))
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("result %q is not JSON", out)
		}
	})
}
