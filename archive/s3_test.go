package archive_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/archive/archivetest"
)

// TestS3Fake runs the contract suite on S3 against gofakes3 in process.
func TestS3Fake(t *testing.T) {
	endpoint := archivetest.FakeS3(t)
	archivetest.Run(t, func(t *testing.T) archive.Store { return archivetest.S3Store(t, endpoint) })
}

// TestS3SeaweedFS runs the contract suite on S3 against a SeaweedFS S3
// gateway, a server a user could deploy. It skips without the weed
// binary, unless CAIRN_REQUIRE_PEERS=1 (.ci/run), where it fails.
func TestS3SeaweedFS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a SeaweedFS server")
	}
	endpoint := archivetest.SeaweedFS(t)
	archivetest.Run(t, func(t *testing.T) archive.Store { return archivetest.S3Store(t, endpoint) })
}

func TestNewS3Config(t *testing.T) {
	ctx := t.Context()
	endpoint := archivetest.FakeS3(t)
	ok := archive.S3Config{Endpoint: endpoint, Bucket: "cairn-config", PathStyle: true, AccessKey: "k", SecretKey: "s", Region: "us-east-1"}
	for _, tc := range []struct {
		name string
		edit func(*archive.S3Config)
		code cairn.Code
	}{
		{"no scheme", func(c *archive.S3Config) { c.Endpoint = "127.0.0.1:9000" }, cairn.Invalid},
		{"ftp", func(c *archive.S3Config) { c.Endpoint = "ftp://127.0.0.1" }, cairn.Invalid},
		{"path", func(c *archive.S3Config) { c.Endpoint = endpoint + "/x" }, cairn.Invalid},
		{"userinfo", func(c *archive.S3Config) { c.Endpoint = "http://u:p@127.0.0.1" }, cairn.Invalid},
		{"no bucket", func(c *archive.S3Config) { c.Bucket = "" }, cairn.Invalid},
		{"bad bucket", func(c *archive.S3Config) { c.Bucket = "B_" }, cairn.Invalid},
		{"bad prefix", func(c *archive.S3Config) { c.Prefix = "/x/" }, cairn.Invalid},
		{"long prefix", func(c *archive.S3Config) { c.Prefix = strings.Repeat("p/", archive.MaxPrefix/2) + "p" }, cairn.Invalid},
		{"half credentials", func(c *archive.S3Config) { c.SecretKey = "" }, cairn.Invalid},
		{"missing bucket", func(c *archive.S3Config) {}, cairn.NotFound},
	} {
		cfg := ok
		tc.edit(&cfg)
		if _, err := archive.NewS3(ctx, cfg); cairn.ErrorCode(err) != tc.code {
			t.Errorf("%s: NewS3 error %v, want code %q", tc.name, err, tc.code)
		}
	}
	// CreateBucket makes it; a second NewS3 finds it.
	cfg := ok
	cfg.CreateBucket = true
	for range 2 {
		if _, err := archive.NewS3(ctx, cfg); err != nil {
			t.Fatalf("NewS3 with CreateBucket: %v", err)
		}
	}
	// An unreachable endpoint fails within ctx.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	dead := ok
	dead.Endpoint = "http://127.0.0.1:1"
	if _, err := archive.NewS3(cctx, dead); err == nil {
		t.Fatal("NewS3 on a closed port succeeded")
	}
}

// TestS3Prefix checks that stores with different prefixes in one bucket
// do not see each other's blobs.
func TestS3Prefix(t *testing.T) {
	ctx := t.Context()
	endpoint := archivetest.FakeS3(t)
	a := archivetest.S3Store(t, endpoint)
	b := archivetest.S3Store(t, endpoint)
	if err := a.Put(ctx, "k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "k", []byte("b")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		s    archive.Store
		want string
	}{{a, "a"}, {b, "b"}} {
		got, err := s.s.Get(ctx, "k")
		if err != nil || string(got) != s.want {
			t.Fatalf("Get = %q, %v; want %q", got, err, s.want)
		}
		keys, err := s.s.List(ctx, "")
		if err != nil || len(keys) != 1 {
			t.Fatalf("List = %q, %v; want one key", keys, err)
		}
	}
}

// TestSeaweedFSVersion checks that the setup script builds the version
// the tests expect.
func TestSeaweedFSVersion(t *testing.T) {
	script, err := os.ReadFile("../.ci/setup.d/30-seaweedfs.sh")
	if err != nil {
		t.Fatal(err)
	}
	if want := `version="` + archivetest.SeaweedFSVersion + `"`; !strings.Contains(string(script), want) {
		t.Fatalf("30-seaweedfs.sh does not set %s", want)
	}
}
