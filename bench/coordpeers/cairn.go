package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

// cairnSystem is cairn as `cairn serve --durability disk` runs it: the
// runtime on SQLite, the coord classes, the HTTP server on loopback.
// Clients call the lock table (namespace "locks", the route /v1/locks) or,
// with objects, the lock namespace (an object per lock), over an RPC
// WebSocket each (socket) or with one HTTP request per call.
type cairnSystem struct {
	eng  *sqlite.Engine
	rt   *cairn.Runtime
	srv  *cairnhttp.Server
	url  string
	kind clientKind
	errc chan error
}

// clientKind is how a cairn client calls: over what, and which locks.
type clientKind struct {
	socket  bool // an RPC WebSocket, else an HTTP request per call
	objects bool // a Lock object per lock, else the lock table
}

func startCairn(dir, durability, syncMode string, kind clientKind, log *slog.Logger) (*cairnSystem, error) {
	level, err := cairn.ParseDurability(durability)
	if err != nil {
		return nil, err
	}
	mode, err := sqlite.ParseSyncMode(syncMode)
	if err != nil {
		return nil, err
	}
	eng, err := sqlite.OpenWith(dir, level, sqlite.Options{Sync: mode})
	if err != nil {
		return nil, err
	}
	rt := cairn.NewRuntime(eng)
	rt.Durability = level
	rt.Logger = log
	for name, class := range coord.Classes() {
		if _, err := rt.Register(name, class); err != nil {
			eng.Close()
			return nil, err
		}
	}
	if err := rt.Open(); err != nil {
		eng.Close()
		return nil, err
	}
	srv := cairnhttp.NewServer(rt)
	srv.Logger = log
	locks, err := coord.NewLocks(rt)
	if err != nil {
		rt.Close(context.Background())
		return nil, err
	}
	for _, p := range coord.LocksRoutes {
		srv.Routes = append(srv.Routes, cairnhttp.Route{Pattern: p, Handler: locks, Namespace: "locks", Name: "locks"})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		rt.Close(context.Background())
		return nil, err
	}
	s := &cairnSystem{eng: eng, rt: rt, srv: srv, url: "http://" + ln.Addr().String(), kind: kind, errc: make(chan error, 1)}
	go func() { s.errc <- srv.Serve(ln) }()
	return s, nil
}

// diag reports the runtime's commits and the engine's syncs over the
// measured time.
func (s *cairnSystem) diag() func() string {
	rt0, sy0 := s.rt.Stats(), s.eng.SyncStats()
	return func() string {
		rt1, sy1 := s.rt.Stats(), s.eng.SyncStats()
		commits := rt1.Commits - rt0.Commits
		if commits == 0 {
			return "no commits"
		}
		out := fmt.Sprintf("%d commits of %.1f turns, %.2fms commit to durable",
			commits, float64(rt1.CommitTurns-rt0.CommitTurns)/float64(commits),
			float64(rt1.CommitNanos-rt0.CommitNanos)/float64(commits)/1e6)
		if b := sy1.Batches - sy0.Batches; b > 0 || sy1.Files > sy0.Files {
			out += fmt.Sprintf("; sync (%s): %d requests, %d batches (%.2fms each), %d syncfs, %d files",
				s.eng.SyncMode(), sy1.Requests-sy0.Requests, b, float64(sy1.Nanos-sy0.Nanos)/float64(max(b, 1))/1e6,
				sy1.Syncfs-sy0.Syncfs, sy1.Files-sy0.Files)
			if d := sy1.DirtyDirect - sy0.DirtyDirect; d > 0 {
				out += fmt.Sprintf(", %d requests synced file by file for dirty page cache", d)
			}
		}
		return out
	}
}

func (s *cairnSystem) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serr := s.srv.Shutdown(ctx)
	cerr := s.rt.Close(ctx)
	<-s.errc
	return errors.Join(serr, cerr)
}

// dial returns a client with one connection of its own, as a separate
// process would have: an RPC WebSocket, or an HTTP keep-alive connection.
func (s *cairnSystem) dial(ctx context.Context, i int) (locker, error) {
	return dialCairn(ctx, s.url, s.kind, i)
}

func dialCairn(ctx context.Context, url string, kind clientKind, i int) (locker, error) {
	owner := fmt.Sprintf("client-%d", i)
	if kind.socket {
		conn, err := cairnhttp.NewClient(url, "").DialRPC(ctx)
		if err != nil {
			return nil, err
		}
		return &cairnSocketLocker{conn: conn, owner: owner, objects: kind.objects}, nil
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	return &cairnLocker{
		hc:      &http.Client{Transport: tr, Timeout: 30 * time.Second},
		url:     url,
		owner:   owner,
		objects: kind.objects,
	}, nil
}

// cairnSocketLocker calls the RPC methods of a lock's object over its
// WebSocket: the lock table's shard, or the lock's own object.
type cairnSocketLocker struct {
	conn    *cairnhttp.RPCConn
	owner   string
	objects bool
}

func (c *cairnSocketLocker) close() error { return c.conn.Close() }

// roundTrip is cairnLocker.roundTrip over the socket.
func (c *cairnSocketLocker) roundTrip(ctx context.Context, lock string) error {
	if c.objects {
		return lockRoundTrip(c.owner, func(method string, in, out any) error {
			return c.conn.Call(ctx, "lock", lock, method, in, out)
		})
	}
	shard := coord.LockShard(lock)
	return lockRoundTrip(c.owner, func(method string, in, out any) error {
		switch a := in.(type) {
		case coord.AcquireArgs:
			in = coord.TableAcquireArgs{Name: lock, AcquireArgs: a}
		case coord.ReleaseArgs:
			in = coord.TableReleaseArgs{Name: lock, ReleaseArgs: a}
		}
		return c.conn.Call(ctx, "locks", shard, method, in, out)
	})
}

type cairnLocker struct {
	hc      *http.Client
	url     string
	owner   string
	objects bool
	body    bytes.Buffer
}

func (c *cairnLocker) close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// roundTrip acquires, waiting in line for up to 10 s, then releases with
// the fencing token: POST /v1/locks/{lock}/acquire and /release, or the
// RPC methods of the lock's object.
func (c *cairnLocker) roundTrip(ctx context.Context, lock string) error {
	return lockRoundTrip(c.owner, func(method string, in, out any) error {
		if c.objects {
			return c.post(ctx, c.url+cairnhttp.ObjectPath("/v1/objects", "lock", lock)+"/rpc/"+method, in, out)
		}
		return c.post(ctx, c.url+"/v1/locks/"+neturl.PathEscape(lock)+"/"+strings.ToLower(method), in, out)
	})
}

// lockRoundTrip acquires and releases a lock as owner, calling its methods
// with call.
func lockRoundTrip(owner string, call func(method string, in, out any) error) error {
	var g coord.AcquireResult
	if err := call("Acquire", coord.AcquireArgs{Owner: owner, TTLMs: 30000, WaitMs: 10000}, &g); err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	var r coord.ReleaseResult
	if err := call("Release", coord.ReleaseArgs{Owner: owner, Token: g.Token}, &r); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if !r.Released {
		return errors.New("release: not released")
	}
	return nil
}

func (c *cairnLocker) post(ctx context.Context, url string, in, out any) error {
	c.body.Reset()
	if err := json.NewEncoder(&c.body).Encode(in); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(c.body.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}
