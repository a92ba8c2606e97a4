package discovery_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
)

func TestMain(m *testing.M) { os.Exit(testconsul.Main(m)) }

// healthServer is a real gRPC server with grpc.health.v1, for Consul to check.
func healthServer(t *testing.T) (*grpc.Server, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return s, l.Addr().(*net.TCPAddr).Port
}

type recordingCC struct {
	resolver.ClientConn
	mu     sync.Mutex
	addrs  []string
	errs   int
	states int
	ch     chan struct{}
}

func (r *recordingCC) UpdateState(s resolver.State) error {
	var a []string
	for _, ep := range s.Endpoints {
		a = append(a, ep.Addresses[0].Addr)
	}
	sort.Strings(a)
	r.mu.Lock()
	r.addrs, r.states = a, r.states+1
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
	return nil
}

func (r *recordingCC) ReportError(error) {
	r.mu.Lock()
	r.errs++
	r.mu.Unlock()
}

// watchErrors counts the resolver's failed Consul queries.
type watchErrors struct{ n atomic.Int64 }

var _ discovery.Observer = (*watchErrors)(nil)

func (w *watchErrors) Instances(string, []discovery.Instance) {}
func (w *watchErrors) WatchOK(string)                         {}
func (w *watchErrors) WatchError(string, error)               { w.n.Add(1) }

func (r *recordingCC) waitAddrs(t *testing.T, want ...string) {
	t.Helper()
	sort.Strings(want)
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		got := strings.Join(r.addrs, ",")
		n := r.states
		r.mu.Unlock()
		if n > 0 && got == strings.Join(want, ",") {
			return
		}
		select {
		case <-r.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("resolver addresses = %q, want %q", got, strings.Join(want, ","))
		}
	}
}

func TestResolverFollowsConsulHealth(t *testing.T) {
	agent := testconsul.New(t) // private: this test stops it
	client := agent.Client(t)
	ctx := context.Background()

	s1, p1 := healthServer(t)
	_, p2 := healthServer(t)
	var regs []*discovery.Registered
	for _, p := range []int{p1, p2} {
		reg, err := discovery.Register(ctx, client, discovery.Registration{
			Service: "echo", Address: "127.0.0.1", Port: p, CheckInterval: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(reg.Close)
		regs = append(regs, reg)
	}
	if regs[0].ID() == regs[1].ID() || !strings.HasPrefix(regs[0].ID(), "echo-") {
		t.Fatalf("instance ids %q and %q: want unique echo-* ids", regs[0].ID(), regs[1].ID())
	}

	u, _ := url.Parse(discovery.Target("echo"))
	cc := &recordingCC{ch: make(chan struct{}, 1)}
	var failed watchErrors
	r, err := discovery.NewBuilder(client, discovery.WithWaitTime(2*time.Second), discovery.WithBackoff(50*time.Millisecond, 200*time.Millisecond),
		discovery.WithObserver(&failed)).
		Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	a1, a2 := "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	cc.waitAddrs(t, a1, a2) // both pass their gRPC health checks

	s1.Stop() // first instance dies: its check goes critical
	cc.waitAddrs(t, a2)

	if err := regs[1].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	cc.waitAddrs(t) // no healthy instance: the empty list, not silence

	// Register again, then take Consul away: the last known list stays.
	again, err := discovery.Register(ctx, client, discovery.Registration{Service: "echo", Address: "127.0.0.1", Port: p2, CheckInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Close)
	cc.waitAddrs(t, a2)
	cc.mu.Lock()
	statesBefore := cc.states
	cc.mu.Unlock()
	failedBefore := failed.n.Load()
	agent.Stop()
	testutil.Eventually(t, 10*time.Second, "three failed watches after Consul stopped", func() bool {
		return failed.n.Load() >= failedBefore+3
	})
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.states != statesBefore || strings.Join(cc.addrs, ",") != a2 {
		t.Errorf("after Consul stopped: states %d->%d addrs %v; want the last known list kept", statesBefore, cc.states, cc.addrs)
	}
	if cc.errs != 0 {
		t.Errorf("ReportError called %d times with a known state; want 0 (it would drop traffic)", cc.errs)
	}
}
