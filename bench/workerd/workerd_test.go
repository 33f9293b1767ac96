package workerd

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/peertest"
	"github.com/cairn-dev/cairn/internal/procgroup"
)

// TestPeer runs the peer where miniflare is already installed (cairn bench
// --workerd installs it; tests do not reach the npm registry).
func TestPeer(t *testing.T) {
	dir, err := DefaultDir()
	if err != nil {
		peertest.Missing(t, "%v", err)
	}
	if Installed(dir) == "" {
		peertest.Missing(t, "miniflare 4 not installed in %s (run cairn bench --workerd once, or .ci/setup.d/10-workerd.sh)", dir)
	}
	peertest.Node(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := Start(ctx, dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	do := func(method, path, body string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(p.URL, "/")+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: HTTP %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
	do("POST", "/put?session=t", "value")
	if got := do("GET", "/get?session=t", ""); got != "value" {
		t.Errorf("get = %q, want %q", got, "value")
	}
	if got := do("POST", "/chat?session=t", `{"text":"hi"}`); !strings.Contains(got, `"echo: hi"`) {
		t.Errorf("chat = %q, want the echo", got)
	}

	pid, data := p.PID(), p.dataDir
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("data directory %s still there after Close (%v)", data, err)
	}
	if procgroup.Alive(pid) {
		t.Errorf("process group %d still alive after Close", pid)
	}
}

func TestTailBuffer(t *testing.T) {
	var tb tailBuffer
	if got := tb.String(); got != "(no output)" {
		t.Errorf("empty tail = %q", got)
	}
	tb.Write([]byte(strings.Repeat("a", 3000)))
	tb.Write([]byte("end\n"))
	got := tb.String()
	if len(got) != 2047 || !strings.HasSuffix(got, "aend") {
		t.Errorf("tail has %d bytes ending %q; want 2047 (2048 less the trimmed newline) ending in aend", len(got), got[len(got)-8:])
	}
}
