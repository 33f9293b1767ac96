package jsonstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/jsonstate"
	"github.com/cairn-dev/cairn/sqlite"
)

// open starts a runtime on dir with one class, "obj", that has no
// handlers: the tests act through Stub.Run.
func open(tb testing.TB, dir string) *cairn.Runtime {
	tb.Helper()
	eng, err := sqlite.Open(dir, cairn.Process)
	if err != nil {
		tb.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = cairn.Process
	rt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := rt.Register("obj", cairn.Class{New: func(st *cairn.State) (any, error) { return struct{}{}, nil }}); err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { closeRuntime(tb, rt) })
	return rt
}

func closeRuntime(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Errorf("close runtime: %v", err)
	}
}

// in runs fn in a turn of object name and returns fn's error.
func in(tb testing.TB, rt *cairn.Runtime, name string, fn func(st *cairn.State) error) error {
	tb.Helper()
	ns, err := rt.Namespace("obj")
	if err != nil {
		tb.Fatal(err)
	}
	stub, err := ns.GetByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return stub.Run(ctx, func(ctx context.Context, st *cairn.State) error { return fn(st) })
}

type op int

const (
	replace op = iota
	merge
	patch
)

// apply makes one change in its own turn.
func apply(tb testing.TB, rt *cairn.Runtime, d *jsonstate.Doc, name string, o op, arg string) (jsonstate.Change, error) {
	tb.Helper()
	var c jsonstate.Change
	err := in(tb, rt, name, func(st *cairn.State) error {
		var err error
		switch o {
		case replace:
			c, err = d.Replace(st, json.RawMessage(arg))
		case merge:
			c, err = d.MergePatch(st, json.RawMessage(arg))
		case patch:
			c, err = d.JSONPatch(st, json.RawMessage(arg))
		}
		return err
	})
	return c, err
}

func mustApply(tb testing.TB, rt *cairn.Runtime, d *jsonstate.Doc, name string, o op, arg string) jsonstate.Change {
	tb.Helper()
	c, err := apply(tb, rt, d, name, o, arg)
	if err != nil {
		tb.Fatalf("change %d %s: %v", o, arg, err)
	}
	return c
}

func get(tb testing.TB, rt *cairn.Runtime, d *jsonstate.Doc, name string) jsonstate.Snapshot {
	tb.Helper()
	var s jsonstate.Snapshot
	if err := in(tb, rt, name, func(st *cairn.State) error {
		var err error
		s, err = d.Get(st)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return s
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(tb testing.TB, a, b string) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		tb.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		tb.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// RFC 7396, Appendix A, and the example of section 3.
var mergeCases = []struct{ target, patch, want string }{
	{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
	{`{"a":"b"}`, `{"a":null}`, `{}`},
	{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
	{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
	{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
	{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
	{`["a","b"]`, `["c","d"]`, `["c","d"]`},
	{`{"a":"b"}`, `["c"]`, `["c"]`},
	{`{"a":"foo"}`, `null`, `null`},
	{`{"a":"foo"}`, `"bar"`, `"bar"`},
	{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
	{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
	{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	{
		`{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}`,
		`{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}`,
		`{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}`,
	},
}

func TestMerge(t *testing.T) {
	for _, tc := range mergeCases {
		got, err := jsonstate.Merge(json.RawMessage(tc.target), json.RawMessage(tc.patch))
		if err != nil {
			t.Errorf("Merge(%s, %s): %v", tc.target, tc.patch, err)
			continue
		}
		if !sameJSON(t, string(got), tc.want) {
			t.Errorf("Merge(%s, %s) = %s, want %s", tc.target, tc.patch, got, tc.want)
		}
	}
}

func TestMergePatchRFC7396(t *testing.T) {
	rt := open(t, t.TempDir())
	d := jsonstate.New("state")
	for i, tc := range mergeCases {
		name := "merge-" + string(rune('a'+i))
		mustApply(t, rt, d, name, replace, tc.target)
		c := mustApply(t, rt, d, name, merge, tc.patch)
		if !sameJSON(t, string(c.Value), tc.want) {
			t.Errorf("%s + %s = %s, want %s", tc.target, tc.patch, c.Value, tc.want)
		}
		checkPatch(t, tc.target, c)
	}
}

// checkPatch checks that c.Patch, if any, turns old into c.Value, and
// that it exists whenever it can.
func checkPatch(tb testing.TB, old string, c jsonstate.Change) {
	tb.Helper()
	if c.Patch == nil {
		if !strings.Contains(string(c.Value), "null") {
			tb.Errorf("no patch from %s to %s, which has no null", old, c.Value)
		}
		return
	}
	got, err := jsonstate.Merge(json.RawMessage(old), c.Patch)
	if err != nil {
		tb.Fatal(err)
	}
	if string(got) != string(c.Value) {
		tb.Errorf("patch %s turns %s into %s, not %s", c.Patch, old, got, c.Value)
	}
}

// RFC 6902, Appendix A. err is the code of the error the patch must give.
var patchCases = []struct {
	name, doc, patch, want string
	err                    cairn.Code
}{
	{"A.1 add object member", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux"}]`, `{"baz":"qux","foo":"bar"}`, ""},
	{"A.2 add array element", `{"foo":["bar","baz"]}`, `[{"op":"add","path":"/foo/1","value":"qux"}]`, `{"foo":["bar","qux","baz"]}`, ""},
	{"A.3 remove object member", `{"baz":"qux","foo":"bar"}`, `[{"op":"remove","path":"/baz"}]`, `{"foo":"bar"}`, ""},
	{"A.4 remove array element", `{"foo":["bar","qux","baz"]}`, `[{"op":"remove","path":"/foo/1"}]`, `{"foo":["bar","baz"]}`, ""},
	{"A.5 replace", `{"baz":"qux","foo":"bar"}`, `[{"op":"replace","path":"/baz","value":"boo"}]`, `{"baz":"boo","foo":"bar"}`, ""},
	{"A.6 move value", `{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}`, `[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]`, `{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}`, ""},
	{"A.7 move array element", `{"foo":["all","grass","cows","eat"]}`, `[{"op":"move","from":"/foo/1","path":"/foo/3"}]`, `{"foo":["all","cows","eat","grass"]}`, ""},
	{"A.8 test success", `{"baz":"qux","foo":["a",2,"c"]}`, `[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]`, `{"baz":"qux","foo":["a",2,"c"]}`, ""},
	{"A.9 test error", `{"baz":"qux"}`, `[{"op":"test","path":"/baz","value":"bar"}]`, "", cairn.Conflict},
	{"A.10 add nested member", `{"foo":"bar"}`, `[{"op":"add","path":"/child","value":{"grandchild":{}}}]`, `{"foo":"bar","child":{"grandchild":{}}}`, ""},
	{"A.11 ignore unrecognized elements", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux","xyz":123}]`, `{"foo":"bar","baz":"qux"}`, ""},
	{"A.12 add to nonexistent target", `{"foo":"bar"}`, `[{"op":"add","path":"/baz/bat","value":"qux"}]`, "", cairn.Invalid},
	{"A.13 invalid patch document", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux","op":"remove"}]`, "", cairn.Invalid},
	{"A.14 escape ordering", `{"/":9,"~1":10}`, `[{"op":"test","path":"/~01","value":10}]`, `{"/":9,"~1":10}`, ""},
	{"A.15 strings and numbers", `{"/":9,"~1":10}`, `[{"op":"test","path":"/~01","value":"10"}]`, "", cairn.Conflict},
	{"A.16 add array value", `{"foo":["bar"]}`, `[{"op":"add","path":"/foo/-","value":["abc","def"]}]`, `{"foo":["bar",["abc","def"]]}`, ""},
	// Beyond the appendix.
	{"all or nothing", `{"a":1}`, `[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/nope"}]`, "", cairn.Invalid},
	{"negative index", `{"a":[1,2]}`, `[{"op":"remove","path":"/a/-1"}]`, "", cairn.Invalid},
	{"unknown op", `{"a":1}`, `[{"op":"frob","path":"/a"}]`, "", cairn.Invalid},
	{"not an array", `{"a":1}`, `{"op":"remove","path":"/a"}`, "", cairn.Invalid},
	{"not JSON", `{"a":1}`, `[{"op":`, "", cairn.Invalid},
	{"empty patch", `{"a":1}`, `[]`, `{"a":1}`, ""},
	{"replace the root", `{"a":1}`, `[{"op":"replace","path":"","value":[1]}]`, `[1]`, ""},
	{"add at the root of null", `null`, `[{"op":"add","path":"","value":{"x":1}}]`, `{"x":1}`, ""},
	{"test a scalar root", `3`, `[{"op":"test","path":"","value":3},{"op":"replace","path":"","value":4}]`, `4`, ""},
	{"remove the root", `{"a":1}`, `[{"op":"remove","path":""}]`, "", cairn.Invalid},
	{"member of a scalar", `"s"`, `[{"op":"add","path":"/a","value":1}]`, "", cairn.Invalid},
	{"path not a string", `{"a":1}`, `[{"op":"remove","path":7}]`, "", cairn.Invalid},
}

func TestJSONPatchRFC6902(t *testing.T) {
	rt := open(t, t.TempDir())
	d := jsonstate.New("state")
	for _, tc := range patchCases {
		t.Run(tc.name, func(t *testing.T) {
			before := mustApply(t, rt, d, tc.name, replace, tc.doc)
			c, err := apply(t, rt, d, tc.name, patch, tc.patch)
			if tc.err != "" {
				if got := cairn.ErrorCode(err); got != tc.err {
					t.Fatalf("error %v, want code %s", err, tc.err)
				}
				// Nothing changed.
				if s := get(t, rt, d, tc.name); s.Version != before.Version || string(s.Value) != string(before.Value) {
					t.Errorf("after a failed patch: %s v%d, want %s v%d", s.Value, s.Version, before.Value, before.Version)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, string(c.Value), tc.want) {
				t.Errorf("got %s, want %s", c.Value, tc.want)
			}
			checkPatch(t, tc.doc, c)
		})
	}
}

func TestVersions(t *testing.T) {
	dir := t.TempDir()
	rt := open(t, dir)
	d := jsonstate.New("state")
	d.Initial = json.RawMessage(`{ "count": 0 }`)

	s := get(t, rt, d, "v")
	if s.Version != 0 || string(s.Value) != `{"count":0}` {
		t.Errorf("new document: %s v%d, want the canonical Initial at v0", s.Value, s.Version)
	}
	c := mustApply(t, rt, d, "v", merge, `{"count":1,"user":{"name":"ann"}}`)
	if c.Version != 1 || !c.Changed || string(c.Patch) != `{"count":1,"user":{"name":"ann"}}` {
		t.Errorf("first change: %+v", c)
	}
	c = mustApply(t, rt, d, "v", patch, `[{"op":"replace","path":"/count","value":2}]`)
	if c.Version != 2 || string(c.Patch) != `{"count":2}` {
		t.Errorf("JSON patch: v%d patch %s, want v2 {\"count\":2}", c.Version, c.Patch)
	}
	// A change that changes nothing writes nothing.
	c = mustApply(t, rt, d, "v", replace, `{"user": {"name": "ann"}, "count": 2}`)
	if c.Changed || c.Version != 2 || string(c.Patch) != `{}` {
		t.Errorf("no-op Replace: %+v, want unchanged at v2 with patch {}", c)
	}
	c = mustApply(t, rt, d, "v", replace, `{"count":3}`)
	if c.Version != 3 || string(c.Patch) != `{"count":3,"user":null}` {
		t.Errorf("Replace: v%d patch %s", c.Version, c.Patch)
	}
	// A value a merge patch cannot reach: send the whole value.
	c = mustApply(t, rt, d, "v", replace, `{"count":3,"user":null}`)
	if c.Version != 4 || c.Patch != nil {
		t.Errorf("Replace with a null member: v%d patch %s, want v4 and no patch", c.Version, c.Patch)
	}
	// A failing turn keeps nothing.
	err := in(t, rt, "v", func(st *cairn.State) error {
		if _, err := d.Replace(st, json.RawMessage(`"gone"`)); err != nil {
			return err
		}
		return errors.New("handler failed")
	})
	if err == nil {
		t.Fatal("failing turn succeeded")
	}

	// Versions survive a restart, and go on from there.
	closeRuntime(t, rt)
	rt = open(t, dir)
	s = get(t, rt, d, "v")
	if s.Version != 4 || string(s.Value) != `{"count":3,"user":null}` {
		t.Errorf("after restart: %s v%d, want v4", s.Value, s.Version)
	}
	c = mustApply(t, rt, d, "v", merge, `{"count":5}`)
	if c.Version != 5 {
		t.Errorf("first change after restart: v%d, want 5", c.Version)
	}
	// Another Doc of the same object is separate.
	other := jsonstate.New("other")
	if s := get(t, rt, other, "v"); s.Version != 0 || string(s.Value) != "null" {
		t.Errorf("second document: %s v%d, want null v0", s.Value, s.Version)
	}
}

func TestLimitsAndInvalid(t *testing.T) {
	rt := open(t, t.TempDir())
	d := jsonstate.New("state")
	d.MaxBytes = 64
	start := mustApply(t, rt, d, "l", replace, `{"a":[1,2,3]}`)
	big := `"` + strings.Repeat("x", 70) + `"`
	for _, tc := range []struct {
		name string
		o    op
		arg  string
		code cairn.Code
	}{
		{"replace not JSON", replace, `{"a":`, cairn.Invalid},
		{"replace two values", replace, `1 2`, cairn.Invalid},
		{"replace empty", replace, ``, cairn.Invalid},
		{"replace too large", replace, big, cairn.TooLarge},
		{"merge not JSON", merge, `nope`, cairn.Invalid},
		{"merge too large input", merge, `{"b":` + big + `}`, cairn.TooLarge},
		{"merge result too large", merge, `{"b":"` + strings.Repeat("y", 50) + `"}`, cairn.TooLarge},
		{"patch too large", patch, `[{"op":"add","path":"/b","value":` + big + `}]`, cairn.TooLarge},
		{"patch copies", patch, `[{"op":"copy","from":"/a","path":"/b"},{"op":"copy","from":"/a","path":"/c"},{"op":"copy","from":"/a","path":"/d"},{"op":"copy","from":"/a","path":"/e"},{"op":"copy","from":"/a","path":"/f"},{"op":"copy","from":"/a","path":"/g"},{"op":"copy","from":"/a","path":"/h"}]`, cairn.TooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply(t, rt, d, "l", tc.o, tc.arg)
			if got := cairn.ErrorCode(err); got != tc.code {
				t.Errorf("error %v, want code %s", err, tc.code)
			}
			if s := get(t, rt, d, "l"); s.Version != start.Version || string(s.Value) != string(start.Value) {
				t.Errorf("after the error: %s v%d, want %s v%d", s.Value, s.Version, start.Value, start.Version)
			}
		})
	}
	noKey := &jsonstate.Doc{MaxBytes: 10}
	if err := in(t, rt, "l", func(st *cairn.State) error { _, err := noKey.Get(st); return err }); cairn.ErrorCode(err) != cairn.Invalid {
		t.Errorf("Doc without a key: %v, want Invalid", err)
	}
}

func TestCanonical(t *testing.T) {
	rt := open(t, t.TempDir())
	d := jsonstate.New("state")
	c := mustApply(t, rt, d, "c", replace, " {\"b\": 1.50, \"a\": \"<&>\", \"n\": 12345678901234567890} ")
	if want := `{"a":"<&>","b":1.50,"n":12345678901234567890}`; string(c.Value) != want {
		t.Errorf("stored %s, want %s (sorted, compact, numbers as written, no HTML escapes)", c.Value, want)
	}
}

// Diff's patch, when there is one, turns old into new; when there is
// none, new has a null member that differs from old.
var diffCases = []struct {
	old, new string
	patch    string // "" if none exists
}{
	{`{"a":1}`, `{"a":1}`, `{}`},
	{`{"a":1}`, `{"a":2}`, `{"a":2}`},
	{`{"a":1,"b":2}`, `{"b":2}`, `{"a":null}`},
	{`{"a":{"x":1,"y":2}}`, `{"a":{"x":1,"y":3}}`, `{"a":{"y":3}}`},
	{`{"a":[1,2]}`, `{"a":[1,2,3]}`, `{"a":[1,2,3]}`},
	{`{"a":[1,{"k":null}]}`, `{"a":[{"k":null}]}`, `{"a":[{"k":null}]}`},
	{`{"a":1}`, `{"a":1,"b":{"c":{}}}`, `{"b":{"c":{}}}`},
	{`{"a":1}`, `{"a":null}`, ``},
	{`{"a":1}`, `{"b":{"c":null}}`, ``},
	{`{"a":null,"b":1}`, `{"a":null,"b":2}`, `{"b":2}`},
	{`[1]`, `{"a":1}`, `{"a":1}`},
	{`[1]`, `{"a":null}`, ``},
	{`{"a":1}`, `[1]`, `[1]`},
	{`{"a":1}`, `null`, `null`},
	{`null`, `{"a":1}`, `{"a":1}`},
	{`"x"`, `"x"`, `"x"`},
	{`{"a":1}`, `{"a":1.0}`, `{"a":1.0}`},
}

func TestDiff(t *testing.T) {
	for _, tc := range diffCases {
		p, ok, err := jsonstate.Diff(json.RawMessage(tc.old), json.RawMessage(tc.new))
		if err != nil {
			t.Fatalf("Diff(%s, %s): %v", tc.old, tc.new, err)
		}
		if tc.patch == "" {
			if ok {
				t.Errorf("Diff(%s, %s) = %s, want none", tc.old, tc.new, p)
			}
			continue
		}
		if !ok || string(p) != tc.patch {
			t.Errorf("Diff(%s, %s) = %s, %v; want %s", tc.old, tc.new, p, ok, tc.patch)
			continue
		}
		got, err := jsonstate.Merge(json.RawMessage(tc.old), p)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, string(got), tc.new) {
			t.Errorf("Merge(%s, Diff) = %s, want %s", tc.old, got, tc.new)
		}
	}
	if _, _, err := jsonstate.Diff(json.RawMessage(`{`), json.RawMessage(`1`)); cairn.ErrorCode(err) != cairn.Invalid {
		t.Errorf("Diff of invalid JSON: %v, want Invalid", err)
	}
}

func FuzzDiff(f *testing.F) {
	for _, tc := range diffCases {
		f.Add(tc.old, tc.new)
	}
	for _, tc := range mergeCases {
		f.Add(tc.target, tc.want)
	}
	f.Fuzz(func(t *testing.T, old, new string) {
		p, ok, err := jsonstate.Diff(json.RawMessage(old), json.RawMessage(new))
		if err != nil {
			if cairn.ErrorCode(err) != cairn.Invalid {
				t.Fatalf("error %v, want Invalid", err)
			}
			return
		}
		if !ok {
			if !strings.Contains(new, "null") {
				t.Fatalf("no patch from %s to %s, which has no null", old, new)
			}
			return
		}
		got, err := jsonstate.Merge(json.RawMessage(old), p)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		json.Unmarshal(got, &a)
		json.Unmarshal([]byte(new), &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("Merge(%s, Diff = %s) = %s, want %s", old, p, got, new)
		}
	})
}
