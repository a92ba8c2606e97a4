package stats

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// consulFixture is a Stats over two backends with a hand-driven clock and
// a captured log.
type consulFixture struct {
	s   *Stats
	reg *prometheus.Registry
	log *testutil.LockedBuffer
	now time.Time
}

func newConsulFixture(t *testing.T) *consulFixture {
	t.Helper()
	f := &consulFixture{reg: prometheus.NewRegistry(), log: &testutil.LockedBuffer{}, now: time.Unix(1_000_000, 0)}
	s, err := New(f.reg, []Route{
		{FullMethod: "/a.v1.A/Get", Service: "a.v1.A", Method: "Get", Backend: "catalog"},
		{FullMethod: "/b.v1.B/Get", Service: "b.v1.B", Method: "Get", Backend: "orders"},
	}, WithLogger(slog.New(slog.NewTextHandler(f.log, nil))), func(o *options) { o.now = func() time.Time { return f.now } })
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	return f
}

// metric reads a series without labels.
func (f *consulFixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

func (f *consulFixture) want(t *testing.T, when string, up bool, unreachable time.Duration, outages uint64) {
	t.Helper()
	st := f.s.Consul()
	if st.Reachable != up || st.Unreachable != unreachable || st.Outages != outages {
		t.Errorf("%s: Consul() = %+v; want reachable %v, unreachable %v, %d outages", when, st, up, unreachable, outages)
	}
	wantUp := 0.0
	if up {
		wantUp = 1
	}
	if got := f.metric(t, "portico_consul_up"); got != wantUp {
		t.Errorf("%s: portico_consul_up = %v, want %v", when, got, wantUp)
	}
	if got := f.metric(t, "portico_consul_unreachable_seconds_total"); got != unreachable.Seconds() {
		t.Errorf("%s: portico_consul_unreachable_seconds_total = %v, want %v", when, got, unreachable.Seconds())
	}
}

func (f *consulFixture) logged(t *testing.T, msg string) int {
	t.Helper()
	return strings.Count(f.log.String(), "msg=\""+msg)
}

// Consul is unreachable once every backend's watch fails, from the first
// of those failures, and reachable again at the first answer; the time in
// between adds up, the outage in progress included.
func TestConsulReachFromWatchReports(t *testing.T) {
	f := newConsulFixture(t)
	o := f.s.Observer()
	refused := errors.New("consul: dial tcp 127.0.0.1:8500: connect: connection refused")

	f.want(t, "before any report", false, 0, 0)
	o.WatchOK("catalog")
	o.WatchOK("orders")
	o.WatchOK("not-a-backend") // ignored, like every report outside the route table
	f.want(t, "both watches answered", true, 0, 0)

	f.now = f.now.Add(time.Second)
	o.WatchError("catalog", refused)
	o.WatchError("not-a-backend", refused)
	f.want(t, "one watch failing", true, 0, 0) // orders still gets answers

	f.now = f.now.Add(time.Second)
	o.WatchError("orders", refused)
	f.now = f.now.Add(3 * time.Second)
	f.want(t, "every watch failing", false, 4*time.Second, 1) // since catalog's first failure
	if st := f.s.Consul(); st.LastError != refused.Error() || !st.Since.Equal(f.now.Add(-4*time.Second)) {
		t.Errorf("Consul() = %+v; want the last error and the outage's start", st)
	}
	o.WatchError("catalog", refused)
	o.WatchError("orders", refused)
	if n := f.logged(t, "consul unreachable"); n != 1 {
		t.Errorf("%d lines say consul is unreachable, want 1 per outage:\n%s", n, f.log)
	}

	f.now = f.now.Add(2 * time.Second)
	o.WatchOK("orders")
	f.now = f.now.Add(10 * time.Second)
	f.want(t, "answered again", true, 6*time.Second, 1)
	if n := f.logged(t, "consul reachable again"); n != 1 || !strings.Contains(f.log.String(), "away=6s") {
		t.Errorf("want one line saying consul is reachable again after 6s:\n%s", f.log)
	}

	// A second outage adds to the first.
	o.WatchError("catalog", refused)
	o.WatchError("orders", refused)
	f.now = f.now.Add(time.Second)
	f.want(t, "second outage", false, 7*time.Second, 2)
}

// A gateway that starts while Consul is down says so at the first failure.
func TestConsulUnreachableFromStart(t *testing.T) {
	f := newConsulFixture(t)
	f.s.Observer().WatchError("catalog", errors.New("connection refused"))
	f.now = f.now.Add(time.Second)
	f.want(t, "first report a failure", false, time.Second, 1)
	if n := f.logged(t, "consul unreachable"); n != 1 {
		t.Errorf("%d lines say consul is unreachable, want 1:\n%s", n, f.log)
	}
	f.s.Observer().WatchOK("orders")
	f.want(t, "first answer", true, time.Second, 1)
}
