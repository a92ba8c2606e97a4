package discovery

import (
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/grpc/resolver"
)

// fakeCC records what the resolver tells the ClientConn. It embeds the
// interface so methods the resolver does not call need no stubs.
type fakeCC struct {
	resolver.ClientConn
	mu     sync.Mutex
	states []resolver.State
	errs   []error
	update chan struct{}
}

func newFakeCC() *fakeCC { return &fakeCC{update: make(chan struct{}, 100)} }

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	f.states = append(f.states, s)
	f.mu.Unlock()
	f.update <- struct{}{}
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
	f.update <- struct{}{}
}

func (f *fakeCC) snapshot() ([]resolver.State, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]resolver.State(nil), f.states...), append([]error(nil), f.errs...)
}

// waitFor waits until cond holds on the recorded calls.
func (f *fakeCC) waitFor(t *testing.T, what string, cond func([]resolver.State, []error) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if cond(f.snapshot()) {
			return
		}
		select {
		case <-f.update:
		case <-deadline:
			s, e := f.snapshot()
			t.Fatalf("timed out waiting for %s; states=%d errors=%v", what, len(s), e)
		}
	}
}

// fakeHealth answers queries from a script of results, then blocks.
type fakeHealth struct {
	mu      sync.Mutex
	results []fakeResult
	indexes []uint64 // WaitIndex of each query
}

type fakeResult struct {
	entries []*api.ServiceEntry
	index   uint64
	err     error
}

func (h *fakeHealth) ServiceMultipleTags(service string, tags []string, passing bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	h.mu.Lock()
	h.indexes = append(h.indexes, q.WaitIndex)
	if len(h.results) == 0 {
		h.mu.Unlock()
		<-q.Context().Done()
		return nil, nil, q.Context().Err()
	}
	r := h.results[0]
	h.results = h.results[1:]
	h.mu.Unlock()
	if r.err != nil {
		return nil, nil, r.err
	}
	return r.entries, &api.QueryMeta{LastIndex: r.index}, nil
}

func entry(id, addr string, port int) *api.ServiceEntry {
	return &api.ServiceEntry{Node: &api.Node{Address: "127.0.0.1"}, Service: &api.AgentService{ID: id, Address: addr, Port: port}}
}

func build(t *testing.T, h healthAPI, target string) (*fakeCC, resolver.Resolver) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	b := newBuilder(h, WithBackoff(time.Millisecond, 5*time.Millisecond))
	r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return cc, r
}

func TestResolverReportsErrorOnlyBeforeFirstState(t *testing.T) {
	boom := errors.New("connection refused")
	h := &fakeHealth{results: []fakeResult{
		{err: boom},
		{entries: []*api.ServiceEntry{entry("a", "10.0.0.1", 1), entry("b", "", 2)}, index: 7},
		{err: boom}, {err: boom}, {err: boom},
	}}
	cc, _ := build(t, h, "consul:///catalog")
	cc.waitFor(t, "a state after the first error", func(s []resolver.State, e []error) bool { return len(s) == 1 })
	// Queries run one at a time: once the sixth is asked, the resolver has
	// handled all five scripted results, the three later errors included.
	testutil.Eventually(t, 5*time.Second, "the resolver to query past the scripted results", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.indexes) > 5
	})
	states, errs := cc.snapshot()
	if len(errs) != 1 {
		t.Errorf("ReportError called %d times, want exactly once (before the first state): %v", len(errs), errs)
	}
	if len(states) != 1 {
		t.Fatalf("got %d states, want 1: errors after a known state must not change it", len(states))
	}
	got := states[0].Endpoints
	if len(got) != 2 || got[0].Addresses[0].Addr != "10.0.0.1:1" || got[1].Addresses[0].Addr != "127.0.0.1:2" {
		t.Errorf("endpoints = %+v, want 10.0.0.1:1 and the node address 127.0.0.1:2", got)
	}
	if InstanceID(got[0]) != "a" {
		t.Errorf("InstanceID = %q, want a", InstanceID(got[0]))
	}
}

func TestResolverPushesEmptyListAndSkipsNoOps(t *testing.T) {
	one := []*api.ServiceEntry{entry("a", "127.0.0.1", 1)}
	h := &fakeHealth{results: []fakeResult{
		{entries: one, index: 5},
		{entries: one, index: 6}, // same instances: no update
		{entries: nil, index: 9},
		{entries: one, index: 3}, // index went backwards: reset to 0
	}}
	cc, _ := build(t, h, "consul:///catalog?tag=blue&dc=dc2")
	cc.waitFor(t, "three states", func(s []resolver.State, _ []error) bool { return len(s) >= 3 })
	states, _ := cc.snapshot()
	if len(states) != 3 {
		t.Fatalf("got %d states, want 3", len(states))
	}
	if n := len(states[1].Endpoints); n != 0 {
		t.Errorf("second state has %d endpoints, want the empty list", n)
	}
	h.mu.Lock()
	idx := append([]uint64(nil), h.indexes...)
	h.mu.Unlock()
	want := []uint64{0, 5, 6, 9, 0}
	for i := range want {
		if i >= len(idx) || idx[i] != want[i] {
			t.Fatalf("WaitIndex sequence = %v, want prefix %v", idx, want)
		}
	}
}

func TestBuildRejectsBadTarget(t *testing.T) {
	b := newBuilder(&fakeHealth{})
	u, _ := url.Parse("consul:///a/b")
	if _, err := b.Build(resolver.Target{URL: *u}, newFakeCC(), resolver.BuildOptions{}); err == nil {
		t.Fatal("Build accepted consul:///a/b")
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, max: time.Second}
	for retries := range 20 {
		want := min(100*time.Millisecond<<retries, time.Second)
		for range 50 {
			d := b.delay(retries)
			if d < want/2 || d > want {
				t.Fatalf("delay(%d) = %v, want within [%v, %v]", retries, d, want/2, want)
			}
		}
	}
}

func TestResolveNowCutsBackoffShort(t *testing.T) {
	h := &fakeHealth{results: []fakeResult{{err: errors.New("down")}, {entries: []*api.ServiceEntry{entry("a", "127.0.0.1", 1)}, index: 1}}}
	u, _ := url.Parse("consul:///catalog")
	cc := newFakeCC()
	b := newBuilder(h, WithBackoff(time.Hour, time.Hour))
	r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cc.waitFor(t, "the first error", func(_ []resolver.State, e []error) bool { return len(e) == 1 })
	r.ResolveNow(resolver.ResolveNowOptions{})
	cc.waitFor(t, "a state after ResolveNow despite an hour of backoff", func(s []resolver.State, _ []error) bool { return len(s) == 1 })
}
