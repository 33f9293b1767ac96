package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// serveSystem is `cairn serve` in a process of its own, as a user runs it
// and as redis-server runs here: the server does not share the Go
// scheduler (and its 2 processors) with the benchmark's clients. Clients
// call the lock table over an RPC WebSocket each.
type serveSystem struct {
	cmd  *exec.Cmd
	url  string
	done chan error
}

// buildCairn builds cmd/cairn from the repository this module sits in,
// into dir, and returns the binary's path.
func buildCairn(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "cairn")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cairn")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/cairn: %w\n%s", err, out)
	}
	return bin, nil
}

// startServe runs bin serve on a free loopback port with its data in dir.
func startServe(ctx context.Context, bin, dir, durability, syncMode string) (*serveSystem, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--addr", addr, "--data", filepath.Join(dir, "data"),
		"--durability", durability, "--sync", syncMode)
	logf, err := os.Create(filepath.Join(dir, "cairn.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &serveSystem{cmd: cmd, url: "http://" + addr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("cairn serve exited: %v (log in %s)", err, logf.Name())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.close()
			return nil, fmt.Errorf("cairn serve not answering after 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *serveSystem) dial(ctx context.Context, i int) (locker, error) {
	return dialCairn(ctx, s.url, clientKind{socket: true}, i)
}

func (s *serveSystem) close() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("cairn serve: %w", err)
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("cairn serve did not stop within 30 s of SIGTERM")
	}
	return nil
}
