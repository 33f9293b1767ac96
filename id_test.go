package cairn_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
)

// The tests of this file prove G1: IDs are deterministic, bound to their
// namespace, strictly parsed; and that any key bytes round-trip through KV.

// idNamespaces opens a runtime with namespaces that only compute IDs.
func idNamespaces(tb testing.TB, names ...string) map[string]*cairn.Namespace {
	tb.Helper()
	classes := make(map[string]cairn.Class)
	for _, n := range names {
		classes[n] = (&testClass{}).class()
	}
	rt := newRuntime(tb, "", cairn.Process, classes, nil)
	out := make(map[string]*cairn.Namespace)
	for _, n := range names {
		ns, err := rt.Namespace(n)
		if err != nil {
			tb.Fatal(err)
		}
		out[n] = ns
	}
	return out
}

func mustID(tb testing.TB, ns *cairn.Namespace, name string) cairn.ID {
	tb.Helper()
	id, err := ns.IDFromName(name)
	if err != nil {
		tb.Fatalf("IDFromName(%q): %v", name, err)
	}
	return id
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func TestIDFromName(t *testing.T) {
	names := []string{"agents", "agents2", "a", "ab"}
	one, two := idNamespaces(t, names...), idNamespaces(t, names...)

	// IDs are stored on disk and in the catalog: their derivation must never
	// change, or every existing object is orphaned (G10).
	for _, g := range []struct{ ns, name, id string }{
		{"agents", "alice", "14a3fbf86f8d487b46dc9c23e258f3063f7fd7ac10648670d2625c61cf252a16"},
		{"agents", "名前/../x", "1f314b05a80afa66aee10817af50d520f0bb1d2a0b4e54a3dc1b3d76d7973bb1"},
		{"a", "bc", "417ba2bbe93523e9911c6a996d443d48dfeb68852b4c31f9b098087c6aa2ff73"},
		{"ab", "c", "3d1ad8a315f79a478eaf43f22aad7a922128595f87c70b27d46b292b7bf47330"},
	} {
		if got := mustID(t, one[g.ns], g.name).String(); got != g.id {
			t.Errorf("ID of (%q, %q): got %s, want %s", g.ns, g.name, got, g.id)
		}
	}
	for _, name := range []string{"alice", "bob", "/", "x\x01", strings.Repeat("é", 512)} {
		id := mustID(t, one["agents"], name)
		if again := mustID(t, two["agents"], name); again != id {
			t.Errorf("%q: runtimes disagree: %s and %s", name, id, again)
		}
		s := id.String()
		if len(s) != 64 || !isLowerHex(s) {
			t.Errorf("%q: ID %q is not 64 lowercase hex characters", name, s)
		}
		if id.Unique() || id.IsZero() {
			t.Errorf("%q: named ID has Unique() %v, IsZero() %v; want false, false", name, id.Unique(), id.IsZero())
		}
		if other := mustID(t, one["agents2"], name); other == id {
			t.Errorf("%q: same ID in namespaces agents and agents2", name)
		}
		parsed, err := one["agents"].ParseID(s)
		if err != nil || parsed != id {
			t.Errorf("ParseID(%s): got %v, %v; want the same ID", s, parsed, err)
		}
	}
	// The encoding is unambiguous: no concatenation collides.
	if mustID(t, one["a"], "bc") == mustID(t, one["ab"], "c") {
		t.Error("(a, bc) and (ab, c) have the same ID")
	}
	stub := stubFor(t, one["agents"], "alice")
	if stub.ID() != mustID(t, one["agents"], "alice") || stub.Name() != "alice" {
		t.Errorf("GetByName: got stub %s %q", stub.ID(), stub.Name())
	}
}

func TestParseIDRejects(t *testing.T) {
	nss := idNamespaces(t, "agents", "other")
	ns := nss["agents"]
	valid := mustID(t, ns, "alice").String()
	unique := ns.NewUniqueID().String()
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
		return string(b)
	}
	for _, tc := range []struct{ name, s string }{
		{"other namespace", mustID(t, nss["other"], "alice").String()},
		{"other namespace's unique ID", nss["other"].NewUniqueID().String()},
		{"empty", ""},
		{"63 characters", valid[:63]},
		{"65 characters", valid + "0"},
		{"128 characters", valid + valid},
		{"uppercase", strings.ToUpper(valid)},
		{"one uppercase", upperOne(valid)},
		{"non-hex", valid[:63] + "g"},
		{"space", " " + valid[1:]},
		{"NUL", valid[:63] + "\x00"},
		{"multibyte", valid[:62] + "é"},
		{"identity changed", flip(valid, 0)},
		{"identity of a unique ID changed", flip(unique, 20)},
		{"tag changed", flip(valid, 63)},
		{"zero", strings.Repeat("0", 64)},
	} {
		_, err := ns.ParseID(tc.s)
		wantCode(t, tc.name, err, cairn.Invalid)
		_, err = cairn.ParseIDOf("agents", tc.s)
		wantCode(t, "ParseIDOf: "+tc.name, err, cairn.Invalid)
	}
}

// upperOne turns the first hex letter of s to upper case.
func upperOne(s string) string {
	i := strings.IndexAny(s, "abcdef")
	return s[:i] + strings.ToUpper(s[i:i+1]) + s[i+1:]
}

func TestNewUniqueID(t *testing.T) {
	nss := idNamespaces(t, "agents", "other")
	ns := nss["agents"]
	seen := make(map[cairn.ID]bool)
	for i := 0; i < 1000; i++ {
		id := ns.NewUniqueID()
		if seen[id] {
			t.Fatalf("NewUniqueID returned %s twice", id)
		}
		seen[id] = true
		if !id.Unique() || id.IsZero() {
			t.Errorf("%s: Unique() %v, IsZero() %v; want true, false", id, id.Unique(), id.IsZero())
		}
		parsed, err := ns.ParseID(id.String())
		if err != nil || parsed != id {
			t.Errorf("ParseID(%s): got %v, %v", id, parsed, err)
		}
		if _, err := nss["other"].ParseID(id.String()); err == nil {
			t.Errorf("%s parsed in another namespace", id)
		}
	}
}

// An object addressed by a unique ID works like any other.
func TestUniqueIDObject(t *testing.T) {
	_, ns := newTestRuntime(t, &testClass{}, nil)
	id := ns.NewUniqueID()
	s := ns.Get(id)
	kvPut(t, s, "k", "v")
	wantKV(t, ns.Get(id), "k", "v")
	var name string
	mustCall(t, s, "name", nil, &name)
	if name != "" {
		t.Errorf("State.Name() of a unique object: got %q, want \"\"", name)
	}
	infos, err := ns.Objects(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].ID != id {
		t.Errorf("Objects: got %+v, want the unique object", infos)
	}
}

func FuzzParseID(f *testing.F) {
	nss := idNamespaces(f, "agents", "other")
	ns := nss["agents"]
	valid := mustID(f, ns, "alice").String()
	for _, s := range []string{
		valid, ns.NewUniqueID().String(), mustID(f, nss["other"], "alice").String(),
		strings.ToUpper(valid), "", "0", strings.Repeat("0", 64), strings.Repeat("f", 64), valid + "0", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ns.ParseID(s)
		if err != nil {
			wantCode(t, "ParseID", err, cairn.Invalid)
			return
		}
		if got := id.String(); got != s {
			t.Errorf("ParseID(%q) accepted an ID that encodes as %q", s, got)
		}
		if id.IsZero() {
			t.Errorf("ParseID(%q) accepted the zero ID", s)
		}
		if _, err := nss["other"].ParseID(s); err == nil {
			t.Errorf("%q parses in two namespaces", s)
		}
	})
}

func FuzzIDFromName(f *testing.F) {
	nss := idNamespaces(f, "agents", "other")
	ns := nss["agents"]
	for _, s := range []string{"alice", "", "\x00", "../../etc/passwd", "\xff", strings.Repeat("a", 1025), strings.Repeat("é", 512), "a\u2028b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		id, err := ns.IDFromName(name)
		valid := len(name) >= 1 && len(name) <= cairn.MaxNameLen && utf8.ValidString(name) && !strings.Contains(name, "\x00")
		if !valid {
			if err == nil {
				t.Fatalf("IDFromName(%q) accepted an invalid name", name)
			}
			wantCode(t, "IDFromName", err, cairn.Invalid)
			return
		}
		if err != nil {
			t.Fatalf("IDFromName(%q): %v", name, err)
		}
		if again, _ := ns.IDFromName(name); again != id {
			t.Errorf("IDFromName(%q) is not deterministic", name)
		}
		if id.Unique() {
			t.Errorf("IDFromName(%q) made a unique ID", name)
		}
		if parsed, err := ns.ParseID(id.String()); err != nil || parsed != id {
			t.Errorf("ParseID of %q's ID: %v, %v", name, parsed, err)
		}
		if other, _ := nss["other"].IDFromName(name); other == id {
			t.Errorf("%q has the same ID in two namespaces", name)
		}
	})
}

// FuzzKVKey: any key bytes and value round-trip, or fail with a typed error.
func FuzzKVKey(f *testing.F) {
	_, ns := newTestRuntime(f, &testClass{}, nil)
	s := stubFor(f, ns, "fuzz")
	lim := cairn.DefaultLimits
	for _, k := range []string{"k", "", "\x00", "\xff", "\xff\xff", "a\x00b", "é", "_cairn_kv", "'; DROP TABLE _cairn_kv; --", strings.Repeat("k", lim.MaxKeyBytes), strings.Repeat("k", lim.MaxKeyBytes+1)} {
		f.Add([]byte(k), []byte("v"))
	}
	f.Add([]byte("nil value"), []byte(nil))
	f.Add([]byte("binary"), []byte{0, 0xff, 0})
	f.Fuzz(func(t *testing.T, key, value []byte) {
		k := string(key)
		var putErr error
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			putErr = st.Put(k, value)
			return nil
		})
		switch {
		case len(key) == 0:
			wantCode(t, "Put with an empty key", putErr, cairn.Invalid)
			return
		case len(key) > lim.MaxKeyBytes:
			wantCode(t, "Put with a long key", putErr, cairn.TooLarge)
			return
		case len(value) > lim.MaxValueBytes:
			wantCode(t, "Put with a large value", putErr, cairn.TooLarge)
			return
		case putErr != nil:
			t.Fatalf("Put(%q): %v", key, putErr)
		}
		runIn(t, s, func(ctx context.Context, st *cairn.State) error {
			got, ok, err := st.Get(k)
			if err != nil || !ok || !bytes.Equal(got, value) {
				t.Errorf("Get(%q): got %q, %v, %v; want %q", key, got, ok, err, value)
			}
			// The key is the smallest with itself as prefix (every other
			// such key is longer), and the first at or after itself.
			for _, o := range []cairn.ListOptions{{Prefix: k, Limit: 1}, {Start: k, Limit: 1}} {
				es, err := st.List(o)
				if err != nil || len(es) != 1 || es[0].Key != k || !bytes.Equal(es[0].Value, value) {
					t.Errorf("List(%+v): got %q, %v; want the key itself", o, keysOf(es), err)
				}
			}
			es, err := st.List(cairn.ListOptions{Prefix: k, Reverse: true, Limit: 1})
			if err != nil || len(es) != 1 || !strings.HasPrefix(es[0].Key, k) {
				t.Errorf("List(prefix %q, reverse): got %q, %v", key, keysOf(es), err)
			}
			return nil
		})
	})
}
