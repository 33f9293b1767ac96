package archivetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/archive"
	"github.com/cairn-dev/cairn/internal/peertest"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Bucket is the bucket that S3Store uses.
const Bucket = "cairn-test"

// FakeS3 starts an in-process S3 server (gofakes3, in memory) on
// 127.0.0.1 for the life of tb and returns its endpoint URL. It accepts
// any credentials.
func FakeS3(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	tb.Cleanup(srv.Close)
	return srv.URL
}

var stores atomic.Int64

// S3Store returns an archive.S3 on the server at endpoint (FakeS3,
// SeaweedFS), in Bucket (created if needed) under a prefix no other call
// in this process returns, so that each store starts empty.
func S3Store(tb testing.TB, endpoint string) *archive.S3 {
	tb.Helper()
	prefix := fmt.Sprintf("t%d/s%d", os.Getpid(), stores.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := archive.NewS3(ctx, archive.S3Config{
		Endpoint:     endpoint,
		Bucket:       Bucket,
		Prefix:       prefix,
		Region:       "us-east-1",
		AccessKey:    "cairn",
		SecretKey:    "cairn-secret",
		PathStyle:    true,
		CreateBucket: true,
	})
	if err != nil {
		tb.Fatalf("archive.NewS3 on %s: %v", endpoint, err)
	}
	return s
}

// SeaweedFSVersion is the version of SeaweedFS that
// .ci/setup.d/30-seaweedfs.sh builds (a test checks that they agree).
const SeaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// SeaweedFSBinary returns the weed binary that .ci/setup.d/30-seaweedfs.sh
// built, or ends the test (peertest.Missing).
func SeaweedFSBinary(tb testing.TB) string {
	tb.Helper()
	dir := peertest.Cache("seaweedfs")
	bin := filepath.Join(dir, "weed")
	if _, err := os.Stat(bin); err != nil {
		peertest.Missing(tb, "SeaweedFS binary %s (run .ci/setup.d/30-seaweedfs.sh)", bin)
	}
	if v, _ := os.ReadFile(filepath.Join(dir, "VERSION")); string(bytes.TrimSpace(v)) != SeaweedFSVersion {
		peertest.Missing(tb, "SeaweedFS %s in %s, found version %q (run .ci/setup.d/30-seaweedfs.sh)", SeaweedFSVersion, dir, bytes.TrimSpace(v))
	}
	return bin
}

// SeaweedFS starts a SeaweedFS server (master, volume, filer and S3
// gateway in one process, data in a temporary directory, every port a free
// loopback port) for the life of tb and returns the S3 endpoint URL, once
// the gateway takes a write (about 10 s: the master waits two heartbeats
// before it allocates the first volume) and Bucket exists. It accepts any credentials. Without the binary the
// test ends (see SeaweedFSBinary). At cleanup the server gets SIGTERM, and
// SIGKILL if it has not exited 30 s later.
func SeaweedFS(tb testing.TB) string {
	tb.Helper()
	bin := SeaweedFSBinary(tb)
	dir := tb.TempDir()
	ports := freePorts(tb, 8)
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		tb.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir="+data,
		"-master.port="+p(0), "-master.port.grpc="+p(1),
		"-master.volumeSizeLimitMB=64",
		"-volume.port="+p(2), "-volume.port.grpc="+p(3),
		"-volume.max=16",
		"-volume.preStopSeconds=0",
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5),
		"-filer.localSocket="+filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port="+p(6), "-s3.port.grpc="+p(7),
		"-s3.localSocket="+filepath.Join(dir, "s3.sock"),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.telemetry=false",
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start weed: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	tb.Cleanup(func() {
		stopped := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			tb.Logf("weed did not exit within 30 s of SIGTERM; killed")
		}
		tb.Logf("weed stopped in %v", time.Since(stopped).Round(time.Millisecond))
		if tb.Failed() {
			showLog(tb, filepath.Join(dir, "weed.log"))
		}
	})
	endpoint := "http://127.0.0.1:" + p(6)
	started := time.Now()
	deadline := started.Add(90 * time.Second)
	// The gateway answers before the volume server has joined the
	// master; writes work once it has.
	for {
		select {
		case err := <-exited:
			showLog(tb, filepath.Join(dir, "weed.log"))
			tb.Fatalf("weed exited while starting: %v", err)
		default:
		}
		err := probe(endpoint)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			showLog(tb, filepath.Join(dir, "weed.log"))
			tb.Fatalf("SeaweedFS S3 gateway at %s did not take a write within 90 s: %v", endpoint, err)
		}
		time.Sleep(200 * time.Millisecond) // polling a subprocess; nothing to wait on
	}
	tb.Logf("SeaweedFS S3 gateway took a write at %s after %v", endpoint, time.Since(started).Round(time.Millisecond))
	return endpoint
}

// probe creates Bucket on the server at endpoint if needed, and writes,
// reads and deletes a blob.
func probe(endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := archive.NewS3(ctx, archive.S3Config{
		Endpoint: endpoint, Bucket: Bucket, Prefix: "probe", Region: "us-east-1",
		AccessKey: "cairn", SecretKey: "cairn-secret", PathStyle: true, CreateBucket: true,
	})
	if err != nil {
		return err
	}
	if err := s.Put(ctx, "p", []byte("probe")); err != nil {
		return err
	}
	if _, err := s.Get(ctx, "p"); err != nil {
		return err
	}
	return s.Delete(ctx, "p")
}

func showLog(tb testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 16<<10 {
		b = b[len(b)-16<<10:]
	}
	tb.Logf("weed log (last 16 KiB):\n%s", b)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1, holding all
// of them open until it has them all so that none repeats.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
