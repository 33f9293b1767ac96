package archive_test

import (
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

func TestCheckKey(t *testing.T) {
	for _, k := range []string{"a", "0", "a/b", "a.b-c_d/e", "agents/a1/sessions/s-9f2c/chunks/000001.jsonl.zst",
		strings.Repeat("x", archive.MaxSegment), "a..b", "a."} {
		if err := archive.CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range archivetest.InvalidKeys {
		err := archive.CheckKey(k)
		if cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("CheckKey(%q) = %v, want code %q", k, err, cairn.Invalid)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	for _, p := range []string{"", "a", "a/", "a/b", "a/b/", "s/1"} {
		if err := archive.CheckPrefix(p); err != nil {
			t.Errorf("CheckPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"/", "a//", "//", "../", "A/", "a/./", ".", "a b/"} {
		if err := archive.CheckPrefix(p); cairn.ErrorCode(err) != cairn.Invalid {
			t.Errorf("CheckPrefix(%q) = %v, want code %q", p, err, cairn.Invalid)
		}
	}
}

// FuzzCheckKey checks that every key CheckKey accepts is a clean relative
// path inside its directory, on every OS, and a short S3 object name.
func FuzzCheckKey(f *testing.F) {
	for _, k := range archivetest.InvalidKeys {
		f.Add(k)
	}
	f.Add("a/b/c")
	f.Add("a.b/c-d_e")
	f.Fuzz(func(t *testing.T, key string) {
		if archive.CheckKey(key) != nil {
			if archive.CheckPrefix(key+"/") == nil {
				t.Fatalf("CheckPrefix accepts %q/ but CheckKey refuses %q", key, key)
			}
			return
		}
		if path.Clean(key) != key || path.IsAbs(key) || strings.HasPrefix(key, "..") {
			t.Fatalf("accepted key %q is not a clean relative path", key)
		}
		if !filepath.IsLocal(filepath.FromSlash(key)) {
			t.Fatalf("accepted key %q is not local", key)
		}
		if len(key) > archive.MaxKey || strings.ContainsAny(key, "\\:*?\"<>|\x00 ") {
			t.Fatalf("accepted key %q", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg[0] == '.' || seg[0] == '-' || seg[0] == '_' || len(seg) > archive.MaxSegment {
				t.Fatalf("accepted key %q has segment %q", key, seg)
			}
		}
		if archive.CheckPrefix(key) != nil || archive.CheckPrefix(key+"/") != nil {
			t.Fatalf("CheckPrefix refuses key %q or %q/", key, key)
		}
	})
}
