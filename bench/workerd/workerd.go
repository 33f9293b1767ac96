// Package workerd runs the peer `cairn bench` measures cairn against:
// Cloudflare's workerd runtime, through the miniflare npm package, serving
// worker.mjs (the same workloads as cairn's session class, as one
// SQLite-backed Durable Object class) with objects persisted to disk.
//
// worker.mjs and run.mjs are the project's peer definition (also in
// shared/peers/workerd); they are embedded here so that the binary is all a
// bench needs besides Node.js and the npm registry.
package workerd

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/internal/procgroup"
)

var (
	//go:embed run.mjs
	runMJS []byte
	//go:embed worker.mjs
	workerMJS []byte
)

// Package is the npm package installed; it brings the workerd binary
// (@cloudflare/workerd-linux-64 and its kin).
const Package = "miniflare@4"

// DefaultDir is where miniflare is installed unless told otherwise:
// $CAIRN_CACHE/workerd if CAIRN_CACHE is set (the directory .ci/setup.d
// installs the test peers into), else $XDG_CACHE_HOME/cairn/workerd,
// usually ~/.cache/cairn/workerd.
func DefaultDir() (string, error) {
	if d := os.Getenv("CAIRN_CACHE"); d != "" {
		return filepath.Join(d, "workerd"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "cairn", "workerd"), nil
}

// Installed returns the version of miniflare installed in dir, or "" if
// none of major version 4 is.
func Installed(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "miniflare", "package.json"))
	if err != nil {
		return ""
	}
	var p struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &p) != nil || !strings.HasPrefix(p.Version, "4.") {
		return ""
	}
	return p.Version
}

// Install installs miniflare into dir with npm, unless it is there already,
// and returns its version. npm's output goes to log.
func Install(ctx context.Context, dir string, log io.Writer) (string, error) {
	if v := Installed(dir); v != "" {
		return v, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", errors.New("npm not found on PATH: install Node.js 18 or later with npm")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	pkg := filepath.Join(dir, "package.json")
	if _, err := os.Stat(pkg); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(pkg, []byte(`{"private": true, "description": "the workerd peer of cairn bench"}`+"\n"), 0o644); err != nil {
			return "", err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", Package)
	cmd.Dir = dir
	var tail tailBuffer
	cmd.Stdout = io.MultiWriter(log, &tail)
	cmd.Stderr = io.MultiWriter(log, &tail)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm install %s in %s: %w: %s", Package, dir, err, tail.String())
	}
	v := Installed(dir)
	if v == "" {
		return "", fmt.Errorf("npm install %s in %s: miniflare 4 still not found", Package, dir)
	}
	return v, nil
}

// Peer is a running workerd serving worker.mjs.
type Peer struct {
	// URL is where the peer listens, e.g. http://127.0.0.1:40123/.
	URL string
	// Version is miniflare's version.
	Version string

	cmd     *exec.Cmd
	dataDir string
	exited  chan struct{}
	tail    *tailBuffer
	once    sync.Once
	err     error
}

// Start installs miniflare in dir if needed, then runs worker.mjs in
// workerd on a free loopback port with its objects in a new temporary
// directory, and returns once it answers. Output of npm, node and workerd
// goes to log. Close stops it and removes its data.
func Start(ctx context.Context, dir string, log io.Writer) (*Peer, error) {
	version, err := Install(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("node"); err != nil {
		return nil, errors.New("node not found on PATH: install Node.js 18 or later")
	}
	// Written at every start, so that the embedded definition is the one run.
	for name, b := range map[string][]byte{"run.mjs": runMJS, "worker.mjs": workerMJS} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	dataDir, err := os.MkdirTemp("", "cairn-bench-workerd-")
	if err != nil {
		return nil, err
	}
	// Port 0: workerd picks a free port and run.mjs prints it.
	cmd := exec.Command("node", "run.mjs", "0", dataDir)
	cmd.Dir = dir
	procgroup.Lead(cmd) // miniflare starts workerd as a child: stop both
	p := &Peer{Version: version, cmd: cmd, dataDir: dataDir, exited: make(chan struct{}), tail: &tailBuffer{}}
	cmd.Stderr = io.MultiWriter(log, p.tail)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dataDir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("start node: %w", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "ready "); ok {
				select {
				case ready <- strings.TrimSpace(u):
				default:
				}
				continue
			}
			fmt.Fprintln(log, line)
			p.tail.Write([]byte(line + "\n"))
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(p.exited)
	}()
	timer := time.NewTimer(2 * time.Minute)
	defer timer.Stop()
	select {
	case p.URL = <-ready:
		return p, nil
	case <-p.exited:
		p.Close()
		return nil, fmt.Errorf("workerd exited before it was ready: %s", p.tail.String())
	case <-timer.C:
		p.Close()
		return nil, fmt.Errorf("workerd not ready after 2 minutes: %s", p.tail.String())
	case <-ctx.Done():
		p.Close()
		return nil, ctx.Err()
	}
}

// PID is the process ID of node, the leader of the process group that
// holds node and workerd.
func (p *Peer) PID() int { return p.cmd.Process.Pid }

// Close stops node and workerd (SIGTERM, then SIGKILL after 5 s) and
// removes the peer's data.
func (p *Peer) Close() error {
	p.once.Do(func() {
		procgroup.Signal(p.cmd, false)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			procgroup.Signal(p.cmd, true)
			<-p.exited
		}
		// workerd may outlive node for a moment; make sure the group is gone
		// before the next measurement starts.
		procgroup.Signal(p.cmd, true)
		for deadline := time.Now().Add(5 * time.Second); procgroup.Alive(p.cmd.Process.Pid) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		p.err = os.RemoveAll(p.dataDir)
	})
	return p.err
}

// tailBuffer keeps the last 2 KiB written to it, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = append(t.b[:0], t.b[len(t.b)-2048:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.b))
	if s == "" {
		return "(no output)"
	}
	return s
}
