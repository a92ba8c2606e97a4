package backend

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// recordingChild is a child balancer that remembers the endpoints it was
// last given and whether it was called after Close.
type recordingChild struct {
	mu          sync.Mutex
	last        []string
	closed      bool
	afterClose  int
	concurrency int // calls in progress: the filter must serialise them
	overlapped  bool
}

const testChild = "portico_test_child"

var (
	childrenMu sync.Mutex
	children   []*recordingChild
)

type childBuilder struct{}

func (childBuilder) Name() string { return testChild }
func (childBuilder) Build(balancer.ClientConn, balancer.BuildOptions) balancer.Balancer {
	c := &recordingChild{}
	childrenMu.Lock()
	children = append(children, c)
	childrenMu.Unlock()
	return c
}

func init() { balancer.Register(childBuilder{}) }

func (c *recordingChild) enter() {
	c.mu.Lock()
	c.concurrency++
	if c.concurrency > 1 {
		c.overlapped = true
	}
	if c.closed {
		c.afterClose++
	}
	c.mu.Unlock()
}

func (c *recordingChild) leave() {
	c.mu.Lock()
	c.concurrency--
	c.mu.Unlock()
}

func (c *recordingChild) UpdateClientConnState(s balancer.ClientConnState) error {
	c.enter()
	defer c.leave()
	var addrs []string
	for _, ep := range s.ResolverState.Endpoints {
		addrs = append(addrs, ep.Addresses[0].Addr)
	}
	slices.Sort(addrs)
	c.mu.Lock()
	c.last = addrs
	c.mu.Unlock()
	return nil
}
func (c *recordingChild) ResolverError(error)                                        { c.enter(); c.leave() }
func (c *recordingChild) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}
func (c *recordingChild) ExitIdle()                                                  { c.enter(); c.leave() }
func (c *recordingChild) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

type nopCC struct{ balancer.ClientConn }

func (nopCC) UpdateState(balancer.State) {}

func testConfig(t *testing.T, failures, percent int) serviceconfig.LoadBalancingConfig {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"consecutiveFailures": failures, "interval": "1h", "baseEjectionTime": "1h",
		"maxEjectionTime": "2h", "maxEjectionPercent": percent, "childPolicy": []any{map[string]any{testChild: map[string]any{}}}})
	cfg, err := builder{}.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func endpoints(addrs ...string) resolver.State {
	var st resolver.State
	for _, a := range addrs {
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	return st
}

func newTestEjector(t *testing.T, failures, percent int, addrs ...string) (*ejector, serviceconfig.LoadBalancingConfig, *recordingChild) {
	t.Helper()
	childrenMu.Lock()
	n := len(children)
	childrenMu.Unlock()
	cfg := testConfig(t, failures, percent)
	e := builder{}.Build(nopCC{}, balancer.BuildOptions{}).(*ejector)
	if err := e.UpdateClientConnState(balancer.ClientConnState{ResolverState: endpoints(addrs...), BalancerConfig: cfg}); err != nil {
		t.Fatal(err)
	}
	childrenMu.Lock()
	defer childrenMu.Unlock()
	return e, cfg, children[n]
}

// failUntilEjected records failures against addr until eject has run.
func failUntilEjected(e *ejector, addr string, failures int) {
	e.mu.Lock()
	h := e.hosts[addr]
	e.mu.Unlock()
	if h == nil {
		return
	}
	h.consecutive.Store(int32(failures))
	e.eject(h)
}

func TestEjectorChildEndsWithTheNewestList(t *testing.T) {
	for round := range 50 {
		e, cfg, child := newTestEjector(t, 2, 50, "a", "b", "c", "d")
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // Consul drops a and adds e
			defer wg.Done()
			_ = e.UpdateClientConnState(balancer.ClientConnState{ResolverState: endpoints("b", "c", "d", "e"), BalancerConfig: cfg})
		}()
		go func() { // a and c fail at the same moment
			defer wg.Done()
			failUntilEjected(e, "a", 2)
			failUntilEjected(e, "c", 2)
		}()
		wg.Wait()
		e.mu.Lock()
		var want []string
		for _, ep := range e.filteredLocked().Endpoints {
			want = append(want, ep.Addresses[0].Addr)
		}
		e.mu.Unlock()
		slices.Sort(want)
		child.mu.Lock()
		got, overlapped := child.last, child.overlapped
		child.mu.Unlock()
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: child holds %v, the filter says %v", round, got, want)
		}
		if overlapped {
			t.Fatalf("round %d: the child was called concurrently", round)
		}
		e.Close()
	}
}

func TestEjectorNeverCallsTheChildAfterClose(t *testing.T) {
	for range 50 {
		e, cfg, child := newTestEjector(t, 1, 100, "a", "b", "c")
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); failUntilEjected(e, "a", 1) }()
		go func() {
			defer wg.Done()
			_ = e.UpdateClientConnState(balancer.ClientConnState{ResolverState: endpoints("a", "b"), BalancerConfig: cfg})
		}()
		go func() { defer wg.Done(); e.Close() }()
		wg.Wait()
		e.review()
		e.ExitIdle()
		child.mu.Lock()
		after := child.afterClose
		child.mu.Unlock()
		if after != 0 {
			t.Fatalf("the child was called %d times after Close", after)
		}
	}
}

func TestEjectionPercentAndGaugeAccounting(t *testing.T) {
	m := NewMetrics(prometheusRegistry())
	tr := newTracker("catalog", m, discardLogger())
	cfg := testConfig(t, 1, 50)
	e := builder{}.Build(nopCC{}, balancer.BuildOptions{}).(*ejector)
	st := endpoints("a", "b", "c", "d", "e")
	st.Attributes = st.Attributes.WithValue(trackerKey{}, tr)
	if err := e.UpdateClientConnState(balancer.ClientConnState{ResolverState: st, BalancerConfig: cfg}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a", "b", "c"} {
		failUntilEjected(e, a, 1)
	}
	if got := len(tr.Ejections()); got != 2 {
		t.Fatalf("%d of 5 ejected at max_ejection_percent 50, want 2 (rounded down)", got)
	}
	if g := gaugeValue(t, m, "catalog"); g != 2 {
		t.Fatalf("ejected gauge = %v, want 2", g)
	}
	// a leaves Consul while ejected, then the connection closes.
	st = endpoints("b", "c", "d", "e")
	st.Attributes = st.Attributes.WithValue(trackerKey{}, tr)
	if err := e.UpdateClientConnState(balancer.ClientConnState{ResolverState: st, BalancerConfig: cfg}); err != nil {
		t.Fatal(err)
	}
	if g := gaugeValue(t, m, "catalog"); g != 1 {
		t.Fatalf("ejected gauge = %v after an ejected instance left, want 1", g)
	}
	e.Close()
	if g := gaugeValue(t, m, "catalog"); g != 0 {
		t.Fatalf("ejected gauge = %v after Close, want 0", g)
	}
}
