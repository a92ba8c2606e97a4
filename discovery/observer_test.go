package discovery

import (
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/resolver"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu        sync.Mutex
	instances [][]Instance
	oks, errs int
	changed   chan struct{}
}

var _ Observer = (*recorder)(nil)

func (r *recorder) Instances(service string, list []Instance) {
	r.mu.Lock()
	r.instances = append(r.instances, list)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) WatchOK(string) {
	r.mu.Lock()
	r.oks++
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) WatchError(string, error) {
	r.mu.Lock()
	r.errs++
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func TestObserverSeesInstancesAnswersAndErrors(t *testing.T) {
	h := &fakeHealth{results: []fakeResult{
		{err: errors.New("connection refused")},
		{entries: []*api.ServiceEntry{entry("b", "10.0.0.2", 2), entry("a", "10.0.0.1", 1)}, index: 3},
		{entries: []*api.ServiceEntry{entry("a", "10.0.0.1", 1), entry("b", "10.0.0.2", 2)}, index: 4}, // no change
		{entries: nil, index: 5},
	}}
	rec := &recorder{changed: make(chan struct{}, 100)}
	u, _ := url.Parse("consul:///catalog")
	b := newBuilder(h, WithBackoff(time.Millisecond, 5*time.Millisecond), WithObserver(rec))
	r, err := b.Build(resolver.Target{URL: *u}, newFakeCC(), resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	deadline := time.After(10 * time.Second)
	for {
		rec.mu.Lock()
		done := rec.oks == 3 && rec.errs == 1 && len(rec.instances) == 2
		rec.mu.Unlock()
		if done {
			break
		}
		select {
		case <-rec.changed:
		case <-deadline:
			t.Fatalf("observer saw oks=%d errs=%d instances=%v; want 3, 1 and two lists", rec.oks, rec.errs, rec.instances)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	first := rec.instances[0]
	if len(first) != 2 || first[0] != (Instance{ID: "b", Addr: "10.0.0.2:2"}) || first[1] != (Instance{ID: "a", Addr: "10.0.0.1:1"}) {
		t.Errorf("first list = %v", first)
	}
	if len(rec.instances[1]) != 0 {
		t.Errorf("second list = %v, want empty: no instance is a real answer", rec.instances[1])
	}
}
