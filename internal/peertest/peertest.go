// Package peertest finds the peers that .ci/setup.d installs for tests
// (npm packages, a SeaweedFS binary, Chromium) and decides what a test does
// when one is missing: skip on a developer's machine, fail in CI, where
// .ci/run sets CAIRN_REQUIRE_PEERS=1 after installing them all.
package peertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Required reports whether missing peers fail tests (CAIRN_REQUIRE_PEERS=1).
func Required() bool { return os.Getenv("CAIRN_REQUIRE_PEERS") == "1" }

// Missing ends the test because a peer is missing: t.Fatalf when peers are
// required, t.Skipf otherwise. why says what is missing and how to get it.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if Required() {
		tb.Fatalf("peer missing (CAIRN_REQUIRE_PEERS=1): "+format, args...)
	}
	tb.Skipf("peer missing: "+format, args...)
}

// Cache returns the directory .ci/setup.d installs peer name into:
// $CAIRN_CACHE/name, default $XDG_CACHE_HOME/cairn/name or
// ~/.cache/cairn/name.
func Cache(name string) string {
	if d := os.Getenv("CAIRN_CACHE"); d != "" {
		return filepath.Join(d, name)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "cairn", name)
}

// Node returns the path of node, or ends the test (see Missing).
func Node(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		Missing(tb, "node is not on PATH")
	}
	return p
}

// NodeModules returns Cache(name)/node_modules after checking that each
// package is installed there, or ends the test (see Missing). The script
// .ci/setup.d installs them with npm.
func NodeModules(tb testing.TB, name string, packages ...string) string {
	tb.Helper()
	dir := filepath.Join(Cache(name), "node_modules")
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(dir, p, "package.json")); err != nil {
			Missing(tb, "npm package %s is not installed in %s (run the script for %q in .ci/setup.d)", p, dir, name)
		}
	}
	return dir
}
