package discovery_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/internal/testconsul"
)

// latest keeps the last value a watcher reported and wakes waiters.
type latest[T any] struct {
	v  atomic.Pointer[T]
	ch chan struct{}
}

func newLatest[T any]() *latest[T] { return &latest[T]{ch: make(chan struct{}, 1)} }

func (l *latest[T]) set(v T) {
	l.v.Store(&v)
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

func (l *latest[T]) waitFor(t *testing.T, what string, ok func(T) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if p := l.v.Load(); p != nil && ok(*p) {
			return
		}
		select {
		case <-l.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// An instance registered with an HTTP check is passing while its URL answers
// 2xx, and WatchHealthy follows it in and out.
func TestWatchHealthyWithHTTPCheck(t *testing.T) {
	client := testconsul.Shared(t).Client(t)
	var ready atomic.Bool
	ready.Store(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	service := "watched-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ids := newLatest[[]string]()
	done := make(chan struct{})
	go func() {
		defer close(done)
		discovery.WatchHealthy(ctx, client, service, ids.set, discovery.WithWaitTime(2*time.Second))
	}()
	ids.waitFor(t, "the first, empty answer", func(v []string) bool { return len(v) == 0 })

	port := lis.Addr().(*net.TCPAddr).Port
	reg, err := discovery.RegisterRetry(ctx, client, discovery.Registration{
		Service: service, Address: "127.0.0.1", Port: port,
		CheckHTTP: "http://" + lis.Addr().String() + "/readyz", CheckInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ids.waitFor(t, "the instance passing its HTTP check", func(v []string) bool { return strings.Join(v, ",") == reg.ID() })
	ready.Store(false)
	ids.waitFor(t, "the instance failing its HTTP check", func(v []string) bool { return len(v) == 0 })
	_ = reg.Deregister(ctx)
	cancel()
	<-done // WatchHealthy returns when its context ends
}

func TestWatchPrefix(t *testing.T) {
	client := testconsul.Shared(t).Client(t)
	prefix := "watch-test/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pairs := newLatest[api.KVPairs]()
	done := make(chan struct{})
	go func() {
		defer close(done)
		discovery.WatchPrefix(ctx, client, prefix, pairs.set, discovery.WithWaitTime(2*time.Second))
	}()
	defer func() { cancel(); <-done }()
	pairs.waitFor(t, "the first, empty answer", func(v api.KVPairs) bool { return len(v) == 0 })
	if _, err := client.KV().Put(&api.KVPair{Key: prefix + "a", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	pairs.waitFor(t, "the new key", func(v api.KVPairs) bool { return len(v) == 1 && string(v[0].Value) == "1" })
	if _, err := client.KV().DeleteTree(prefix, nil); err != nil {
		t.Fatal(err)
	}
	pairs.waitFor(t, "the key gone", func(v api.KVPairs) bool { return len(v) == 0 })
}

// RegisterRetry keeps trying while Consul is away and gives up only when
// its context ends; a registration no retry can mend fails at once.
func TestRegisterRetry(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	client, err := api.NewClient(&api.Config{Address: dead})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := discovery.RegisterRetry(ctx, client, discovery.Registration{Service: "x", Port: 1},
		discovery.WithBackoff(10*time.Millisecond, 50*time.Millisecond)); err == nil || ctx.Err() == nil {
		t.Fatalf("RegisterRetry = %v with ctx %v, want an error once ctx ended", err, ctx.Err())
	}
	if _, err := discovery.RegisterRetry(context.Background(), client, discovery.Registration{Service: "x"}); err == nil {
		t.Fatal("RegisterRetry retried a registration without a port")
	}
}
