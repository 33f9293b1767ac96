package cairn_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn"
)

func TestDecodeJSON(t *testing.T) {
	type in struct {
		A any `json:"a"`
	}
	for _, c := range []struct {
		body string
		want cairn.Code
	}{
		{`{"a": 9007199254740993}`, ""},
		{`{"b": 1}`, cairn.Invalid},
		{`{"a": 1} {}`, cairn.Invalid},
		{`{"a":`, cairn.Invalid},
		{``, cairn.Invalid},
		{"{\"a\": \"x\xffy\"}", cairn.Invalid}, // not UTF-8: encoding/json would read "x\ufffdy"
	} {
		var v in
		err := cairn.DecodeJSON([]byte(c.body), &v)
		if got := cairn.ErrorCode(err); got != c.want {
			t.Errorf("DecodeJSON(%q): got code %q (%v), want %q", c.body, got, err, c.want)
		}
		if c.want == "" && v.A.(json.Number).String() != "9007199254740993" {
			t.Errorf("DecodeJSON kept %v, want the exact integer", v.A)
		}
	}
}

func TestReadBodyTooLarge(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", 11)))
	r.Body = http.MaxBytesReader(w, r.Body, 10)
	if _, err := cairn.ReadBody(r); cairn.ErrorCode(err) != cairn.TooLarge {
		t.Fatalf("ReadBody over the limit: got %v, want too_large", err)
	}
	r = httptest.NewRequest("POST", "/x?q=1", strings.NewReader("ok"))
	b, err := cairn.ReadBody(r)
	if err != nil || string(b) != "ok" {
		t.Fatalf("ReadBody: got %q, %v", b, err)
	}
	f := cairn.ForwardedRequest(r, b, "a/b")
	if f.URL.Path != "/a/b" || f.URL.RawQuery != "q=1" || f.ContentLength != 2 {
		t.Fatalf("ForwardedRequest: path %q query %q length %d", f.URL.Path, f.URL.RawQuery, f.ContentLength)
	}
}
