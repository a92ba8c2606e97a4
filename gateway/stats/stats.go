package stats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Route is one method of the gateway's route table: the only source of
// metric label values.
type Route struct {
	// FullMethod is /package.Service/Method.
	FullMethod string
	// Service is the full proto service name; Method the method name.
	Service, Method string
	// Backend is the Consul service that serves the method.
	Backend string
}

// route is a Route with everything a call needs, resolved at New.
type route struct {
	Route
	rest, grpc *series
	rejections *rejectionCounters
	quiet      bool   // no access log
	spanName   string // package.Service/Method
}

// Stats is the gateway's stats policy: metrics, access log and tracing for
// every call of the chain, and the backend view behind them.
type Stats struct {
	opts      options
	m         *metrics
	routes    map[string]*route // by FullMethod; read-only after New
	unmatched *route            // calls refused before a route matched
	order     []*route          // route table order
	backends  *backends
	tracing   atomic.Pointer[tracing] // nil: tracing off
	ownTP     *sdktrace.TracerProvider

	mu    sync.Mutex
	snaps []snapshot // oldest first, one per tick

	cancel context.CancelFunc
	wg     sync.WaitGroup // the goroutines Start started

	readinessRequiresBackends bool // FromConfig's; see NotReady
}

// New registers the metrics of routes on reg and returns the policy. It does
// no I/O and starts nothing; Start does.
func New(reg prometheus.Registerer, routes []Route, opts ...Option) (*Stats, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	m := newMetrics()
	s := &Stats{opts: o, m: m, routes: make(map[string]*route, len(routes))}
	for _, r := range routes {
		if _, dup := s.routes[r.FullMethod]; dup {
			return nil, fmt.Errorf("stats: route %s listed twice", r.FullMethod)
		}
		rt := &route{
			Route:      r,
			rest:       m.series(r.Service, r.Method, string(policy.REST)),
			grpc:       m.series(r.Service, r.Method, string(policy.GRPC)),
			rejections: &rejectionCounters{vec: m.rejections, service: r.Service, method: r.Method, byPolicyAndReason: map[[2]string]prometheus.Counter{}},
			spanName:   strings.TrimPrefix(r.FullMethod, "/"),
		}
		s.routes[r.FullMethod] = rt
		s.order = append(s.order, rt)
	}
	for _, name := range o.quiet {
		if !s.silence(name) {
			return nil, fmt.Errorf("stats: access log: %q names no route (want package.Service or package.Service/Method)", name)
		}
	}
	if o.otlpEndpoint != "" {
		if u, err := url.Parse(o.otlpEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("stats: OTLP endpoint %q: want a URL such as http://127.0.0.1:4317", o.otlpEndpoint)
		}
	}
	s.unmatched = &route{
		Route:      Route{Service: Unmatched, Method: Unmatched},
		rest:       m.series(Unmatched, Unmatched, string(policy.REST)),
		grpc:       m.series(Unmatched, Unmatched, string(policy.GRPC)),
		rejections: &rejectionCounters{vec: m.rejections, service: Unmatched, method: Unmatched, byPolicyAndReason: map[[2]string]prometheus.Counter{}},
	}
	s.backends = newBackends(m, routes, o.now)
	s.backends.consul = newConsulReach(o.logger, o.now)
	for _, c := range append(append(m.collectors(), s.backends.ageCollector()), s.backends.consul.collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
	}
	if o.tracer != nil {
		s.tracing.Store(newTracing(o.tracer))
	}
	s.snaps = []snapshot{s.zeroSnapshot()}
	return s, nil
}

// silence turns the access log off for a method or a whole service.
func (s *Stats) silence(name string) bool {
	name = strings.TrimPrefix(name, "/")
	found := false
	for _, r := range s.order {
		if r.spanName == name || r.Service == name {
			r.quiet, found = true, true
		}
	}
	return found
}

// Start starts the OTLP exporter, when configured, the sampling of live
// traffic numbers and, for a buffered access log, its periodic flush. Close
// stops them.
func (s *Stats) Start(ctx context.Context) error {
	if s.opts.otlpEndpoint != "" {
		tp, err := newOTLPProvider(ctx, s.opts.otlpEndpoint, s.opts.otlpRatio)
		if err != nil {
			return fmt.Errorf("stats: tracing: %w", err)
		}
		s.ownTP = tp
		s.tracing.Store(newTracing(tp))
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Go(func() { s.sample(ctx) })
	if w := s.opts.logWriter; w != nil {
		s.wg.Go(func() { w.flushEvery(ctx, logFlushEvery) })
	}
	return nil
}

// Flush writes out the access log lines a buffered access log
// (WithBufferedAccessLog, WithJSONAccessLog) holds. Without one it does nothing.
func (s *Stats) Flush() error {
	if w := s.opts.logWriter; w != nil {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("stats: access log: %w", err)
		}
	}
	return nil
}

// Close stops what Start started and flushes the access log and the spans
// not yet exported.
func (s *Stats) Close() error {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
	}
	err := s.Flush()
	if s.ownTP == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := s.ownTP.Shutdown(ctx); serr != nil {
		return errors.Join(err, fmt.Errorf("stats: flushing spans: %w", serr))
	}
	return err
}

// Observer is what the Consul resolver reports to (discovery.WithObserver).
func (s *Stats) Observer() discovery.Observer { return s.backends }

// Name names this policy in its refusals.
const Name = "stats"

// Unmatched is the service and method label of calls refused before a
// route matched (an unknown REST path or gRPC method).
const Unmatched = "unmatched"

// UnaryServerInterceptor counts, logs and traces unary calls.
func (s *Stats) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, r := s.lookup(ctx)
		if r == nil {
			return nil, policy.NoCall(Name)
		}
		ctx, cl := s.begin(ctx, c, r)
		defer s.endPanicking(ctx, &cl)
		resp, err := handler(ctx, req)
		// After the call: a REST request's size is known once its body has
		// been decoded, which the REST door does inside the chain.
		cl.in = countBytes(cl.s.reqBytes, req)
		if err == nil {
			cl.out = countBytes(cl.s.respBytes, resp)
		}
		s.end(ctx, &cl, err)
		return resp, err
	}
}

// StreamServerInterceptor counts, logs and traces streams; a stream's
// latency is its whole life, and its bytes are counted message by message.
func (s *Stats) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, r := s.lookup(ss.Context())
		if r == nil {
			return policy.NoCall(Name)
		}
		ctx, cl := s.begin(ss.Context(), c, r)
		defer s.endPanicking(ctx, &cl)
		ms := &measuredStream{ServerStream: ss, ctx: ctx, s: cl.s}
		err := handler(srv, ms)
		cl.in, cl.out = ms.in.Load(), ms.out.Load()
		s.end(ctx, &cl, err)
		return err
	}
}

// errPanicked is how a call that panicked below stats is measured: the
// chain's recovery, further out, answers it INTERNAL.
var errPanicked = status.Error(codes.Internal, "panic")

// endPanicking measures a call whose handler panicked, so it is counted and
// leaves the in-flight gauge, then lets the panic go on to the recovery.
func (s *Stats) endPanicking(ctx context.Context, cl *call) {
	if p := recover(); p != nil {
		s.end(ctx, cl, errPanicked)
		panic(p)
	}
}

// lookup finds the call's route; nil without call facts.
func (s *Stats) lookup(ctx context.Context) (*policy.Call, *route) {
	c, ok := policy.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	return c, s.routes[c.FullMethod]
}

// Refused counts and logs a call refused before the chain: an unknown
// REST path or gRPC method (under Unmatched), or a REST body that did not
// parse or was too large. httpStatus is what the REST door answered.
func (s *Stats) Refused(ctx context.Context, c *policy.Call, err error, httpStatus int) {
	r := s.routes[c.FullMethod]
	if r == nil {
		r = s.unmatched
	}
	ctx, cl := s.begin(ctx, c, r)
	cl.httpStatus = httpStatus
	s.end(ctx, &cl, err)
}

// CountPanic counts a panic the chain recovered from.
func (s *Stats) CountPanic(fullMethod string) {
	service, method := Unmatched, Unmatched
	if r := s.routes[fullMethod]; r != nil {
		service, method = r.Service, r.Method
	}
	s.m.panics.WithLabelValues(service, method).Inc()
}

// call is one call in the chain.
type call struct {
	start   time.Time
	c       *policy.Call
	r       *route
	s       *series
	span    trace.Span // nil: not traced
	log     bool       // the call has an access log line
	in, out int64
	// httpStatus is the REST door's answer to a refused call; 0 when it
	// follows from the code.
	httpStatus int
}

// countBytes adds a message's protobuf-encoded size to c and returns it.
func countBytes(c prometheus.Counter, m any) int64 {
	var n int
	switch m := m.(type) {
	case policy.Encoded:
		n = m.WireSize()
	case proto.Message:
		n = proto.Size(m)
	default:
		return 0
	}
	c.Add(float64(n))
	return int64(n)
}

func (s *Stats) begin(ctx context.Context, c *policy.Call, r *route) (context.Context, call) {
	cl := call{start: time.Now(), c: c, r: r, s: r.grpc}
	if c.Transport == policy.REST {
		cl.s = r.rest
	}
	cl.s.inFlight.Inc()
	if t := s.tracing.Load(); t != nil {
		ctx, cl.span = t.serverSpan(ctx, c, r.spanName)
	}
	cl.log = s.opts.logging() && !r.quiet
	return ctx, cl
}

func (s *Stats) end(ctx context.Context, cl *call, err error) {
	d := time.Since(cl.start)
	code := status.Code(err)
	cl.s.inFlight.Dec()
	cl.s.codes.get(code).Inc()
	cl.s.duration.Observe(d.Seconds())
	var rejectedBy, reason string
	if err != nil {
		rejectedBy, reason = policy.Rejection(err)
		if rejectedBy != "" {
			cl.r.rejections.inc(rejectedBy, reason)
		}
	}
	if cl.span != nil {
		endSpan(cl.span, code, true)
	}
	if cl.log {
		s.logCall(ctx, cl, code, d, rejectedBy, reason)
	}
}

// measuredStream counts a stream's message bytes and carries the context
// with the call's span. The counts are atomic: the proxy reads
// client messages on a goroutine of its own, which may outlive the handler.
type measuredStream struct {
	grpc.ServerStream
	ctx     context.Context
	s       *series
	in, out atomic.Int64
}

func (ms *measuredStream) Context() context.Context { return ms.ctx }

func (ms *measuredStream) RecvMsg(m any) error {
	err := ms.ServerStream.RecvMsg(m)
	if err == nil {
		ms.in.Add(countBytes(ms.s.reqBytes, m))
	}
	return err
}

func (ms *measuredStream) SendMsg(m any) error {
	err := ms.ServerStream.SendMsg(m)
	if err == nil {
		ms.out.Add(countBytes(ms.s.respBytes, m))
	}
	return err
}

// Backends returns every backend of the route table as the resolver last
// saw it, sorted by name.
func (s *Stats) Backends() []Backend { return s.backends.list() }
