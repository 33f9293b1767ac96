package http_test

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	cairnhttp "github.com/cairn-dev/cairn/http"
)

// The admin routes the console relies on: search by name prefix, stats,
// sockets, and KV listings with values cut short.

func TestAdminSearchByNamePrefix(t *testing.T) {
	ts := newServer(t, serverOptions{})
	var want []string
	for i := range 12 {
		name := "other-" + string(rune('a'+i))
		if i%3 == 0 {
			name = "team/" + string(rune('a'+i))
			want = append(want, name)
		}
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/"+url.PathEscape(name)+"/k", []byte("v")))
	}
	slices.Sort(want)

	type page struct {
		Objects []cairnhttp.ObjectJSON
		Next    string
		Scanned *int
	}
	var got []string
	after := ""
	for n := 0; ; n++ {
		if n > len(want)+1 {
			t.Fatalf("paging does not end: got %q so far", got)
		}
		r := do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?limit=2&prefix="+url.QueryEscape("team/")+"&after="+after, nil)
		wantOK(t, "search", r)
		var p page
		decode(t, "search", r, &p)
		if p.Scanned == nil {
			t.Fatalf("search answer %s has no scanned count", r.body)
		}
		if len(p.Objects) > 2 {
			t.Fatalf("page %d: got %d objects, want at most 2", n, len(p.Objects))
		}
		for _, o := range p.Objects {
			if !strings.HasPrefix(o.Name, "team/") {
				t.Errorf("search found %q, which does not start with team/", o.Name)
			}
			got = append(got, o.Name)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("search by prefix: got %q, want %q", got, want)
	}

	// An empty prefix matches every object; no prefix keeps the old answer.
	r := do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=&limit=1000", nil)
	var all page
	decode(t, "empty prefix", r, &all)
	if len(all.Objects) != 12 || all.Next != "" || *all.Scanned != 12 {
		t.Errorf("empty prefix: got %d objects, next %q, scanned %d; want 12, \"\", 12", len(all.Objects), all.Next, *all.Scanned)
	}
	r = do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?limit=1000", nil)
	if strings.Contains(string(r.body), "scanned") {
		t.Errorf("a listing without prefix changed shape: %s", r.body)
	}
	r = do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=nobody", nil)
	var none page
	decode(t, "no match", r, &none)
	if none.Objects == nil || len(none.Objects) != 0 || none.Next != "" {
		t.Errorf("no match: got %s, want an empty list and no next", r.body)
	}
	wantError(t, "bad limit", do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=a&limit=0", nil), 400, "invalid")
}

// The search reads the catalog's name index: names compare as bytes, the
// prefix is not a pattern, and next is a cursor to go on from.
func TestAdminSearchEdgeCases(t *testing.T) {
	ts := newServer(t, serverOptions{})
	names := []string{"a", "a%", "a%b", "a_c", "abc", "A", "日本", "日本語", "日", "é", "e\u0301", "🙂", "z"}
	for _, name := range names {
		wantOK(t, "put "+name, do(t, "PUT", ts.url+"/v1/objects/kv/"+url.PathEscape(name)+"/k", []byte("v")))
	}
	type page struct {
		Objects []cairnhttp.ObjectJSON
		Next    string
		Scanned *int
	}
	// search follows next to the end, limit names a page, and returns the
	// names found in order.
	search := func(prefix string, limit int) []string {
		t.Helper()
		var got []string
		after := ""
		for n := 0; ; n++ {
			if n > len(names)+1 {
				t.Fatalf("prefix %q: paging does not end: got %q so far", prefix, got)
			}
			r := do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?"+url.Values{
				"prefix": {prefix}, "limit": {strconv.Itoa(limit)}, "after": {after}}.Encode(), nil)
			wantOK(t, "search "+prefix, r)
			var p page
			decode(t, "search", r, &p)
			if p.Objects == nil || p.Scanned == nil {
				t.Fatalf("prefix %q: answer %s lacks objects or scanned", prefix, r.body)
			}
			if len(p.Objects) > limit || (p.Next != "" && len(p.Objects) != limit) {
				t.Fatalf("prefix %q: got %d objects and next %q, limit %d", prefix, len(p.Objects), p.Next, limit)
			}
			for _, o := range p.Objects {
				got = append(got, o.Name)
			}
			if p.Next == "" {
				return got
			}
			after = p.Next
		}
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted) // Go orders strings by bytes, as the catalog does
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"a", []string{"a", "a%", "a%b", "a_c", "abc"}},
		{"a%", []string{"a%", "a%b"}}, // % is no wildcard
		{"a_", []string{"a_c"}},       // nor is _
		{"A", []string{"A"}},          // no case folding
		{"日", []string{"日", "日本", "日本語"}},
		{"日本", []string{"日本", "日本語"}},
		{"\xe6\x97", []string{"日", "日本", "日本語"}}, // part of a character: a byte prefix
		{"e", []string{"e\u0301"}},               // no normalization
		{"\xc3", []string{"é"}},
		{"\xf0\x9f", []string{"🙂"}},
		{"\xff", nil},
		{"a\xff", nil},
		{"\xff\xff", nil},
		{"nobody", nil},
		{"zz", nil},
	} {
		for _, limit := range []int{1, 2, 1000} {
			if got := search(c.prefix, limit); !slices.Equal(got, c.want) {
				t.Errorf("prefix %q, limit %d: got %q, want %q", c.prefix, limit, got, c.want)
			}
		}
	}

	// A full page whose matches end there says so: no next.
	r := do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=a%25&limit=2", nil)
	var p page
	decode(t, "exact page", r, &p)
	if len(p.Objects) != 2 || p.Next != "" || *p.Scanned != 2 {
		t.Errorf("two matches, limit 2: got %s, want both, no next, scanned 2", r.body)
	}
	// A cursor of another kind (an ID from the plain listing, another
	// namespace's cursor, garbage) is refused.
	r = do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?limit=1", nil)
	decode(t, "listing", r, &p)
	for _, after := range []string{p.Next, "!!", "YWJj"} {
		wantError(t, "cursor "+after, do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=a&after="+url.QueryEscape(after), nil), 400, "invalid")
	}
	r = do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=&limit=1", nil)
	decode(t, "kv cursor", r, &p)
	if p.Next == "" {
		t.Fatalf("first of %d: no next", len(names))
	}
	wantError(t, "another namespace's cursor", do(t, "GET", ts.url+"/v1/admin/namespaces/session/objects?prefix=&after="+p.Next, nil), 400, "invalid")
	wantOK(t, "own cursor", do(t, "GET", ts.url+"/v1/admin/namespaces/kv/objects?prefix=&after="+p.Next, nil))
}

func TestAdminStats(t *testing.T) {
	ts := newServer(t, serverOptions{})
	read := func() cairnhttp.StatsJSON {
		r := do(t, "GET", ts.url+"/v1/admin/stats", nil)
		wantOK(t, "stats", r)
		var s cairnhttp.StatsJSON
		decode(t, "stats", r, &s)
		return s
	}
	before := read()
	if before.Requests == nil {
		t.Fatalf("stats of a server with metrics: requests is null")
	}
	for i := range 3 {
		wantOK(t, "put", do(t, "PUT", ts.url+"/v1/objects/kv/stats/k"+string(rune('0'+i)), []byte("v")))
	}
	after := read()
	if got := after.Turns - before.Turns; got < 3 {
		t.Errorf("turns grew by %d after 3 writes, want at least 3", got)
	}
	if got := after.Commits - before.Commits; got < 1 {
		t.Errorf("commits grew by %d after 3 writes, want at least 1", got)
	}
	if after.CommitNanos <= before.CommitNanos {
		t.Errorf("commit_nanos did not grow: %d then %d", before.CommitNanos, after.CommitNanos)
	}
	// The 3 writes and the first stats request were answered in between.
	if got := *after.Requests - *before.Requests; got < 4 {
		t.Errorf("requests grew by %d, want at least 4", got)
	}
	if after.Active < 1 || !after.Time.After(before.Time) {
		t.Errorf("stats: active %d, time %v then %v", after.Active, before.Time, after.Time)
	}
	wantError(t, "POST stats", do(t, "POST", ts.url+"/v1/admin/stats", nil), 405, "method_not_allowed")

	noMetrics := newServer(t, serverOptions{tuneSrv: func(s *cairnhttp.Server) { s.Metrics = nil }})
	r := do(t, "GET", noMetrics.url+"/v1/admin/stats", nil)
	wantOK(t, "stats without metrics", r)
	if !strings.Contains(string(r.body), `"requests":null`) {
		t.Errorf("stats without metrics: got %s, want requests null", r.body)
	}
}

func TestAdminSockets(t *testing.T) {
	ts := newServer(t, serverOptions{})
	sockets := func() []cairnhttp.SocketJSON {
		r := do(t, "GET", ts.url+"/v1/admin/objects/room/lobby/sockets", nil)
		wantOK(t, "sockets", r)
		var out struct{ Sockets []cairnhttp.SocketJSON }
		decode(t, "sockets", r, &out)
		if out.Sockets == nil {
			t.Fatalf("sockets: got %s, want a list", r.body)
		}
		return out.Sockets
	}
	if got := sockets(); len(got) != 0 {
		t.Fatalf("sockets of a room nobody joined: %+v", got)
	}
	c := dial(t, ts.url+"/v1/objects/room/lobby/?user=ann", nil)
	read(t, c) // the join announcement: the socket is accepted
	got := sockets()
	if len(got) != 1 || got[0].ID == "" || !slices.Contains(got[0].Tags, "user:ann") {
		t.Fatalf("sockets: got %+v, want one tagged user:ann", got)
	}
	c.CloseNow()
	waitFor(t, "the socket to be gone", func() bool { return len(sockets()) == 0 })
	wantError(t, "POST sockets", do(t, "POST", ts.url+"/v1/admin/objects/room/lobby/sockets", nil), 405, "method_not_allowed")
}

func TestAdminKVValueBytes(t *testing.T) {
	ts := newServer(t, serverOptions{})
	obj := ts.url + "/v1/objects/kv/cut/"
	long := strings.Repeat("é", 100) // 200 bytes, 2 per character
	bin := []byte{0xff, 0xfe, 'a', 'b', 'c', 0x00}
	wantOK(t, "put long", do(t, "PUT", obj+"long", []byte(long)))
	wantOK(t, "put short", do(t, "PUT", obj+"short", []byte("hi")))
	wantOK(t, "put bin", do(t, "PUT", obj+"bin", bin))

	type entry struct {
		Key, Value, Encoding string
		Size                 *int
		Truncated            bool
	}
	list := func(q string) map[string]entry {
		r := do(t, "GET", ts.url+"/v1/admin/objects/kv/cut/kv?"+q, nil)
		wantOK(t, "list "+q, r)
		var out struct{ Entries []entry }
		decode(t, "list", r, &out)
		m := map[string]entry{}
		for _, e := range out.Entries {
			m[e.Key] = e
		}
		return m
	}
	es := list("value_bytes=11")
	if e := es["long"]; !e.Truncated || *e.Size != 200 || e.Value != strings.Repeat("é", 5) || !utf8.ValidString(e.Value) {
		t.Errorf("long value cut to 11 bytes: got %+v, want 5 characters (10 bytes), truncated, size 200", e)
	}
	if e := es["short"]; e.Truncated || *e.Size != 2 || e.Value != "hi" {
		t.Errorf("short value: got %+v, want it whole", e)
	}
	if e := es["bin"]; e.Encoding != "base64" || e.Truncated || *e.Size != 6 {
		t.Errorf("binary value under the cut: got %+v, want base64, whole, size 6", e)
	}
	// Cut to 5 bytes, what is left ("\xff\xfeabc") is still binary.
	if e := list("value_bytes=5")["bin"]; e.Encoding != "base64" || !e.Truncated || *e.Size != 6 {
		t.Errorf("binary value: got %+v, want base64, truncated, size 6", e)
	} else if b, _ := base64.StdEncoding.DecodeString(e.Value); string(b) != string(bin[:5]) {
		t.Errorf("binary value cut: got %q, want %q", b, bin[:5])
	}
	if e := list("value_bytes=0&prefix=l")["long"]; e.Value != "" || *e.Size != 200 || !e.Truncated {
		t.Errorf("value_bytes=0: got %+v, want no value, size 200", e)
	}
	// Without value_bytes the listing is as before: whole values, no size.
	if e := list("")["long"]; e.Value != long || e.Size != nil {
		t.Errorf("listing without value_bytes: got %+v, want the whole value and no size", e)
	}
	wantError(t, "bad value_bytes", do(t, "GET", ts.url+"/v1/admin/objects/kv/cut/kv?value_bytes=-1", nil), 400, "invalid")
}
