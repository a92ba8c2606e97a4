package backend

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/resolver"
)

// Ejection is one instance out of rotation.
type Ejection struct {
	// ID is the instance's Consul service ID; Addr its address.
	ID, Addr string
	// Since and Until bound the ejection.
	Since, Until time.Time
	// Reason says why: the failures in a row and the last one.
	Reason string
	// Times counts the instance's ejections: each lasts longer.
	Times int
}

// Tracker is one backend's view of its connection's filter: the admin page
// reads the ejections, the metrics count them. It reaches the balancer as
// an attribute of the resolver's state (trackingBuilder), since grpc-go
// registers balancers once per process and a process may run many
// gateways.
type Tracker struct {
	backend string
	logger  *slog.Logger
	m       *Metrics

	mu       sync.Mutex
	ejectors []*ejector
}

type trackerKey struct{}

func newTracker(backend string, m *Metrics, logger *slog.Logger) *Tracker {
	return &Tracker{backend: backend, m: m, logger: logger}
}

// trackingBuilder is the resolver builder of one connection: it adds the
// connection's Tracker to every state its resolver reports.
type trackingBuilder struct {
	resolver.Builder
	t *Tracker
}

func (b trackingBuilder) Build(target resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	return b.Builder.Build(target, trackingCC{ClientConn: cc, t: b.t}, opts)
}

type trackingCC struct {
	resolver.ClientConn
	t *Tracker
}

func (c trackingCC) UpdateState(s resolver.State) error {
	s.Attributes = s.Attributes.WithValue(trackerKey{}, c.t)
	return c.ClientConn.UpdateState(s)
}

func (t *Tracker) attach(e *ejector) {
	t.mu.Lock()
	t.ejectors = append(t.ejectors, e)
	t.mu.Unlock()
}

func (t *Tracker) detach(e *ejector) {
	t.mu.Lock()
	t.ejectors = slices.DeleteFunc(t.ejectors, func(x *ejector) bool { return x == e })
	t.mu.Unlock()
}

// Ejections lists the backend's instances now out of rotation, by ID.
func (t *Tracker) Ejections() []Ejection {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	list := slices.Clone(t.ejectors)
	t.mu.Unlock()
	var out []Ejection
	for _, e := range list {
		out = append(out, e.snapshot()...)
	}
	slices.SortFunc(out, func(a, b Ejection) int { return strings.Compare(a.ID+a.Addr, b.ID+b.Addr) })
	return out
}

func (t *Tracker) ejected(h *host, d time.Duration) {
	if t == nil {
		return
	}
	t.m.ejections.WithLabelValues(t.backend).Inc()
	t.m.ejected.WithLabelValues(t.backend).Inc()
	t.logger.Warn("backend instance ejected", "backend", t.backend, "instance", h.id, "addr", h.addr, "for", d, "reason", h.reason)
}

// returned notes an ejection that ended, and why.
func (t *Tracker) returned(h *host, why string) {
	if t == nil {
		return
	}
	t.m.ejected.WithLabelValues(t.backend).Dec()
	t.logger.Info("backend instance ejection over", "backend", t.backend, "instance", h.id, "addr", h.addr, "why", why)
}

// refused notes an instance that failed enough to be ejected but was kept
// because the backend already has max_ejection_percent of its instances out.
func (t *Tracker) refused(h *host) {
	if t == nil {
		return
	}
	t.logger.Warn("backend instance kept in rotation: max_ejection_percent reached", "backend", t.backend, "instance", h.id, "addr", h.addr)
}

func (t *Tracker) logf(format string, args ...any) {
	if t != nil {
		t.logger.Warn(fmt.Sprintf(format, args...), "backend", t.backend)
	}
}

// Metrics are the resilience metrics of every backend.
type Metrics struct {
	ejections  *prometheus.CounterVec
	ejected    *prometheus.GaugeVec
	overloaded *prometheus.CounterVec
	inFlight   *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_backend_ejections_total",
			Help: "Instances taken out of rotation by outlier detection, by backend.",
		}, []string{"backend"}),
		ejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_backend_ejected_instances",
			Help: "Instances out of rotation now, by backend.",
		}, []string{"backend"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_backend_overloaded_total",
			Help: "Calls refused by the circuit breaker (max_concurrent_requests), by backend.",
		}, []string{"backend"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_backend_in_flight",
			Help: "Calls and streams open to the backend, which max_concurrent_requests bounds.",
		}, []string{"backend"}),
	}
	reg.MustRegister(m.ejections, m.ejected, m.overloaded, m.inFlight)
	return m
}
