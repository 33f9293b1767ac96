package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdSystem is a single-member etcd embedded in this process, listening
// on loopback, with fsync on (its default).
type etcdSystem struct {
	e        *embed.Etcd
	endpoint string
}

func startEtcd(dir string) (*etcdSystem, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop()) // it logs errors on a normal Close
	client, err := freeAddr()
	if err != nil {
		return nil, err
	}
	peer, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cu, pu := url.URL{Scheme: "http", Host: client}, url.URL{Scheme: "http", Host: peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("etcd not ready after 30 s")
	}
	return &etcdSystem{e: e, endpoint: cu.String()}, nil
}

func (s *etcdSystem) close() error {
	s.e.Close()
	return nil
}

// dial returns a client with a gRPC connection and a session (a lease
// kept alive in the background) of its own, as a separate process would
// have.
func (s *etcdSystem) dial(ctx context.Context, i int) (locker, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.endpoint}, DialTimeout: 5 * time.Second, Logger: nopLogger()})
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("session: %w", err)
	}
	return &etcdLocker{c: c, sess: sess}, nil
}

type etcdLocker struct {
	c    *clientv3.Client
	sess *concurrency.Session
}

func (l *etcdLocker) close() error {
	l.sess.Close()
	return l.c.Close()
}

// roundTrip locks with concurrency.Mutex (waiting its turn on a watch, up
// to 10 s) and unlocks.
func (l *etcdLocker) roundTrip(ctx context.Context, lock string) error {
	m := concurrency.NewMutex(l.sess, "/locks/"+lock)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.Lock(lctx); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if err := m.Unlock(ctx); err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	return nil
}

func splitHostPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }

func nopLogger() *zap.Logger { return zap.NewNop() }
