package stats

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
)

// numCodes is the number of gRPC codes; a code outside counts as Unknown.
const numCodes = int(codes.Unauthenticated) + 1

// durationBuckets fit a gateway: sub-millisecond hops up to streams that
// run for a minute.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Policies whose rejections are counted by name; any other name counts as
// "other", so a label value never comes from outside the gateway.
var knownPolicies = map[string]bool{"auth": true, "ratelimit": true, "validation": true}

// maxReasons bounds the distinct rejection reasons counted per route.
const maxReasons = 32

// metrics are the gateway's Prometheus series. Every label value comes from
// the route table, the gRPC code list or the gateway's own constants.
type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	reqBytes   *prometheus.CounterVec
	respBytes  *prometheus.CounterVec
	rejections *prometheus.CounterVec
	panics     *prometheus.CounterVec

	healthy         *prometheus.GaugeVec
	watchErrors     *prometheus.CounterVec
	backendDuration *prometheus.HistogramVec
	backendRequests *prometheus.CounterVec
	retries         *prometheus.CounterVec
}

func newMetrics() *metrics {
	call := []string{"service", "method", "transport"}
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_requests_total",
			Help: "Calls, by route, transport and gRPC code; calls refused before routing count under service and method \"unmatched\".",
		}, append(call, "code")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portico_request_duration_seconds",
			Help:    "Time from the start of the chain to the end of the call; for streams, the whole stream.",
			Buckets: durationBuckets,
		}, call),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_requests_in_flight",
			Help: "Calls in the chain right now.",
		}, call),
		reqBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_request_message_bytes_total",
			Help: "Protobuf-encoded size of the request messages received (REST bodies after transcoding).",
		}, call),
		respBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_response_message_bytes_total",
			Help: "Protobuf-encoded size of the response messages sent (REST bodies before transcoding).",
		}, call),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_rejections_total",
			Help: "Calls a gateway policy refused, by route, policy (auth, ratelimit, validation) and reason.",
		}, []string{"service", "method", "policy", "reason"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_panics_total",
			Help: "Panics the chain recovered from (each answered INTERNAL), by route.",
		}, []string{"service", "method"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_backend_healthy_instances",
			Help: "Passing instances of each backend, as the gateway's resolver last saw them.",
		}, []string{"backend"}),
		watchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_consul_watch_errors_total",
			Help: "Failed Consul queries of each backend's watch.",
		}, []string{"backend"}),
		backendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portico_backend_request_duration_seconds",
			Help:    "Duration of each call attempt to a backend instance.",
			Buckets: durationBuckets,
		}, []string{"backend", "instance"}),
		backendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_backend_requests_total",
			Help: `Call attempts to a backend instance by gRPC code; instance "none" when no instance was reachable.`,
		}, []string{"backend", "instance", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_backend_retries_total",
			Help: "Attempts after a call's first to a backend (grpc-go's retries and transparent retries), by backend.",
		}, []string{"backend"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.inFlight, m.reqBytes, m.respBytes, m.rejections, m.panics,
		m.healthy, m.watchErrors, m.backendDuration, m.backendRequests, m.retries}
}

// codeCounters resolves one counter per gRPC code on first use, so the
// per-call cost is an array index and an atomic load, and codes that never
// happen create no series.
type codeCounters struct {
	vec    *prometheus.CounterVec
	labels []string // all labels but the code
	c      [numCodes]atomic.Pointer[prometheus.Counter]
}

func newCodeCounters(vec *prometheus.CounterVec, labels ...string) *codeCounters {
	return &codeCounters{vec: vec, labels: labels}
}

func (cc *codeCounters) get(code codes.Code) prometheus.Counter {
	if int(code) >= numCodes {
		code = codes.Unknown
	}
	if p := cc.c[code].Load(); p != nil {
		return *p
	}
	ctr := cc.vec.WithLabelValues(append(cc.labels[:len(cc.labels):len(cc.labels)], code.String())...)
	cc.c[code].Store(&ctr) // racing stores hold the same child
	return ctr
}

// counts reads the counters resolved so far.
func (cc *codeCounters) counts() (out [numCodes]uint64) {
	for i := range cc.c {
		if p := cc.c[i].Load(); p != nil {
			out[i] = counterValue(*p)
		}
	}
	return out
}

// series are one route's metrics for one transport, resolved once at New.
type series struct {
	codes     *codeCounters
	duration  prometheus.Observer
	inFlight  prometheus.Gauge
	reqBytes  prometheus.Counter
	respBytes prometheus.Counter
}

func (m *metrics) series(service, method, transport string) *series {
	return &series{
		codes:     newCodeCounters(m.requests, service, method, transport),
		duration:  m.duration.WithLabelValues(service, method, transport),
		inFlight:  m.inFlight.WithLabelValues(service, method, transport),
		reqBytes:  m.reqBytes.WithLabelValues(service, method, transport),
		respBytes: m.respBytes.WithLabelValues(service, method, transport),
	}
}

// rejectionCounters are one route's rejection counters by policy and
// reason, bounded by maxReasons.
type rejectionCounters struct {
	vec               *prometheus.CounterVec
	service, method   string
	mu                sync.Mutex
	byPolicyAndReason map[[2]string]prometheus.Counter
}

func (rc *rejectionCounters) inc(policyName, reason string) {
	if !knownPolicies[policyName] {
		policyName = "other"
	}
	key := [2]string{policyName, reason}
	rc.mu.Lock()
	c, ok := rc.byPolicyAndReason[key]
	if !ok {
		if len(rc.byPolicyAndReason) >= maxReasons {
			key[1] = "other"
		}
		if c, ok = rc.byPolicyAndReason[key]; !ok {
			c = rc.vec.WithLabelValues(rc.service, rc.method, key[0], key[1])
			rc.byPolicyAndReason[key] = c
		}
	}
	rc.mu.Unlock()
	c.Inc()
}

func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// histogramCounts reads a histogram's cumulative bucket counts, one per
// bound of durationBuckets, and its total count.
func histogramCounts(o prometheus.Observer) (buckets []uint64, total uint64) {
	h, ok := o.(prometheus.Metric)
	if !ok {
		return nil, 0
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return nil, 0
	}
	buckets = make([]uint64, len(m.GetHistogram().GetBucket()))
	for i, b := range m.GetHistogram().GetBucket() {
		buckets[i] = b.GetCumulativeCount()
	}
	return buckets, m.GetHistogram().GetSampleCount()
}
