package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/console"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// The console is served at "/" by cairn serve, public (it signs in by
// itself), and shadows none of the API's routes.
func TestServeMountsTheConsole(t *testing.T) {
	cfg := testConfig(t)
	secret := "console-test-secret-0123456789"
	cfg.Tokens = []cairnhttp.Token{{Name: "admin", Secret: secret, Admin: true}}
	base := startServer(t, cfg)
	fetch := func(method, path string, auth bool) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	code, hdr, body := fetch("GET", "/", false)
	if code != 200 || !strings.Contains(body, `<script type="module" src="/console/js/app.js">`) {
		t.Fatalf("GET /: got %d %.200q, want the console page", code, body)
	}
	if hdr.Get("Content-Security-Policy") != console.CSP {
		t.Errorf("GET /: CSP %q, want the console's", hdr.Get("Content-Security-Policy"))
	}
	if code, _, _ := fetch("GET", "/console/js/api.js", false); code != 200 {
		t.Errorf("GET /console/js/api.js: got %d, want 200", code)
	}
	for _, c := range []struct {
		method, path string
		auth         bool
		status       int
		body         string
	}{
		{"GET", "/healthz", false, 200, `"ok":true`},
		{"GET", "/metrics", true, 200, "cairn_turns_total"},
		{"GET", "/metrics", false, 401, `"unauthorized"`},
		{"GET", "/v1/admin/namespaces", false, 401, `"unauthorized"`},
		{"GET", "/v1/admin/stats", true, 200, `"turns"`},
		{"GET", "/v1/agents", true, 200, `"agents"`},
		{"GET", "/nothing-here", false, 404, `"not_found"`},
		{"POST", "/", false, 404, `"not_found"`},
	} {
		code, hdr, body := fetch(c.method, c.path, c.auth)
		if code != c.status || !strings.Contains(body, c.body) {
			t.Errorf("%s %s: got %d %.120q, want %d with %s", c.method, c.path, code, body, c.status, c.body)
		}
		if hdr.Get("Content-Security-Policy") != "" {
			t.Errorf("%s %s reached the console", c.method, c.path)
		}
	}
}
