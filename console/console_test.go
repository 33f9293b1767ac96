package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/console"
)

func get(tb testing.TB, h http.Handler, method, target string, hdr ...string) *http.Response {
	tb.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func TestHandlerHeaders(t *testing.T) {
	h := console.Handler()
	for _, c := range []struct {
		target, ctype string
		status        int
	}{
		{"/", "text/html; charset=utf-8", 200},
		{"/console/style.css", "text/css; charset=utf-8", 200},
		{"/console/js/app.js", "text/javascript; charset=utf-8", 200},
		{"/console/icon.svg", "image/svg+xml", 200},
		{"/console/nope.js", "", 404},
		{"/console/index.html", "", 404}, // the page lives at "/" only
		{"/console/", "", 404},
	} {
		resp := get(t, h, "GET", c.target)
		if resp.StatusCode != c.status {
			t.Errorf("GET %s: got status %d, want %d", c.target, resp.StatusCode, c.status)
		}
		if c.ctype != "" && resp.Header.Get("Content-Type") != c.ctype {
			t.Errorf("GET %s: got Content-Type %q, want %q", c.target, resp.Header.Get("Content-Type"), c.ctype)
		}
		// Every answer, 404s included, carries the policy.
		for name, want := range map[string]string{
			"Content-Security-Policy": console.CSP,
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("GET %s: %s is %q, want %q", c.target, name, got, want)
			}
		}
	}
	for _, want := range []string{"default-src 'self'", "script-src 'self';", "frame-ancestors 'none'", "object-src 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(console.CSP, want) {
			t.Errorf("CSP %q lacks %q", console.CSP, want)
		}
	}
	if strings.Contains(console.CSP, "unsafe-") || strings.Contains(console.CSP, "http") || strings.Contains(console.CSP, "*") {
		t.Errorf("CSP %q allows unsafe sources or other origins", console.CSP)
	}

	resp := get(t, h, "GET", "/console/js/app.js")
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("asset: ETag %q, Cache-Control %q; want an ETag and no-cache", etag, resp.Header.Get("Cache-Control"))
	}
	if r := get(t, h, "GET", "/console/js/app.js", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation with the ETag: got %d, want 304", r.StatusCode)
	}
	if r := get(t, h, "HEAD", "/"); r.StatusCode != 200 {
		t.Errorf("HEAD /: got %d, want 200", r.StatusCode)
	}
	if r := get(t, h, "POST", "/"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: got %d, want 405", r.StatusCode)
	}
}

// The pages must never turn data into markup or code, nor load anything
// from elsewhere. The CSP (Trusted Types) enforces the first in the
// browser; this catches it before a browser runs.
func TestAssetsUseNoHTMLSinksNorOtherOrigins(t *testing.T) {
	assets := os.DirFS("assets")
	sinks := regexp.MustCompile(`\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\s*\(|javascript:|setAttribute\(\s*['"]on|\.srcdoc|createContextualFragment|DOMParser`)
	urls := regexp.MustCompile(`(?i)\b(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	n := 0
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		text := string(b)
		n++
		if strings.HasSuffix(p, ".js") {
			if m := sinks.FindString(text); m != "" {
				t.Errorf("%s uses %q: build the DOM with text nodes", p, m)
			}
			// Imports resolve to embedded modules.
			for _, m := range regexp.MustCompile(`(?m)^import .* from '([^']+)';`).FindAllStringSubmatch(text, -1) {
				if _, err := fs.Stat(assets, path.Join(path.Dir(p), m[1])); err != nil {
					t.Errorf("%s imports %s, which is not embedded", p, m[1])
				}
			}
		}
		for _, u := range urls.FindAllString(text, -1) {
			if u != "http://www.w3.org" { // the SVG namespace, a name, not a request
				t.Errorf("%s refers to another origin: %s", p, u)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("found %d assets; the walk is broken", n)
	}

	index, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	page := string(index)
	for _, m := range regexp.MustCompile(`<script\b[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(m, `src="/console/`) {
			t.Errorf("index.html has an inline script or one from elsewhere: %s", m)
		}
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|<style`).FindString(page); m != "" {
		t.Errorf("index.html has inline handlers or styles: %q", m)
	}
	h := console.Handler()
	for _, m := range regexp.MustCompile(`(?:src|href)="(/console/[^"]+)"`).FindAllStringSubmatch(page, -1) {
		if r := get(t, h, "GET", m[1]); r.StatusCode != 200 {
			t.Errorf("index.html refers to %s, which answers %d", m[1], r.StatusCode)
		}
	}
	resp := get(t, h, "GET", "/")
	b, _ := io.ReadAll(resp.Body)
	if string(b) != page {
		t.Errorf("GET / does not serve index.html")
	}
}
