// Package console is cairn's web console: a few static pages (plain HTML,
// CSS and ES modules, embedded in the binary, no build step) that show and
// edit what the HTTP API reaches: namespaces and objects with their KV,
// SQL, alarm and sockets, agent sessions (a live chat, approvals of tool
// calls, the session's state and schedules), and the coordination objects. The pages call the API from the browser with the
// admin token the user signs in with; the server side is only this file
// server.
//
// Everything the pages show is untrusted data (keys, values, chat text,
// SQL results): they build the DOM with textContent and never parse HTML,
// and every response of the console carries a Content-Security-Policy that
// allows scripts, styles and connections to the server's own origin only,
// no inline script, and (Trusted Types) no HTML string sinks at all.
//
// cmd/cairn mounts Handler at "GET /{$}" (the page) and "GET " + Prefix
// (its assets), public: the page asks for the token itself.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Prefix is the path the assets are served under; the page itself is "/".
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every console response: the
// server's own origin only, no inline script or style, no plugins, no
// framing, no <base>, and Trusted Types enforced with no policy, so that
// assigning a string to innerHTML (or any HTML sink) throws.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; " +
	"frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the console: the page at "/" and the assets under
// Prefix. Other paths are 404.
func Handler() http.Handler {
	files := map[string]*file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js":
			ctype = "text/javascript; charset=utf-8" // whatever the system's MIME table says
		case ".svg":
			ctype = "image/svg+xml"
		}
		files[strings.TrimPrefix(p, "assets/")] = &file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("console: embedded assets: " + err.Error()) // cannot happen: the FS is compiled in
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := ""
		switch {
		case r.URL.Path == "/":
			name = "index.html"
		case strings.HasPrefix(r.URL.Path, Prefix):
			name = strings.TrimPrefix(r.URL.Path, Prefix)
		}
		f := files[name]
		if f == nil || name == "index.html" && r.URL.Path != "/" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		// Revalidate every time: a new binary serves new assets at once.
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
