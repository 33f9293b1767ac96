package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisSystem is a redis-server started for the run, with the append-only
// file on: fsync "always" (every write is on disk before its answer, as
// cairn's disk durability) or "everysec" (up to a second of writes lost
// on power failure).
type redisSystem struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// startRedis starts redis-server, or returns a note saying why not.
func startRedis(ctx context.Context, bin, dir, fsync string, clients int) (system, string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Sprintf("%s not found (apt-get install redis-server)", bin), nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := splitHostPort(addr)
	cmd := exec.Command(path,
		"--bind", "127.0.0.1", "--port", port, "--dir", dir, "--save", "",
		"--appendonly", "yes", "--appendfsync", fsync,
		"--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
		"--maxclients", strconv.Itoa(clients+64))
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	s := &redisSystem{cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return s, "", nil
		}
		if time.Now().After(deadline) {
			s.close()
			return nil, "", fmt.Errorf("redis-server not answering after 10 s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisSystem) close() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	return nil
}

func (s *redisSystem) dial(ctx context.Context, i int) (locker, error) {
	c := redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 1, MaxRetries: -1})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	return &redisLocker{c: c, owner: fmt.Sprintf("client-%d-", i)}, nil
}

// unlock deletes the key only if it still holds this client's value: the
// usual compare-and-delete release of a Redis lock.
var unlock = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

type redisLocker struct {
	c     *redis.Client
	owner string
	n     int64
}

func (l *redisLocker) close() error { return l.c.Close() }

// roundTrip takes the lock with SET NX PX 30000 and a value unique to this
// acquisition, retrying at once while it is held (up to 10 s), then
// releases it with the compare-and-delete script (EVALSHA, EVAL the first
// time).
func (l *redisLocker) roundTrip(ctx context.Context, lock string) error {
	l.n++
	val := l.owner + strconv.FormatInt(l.n, 10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := l.c.SetNX(ctx, lock, val, 30*time.Second).Result()
		if err != nil {
			return fmt.Errorf("set nx: %w", err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("acquire: not acquired within 10 s")
		}
	}
	n, err := unlock.Run(ctx, l.c, []string{lock}, val).Int()
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if n != 1 {
		return errors.New("release: the lock was not ours any more")
	}
	return nil
}
