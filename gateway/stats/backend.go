package stats

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// noInstance labels attempts that never reached an instance.
const noInstance = "none"

// Backend is one backend as the gateway's resolver last saw it.
type Backend struct {
	// Name is the Consul service name.
	Name string
	// Resolved is whether Consul has answered the watch yet.
	Resolved bool
	// Instances are the passing instances, sorted by ID.
	Instances []Instance
	// WatchErrors counts failed Consul queries since start.
	WatchErrors uint64
	// LastWatchOK is when Consul last answered; zero if never.
	LastWatchOK time.Time
	// LastWatchError is the error of the last query, if it failed.
	LastWatchError string
}

// Instance is one passing instance and the gateway's calls to it.
type Instance struct {
	// ID is the Consul service ID; Addr the host:port called.
	ID, Addr string
	// Calls and Errors count attempts since the instance appeared; Errors
	// are those that did not end with OK.
	Calls, Errors uint64
}

// backends follows every backend of the route table. It is the resolver's
// observer and maps the peer address of an attempt to the instance's Consul
// service ID, which is the instance label: bounded by the instances Consul
// lists, and the series of an instance that leaves are dropped.
type backends struct {
	m      *metrics
	now    func() time.Time
	by     map[string]*backend // read-only after New
	names  []string
	consul *consulReach // what the watch reports say of Consul itself
}

var _ discovery.Observer = (*backends)(nil)

type backend struct {
	name      string
	healthy   prometheus.Gauge
	watchErrs prometheus.Counter
	retries   prometheus.Counter
	byAddr    atomic.Pointer[instanceIndex] // peer address -> instance
	series    sync.Map                      // instance label -> *instanceSeries

	mu        sync.Mutex
	resolved  bool
	instances []discovery.Instance
	errors    uint64
	lastOK    time.Time
	lastErr   string
}

type instanceSeries struct {
	duration prometheus.Observer
	codes    *codeCounters
}

func newBackends(m *metrics, routes []Route, now func() time.Time) *backends {
	b := &backends{m: m, now: now, by: map[string]*backend{}}
	for _, r := range routes {
		if _, ok := b.by[r.Backend]; ok || r.Backend == "" { // "": a composite method, served by the gateway
			continue
		}
		b.by[r.Backend] = &backend{name: r.Backend, healthy: m.healthy.WithLabelValues(r.Backend), watchErrs: m.watchErrors.WithLabelValues(r.Backend),
			retries: m.retries.WithLabelValues(r.Backend)}
		b.names = append(b.names, r.Backend)
	}
	sort.Strings(b.names)
	return b
}

// Instances implements discovery.Observer.
func (b *backends) Instances(service string, list []discovery.Instance) {
	be := b.by[service]
	if be == nil {
		return
	}
	list = slices.Clone(list)
	slices.SortFunc(list, func(x, y discovery.Instance) int { return strings.Compare(x.ID, y.ID) })
	byAddr := instanceIndex{byString: make(map[string]*instanceName, len(list)), byIP: make(map[netip.AddrPort]*instanceName, len(list))}
	keep := map[string]bool{noInstance: true}
	for _, in := range list {
		n := &instanceName{id: in.ID, addr: in.Addr}
		byAddr.byString[in.Addr] = n
		if ap, err := netip.ParseAddrPort(in.Addr); err == nil {
			byAddr.byIP[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = n
		}
		keep[in.ID] = true
	}
	be.byAddr.Store(&byAddr)
	be.healthy.Set(float64(len(list)))
	be.mu.Lock()
	be.resolved, be.instances = true, list
	be.mu.Unlock()
	be.series.Range(func(k, _ any) bool {
		if inst := k.(string); !keep[inst] {
			be.series.Delete(inst)
			b.m.backendDuration.DeleteLabelValues(be.name, inst)
			b.m.backendRequests.DeletePartialMatch(prometheus.Labels{"backend": be.name, "instance": inst})
		}
		return true
	})
}

// WatchOK implements discovery.Observer.
func (b *backends) WatchOK(service string) {
	if be := b.by[service]; be != nil {
		be.mu.Lock()
		be.lastOK, be.lastErr = b.now(), ""
		be.mu.Unlock()
		b.consul.watchOK(service)
	}
}

// WatchError implements discovery.Observer.
func (b *backends) WatchError(service string, err error) {
	if be := b.by[service]; be != nil {
		be.watchErrs.Inc()
		be.mu.Lock()
		be.errors++
		be.lastErr = err.Error()
		be.mu.Unlock()
		b.consul.watchError(service, err)
	}
}

// instanceIndex finds the instance at a backend's peer address, by the
// address as a string and, without formatting it, as an IP and port.
type instanceIndex struct {
	byString map[string]*instanceName
	byIP     map[netip.AddrPort]*instanceName
}

// instanceName is one instance of the resolver's list: its Consul service
// ID and its address, which every call it serves points to.
type instanceName struct{ id, addr string }

// instance names the instance at a peer address: its Consul service ID, or
// the address itself for one the resolver no longer lists. An address the
// list has costs no allocation (the lookup runs on every backend call).
func (be *backend) instance(addr net.Addr) *instanceName {
	m := be.byAddr.Load()
	if tcp, ok := addr.(*net.TCPAddr); ok && m != nil {
		ap := tcp.AddrPort()
		if n := m.byIP[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; n != nil {
			return n
		}
	}
	hostPort := addr.String()
	if m != nil {
		if n := m.byString[hostPort]; n != nil {
			return n
		}
	}
	return &instanceName{id: hostPort, addr: hostPort}
}

func (be *backend) seriesOf(m *metrics, instance string) *instanceSeries {
	if v, ok := be.series.Load(instance); ok {
		return v.(*instanceSeries)
	}
	is := &instanceSeries{
		duration: m.backendDuration.WithLabelValues(be.name, instance),
		codes:    newCodeCounters(m.backendRequests, be.name, instance),
	}
	v, _ := be.series.LoadOrStore(instance, is)
	return v.(*instanceSeries)
}

func (b *backends) list() []Backend {
	out := make([]Backend, 0, len(b.names))
	for _, name := range b.names {
		be := b.by[name]
		be.mu.Lock()
		v := Backend{Name: name, Resolved: be.resolved, WatchErrors: be.errors, LastWatchOK: be.lastOK, LastWatchError: be.lastErr}
		instances := be.instances
		be.mu.Unlock()
		for _, in := range instances {
			i := Instance{ID: in.ID, Addr: in.Addr}
			if s, ok := be.series.Load(in.ID); ok {
				counts := s.(*instanceSeries).codes.counts()
				for code, n := range counts {
					i.Calls += n
					if codes.Code(code) != codes.OK {
						i.Errors += n
					}
				}
			}
			v.Instances = append(v.Instances, i)
		}
		out = append(out, v)
	}
	return out
}

// ageCollector exports portico_consul_watch_age_seconds, computed at scrape
// time, for every backend Consul has answered about.
func (b *backends) ageCollector() prometheus.Collector { return &watchAge{b: b} }

var watchAgeDesc = prometheus.NewDesc("portico_consul_watch_age_seconds",
	"Seconds since Consul last answered the backend's watch. A blocking query answers at least once per wait time (30s by default), so more than that means trouble.",
	[]string{"backend"}, nil)

type watchAge struct{ b *backends }

var _ prometheus.Collector = (*watchAge)(nil)

func (w *watchAge) Describe(ch chan<- *prometheus.Desc) { ch <- watchAgeDesc }

func (w *watchAge) Collect(ch chan<- prometheus.Metric) {
	now := w.b.now()
	for _, name := range w.b.names {
		be := w.b.by[name]
		be.mu.Lock()
		last := be.lastOK
		be.mu.Unlock()
		if !last.IsZero() {
			ch <- prometheus.MustNewConstMetric(watchAgeDesc, prometheus.GaugeValue, now.Sub(last).Seconds(), name)
		}
	}
}

// BackendCall measures one call from the gateway to a backend: latency
// and code per instance, the instance for the access log, and the client
// span that carries the trace to the backend. The zero BackendCall measures
// nothing. The gateway's proxy makes one per backend call (a transparent
// retry inside grpc-go counts once, with the instance that answered). It
// is not a grpc stats.Handler on the backend connections: grpc-go builds
// seven event objects per call for a handler, which cost 5% to 10% of a
// call in memory.
type BackendCall struct{ a *attempt }

// attempt is what a BackendCall measures.
type attempt struct {
	s       *Stats
	backend *backend
	call    *policy.Call
	span    trace.Span
	start   time.Time
	// instance is this attempt's own, not read back from call: one
	// policy.Call may make several backend calls (StartBackendCall for
	// each), and the call keeps only the last instance that answered, for
	// its access log line (TestBackendAttemptsPerInstance).
	instance atomic.Pointer[string]
}

// StartBackendCall starts measuring a call of the call in ctx (its
// policy.Call) to its backend. ctx is the outgoing context of the backend
// call; the one returned carries the client span's traceparent when
// tracing is on. Calls without a policy.Call are not measured.
func (s *Stats) StartBackendCall(ctx context.Context, fullMethod string) (context.Context, BackendCall) {
	c, ok := policy.FromContext(ctx)
	if !ok {
		return ctx, BackendCall{}
	}
	be := s.backends.by[c.Backend]
	if be == nil {
		return ctx, BackendCall{}
	}
	a := &attempt{s: s, backend: be, call: c, start: time.Now()}
	if t := s.tracing.Load(); t != nil {
		ctx, a.span = t.clientSpan(ctx, fullMethod, c.Backend)
	}
	return ctx, BackendCall{a}
}

// Reached records the instance at addr, the backend's peer address, as the
// one that answers.
func (c BackendCall) Reached(addr net.Addr) {
	if c.a == nil || addr == nil {
		return
	}
	a := c.a
	n := a.backend.instance(addr)
	a.instance.Store(&n.id)
	a.call.SetInstance(&n.id)
	if a.span != nil {
		a.span.SetAttributes(attribute.String("server.address", n.addr), attribute.String("portico.instance", n.id))
	}
}

// Attempts records how many attempts the call took (the backend
// connection's balancer counts them in the policy.Call, whence the access
// log reads them): each after the first counts in
// portico_backend_retries_total.
func (c BackendCall) Attempts(n int) {
	a := c.a
	if a == nil {
		return
	}
	if n > 1 {
		a.backend.retries.Add(float64(n - 1))
	}
}

// End records the call's outcome; err is the backend call's error.
func (c BackendCall) End(err error) {
	a := c.a
	if a == nil {
		return
	}
	inst := noInstance
	if p := a.instance.Load(); p != nil {
		inst = *p
	}
	code := status.Code(err)
	is := a.backend.seriesOf(a.s.m, inst)
	is.duration.Observe(time.Since(a.start).Seconds())
	is.codes.get(code).Inc()
	if a.span != nil {
		endSpan(a.span, code, false)
	}
}
