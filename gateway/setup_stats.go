package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/gateway/stats"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/types/known/durationpb"
)

// StatsConfig configures the stats policy. Metrics are always on, served
// at /metrics on the admin listener next to the admin page and API.
type StatsConfig struct {
	// AccessLog is one structured line per call, on standard output.
	AccessLog AccessLogConfig `yaml:"access_log"`
	// Tracing exports OpenTelemetry spans; off unless an endpoint is set.
	Tracing TracingConfig `yaml:"tracing"`
	// ReadinessRequiresBackends makes /readyz fail while any backend of the
	// route table has no healthy instance (or Consul has not yet answered
	// about it). Off by default: a gateway is ready as soon as Consul
	// answers, and calls to an empty backend fail fast with UNAVAILABLE.
	ReadinessRequiresBackends bool `yaml:"readiness_requires_backends"`
}

// AccessLogConfig configures the access log.
type AccessLogConfig struct {
	// Enabled turns the access log off when false; it is on when unset.
	Enabled *bool `yaml:"enabled"`
	// Format is "json" (the default) or "text".
	Format string `yaml:"format"`
	// Sample is the share of calls ending with OK that are logged, 0 to 1;
	// failed calls are always logged. Default 1.
	Sample *float64 `yaml:"sample"`
	// DisabledRoutes lists gRPC methods (catalog.v1.CatalogService/ListProducts)
	// or whole services (catalog.v1.CatalogService) whose calls are not logged.
	DisabledRoutes []string `yaml:"disabled_routes"`
}

// TracingConfig configures OpenTelemetry tracing.
type TracingConfig struct {
	// OTLPEndpoint is an OTLP/gRPC collector URL, such as
	// http://127.0.0.1:4317 (https for TLS). Empty turns tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// SampleRatio is the share of new traces sampled, 0 to 1; a caller's
	// decision in traceparent is kept. Default 1.
	SampleRatio *float64 `yaml:"sample_ratio"`
}

// WithStatsOptions passes options to the stats policy after those the
// config implies, so they win: tests use it for an in-memory tracer and a
// captured access log.
func WithStatsOptions(opts ...stats.Option) Option {
	return func(o *options) { o.statsOpts = append(o.statsOpts, opts...) }
}

var (
	_ Policy  = (*stats.Stats)(nil)
	_ starter = (*stats.Stats)(nil)
	_ closer  = (*stats.Stats)(nil)
	_ closer  = (*admin.Server)(nil)
)

// setupStats builds the stats policy, the admin page and API, /metrics, and
// the backend readiness check. Each gateway has its own Prometheus registry,
// so tests can run many gateways in one process.
func (g *Gateway) setupStats() error {
	sc := g.cfg.Stats
	opts, err := sc.options(os.Stdout)
	if err != nil {
		return fmt.Errorf("%s: stats: %w", g.cfg.where(), err)
	}
	routes := make([]stats.Route, len(g.routes))
	for i, r := range g.routes {
		routes[i] = stats.Route{FullMethod: r.FullMethod, Service: r.Service, Method: r.Method, Backend: r.Backend}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := stats.New(reg, routes, append(opts, g.opts.statsOpts...)...)
	if err != nil {
		return fmt.Errorf("%s: %w", g.cfg.where(), err)
	}
	adm, err := admin.New(adminRoutes(g.routes), st,
		admin.WithDefaultRateLimit(adminRateLimit(g.cfg.DefaultRateLimit)), admin.WithRateLimitMode(g.rateLimitMode),
		admin.WithRateLimitOverride(g.rateLimitOverride))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}

	g.policies.stats = st
	g.opts.resolverOpts = append(g.opts.resolverOpts, discovery.WithObserver(st.Observer()))
	g.stats = st // the proxy measures its backend calls with it
	g.closers = append(g.closers, adm)
	g.adminRoutes = append(g.adminRoutes, adminRoute{"GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})})
	for _, e := range adm.Endpoints() {
		g.adminRoutes = append(g.adminRoutes, adminRoute{e.Pattern, e.Handler})
	}
	if sc.ReadinessRequiresBackends {
		g.readiness = append(g.readiness, func() string { return backendsUnready(st.Backends()) })
	}
	return nil
}

// options turns the config into stats options; the access log goes to out.
func (sc StatsConfig) options(out io.Writer) ([]stats.Option, error) {
	var opts []stats.Option
	al := sc.AccessLog
	// Buffered either way: one write(2) per call cost about 8% of the
	// gateway's CPU. Lines go out whole, at least every 100ms, and on
	// shutdown. JSON lines have an encoder of their own, cheaper than slog's.
	var logOpt stats.Option
	switch al.Format {
	case "", "json":
		logOpt = stats.WithJSONAccessLog(out)
	case "text":
		logOpt = stats.WithBufferedAccessLog(out, func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) })
	default:
		return nil, fmt.Errorf("access_log.format %q: want json or text", al.Format)
	}
	if al.Enabled == nil || *al.Enabled {
		opts = append(opts, logOpt)
	}
	if p := al.Sample; p != nil {
		if *p < 0 || *p > 1 {
			return nil, fmt.Errorf("access_log.sample %v: want 0 to 1", *p)
		}
		opts = append(opts, stats.WithAccessLogSample(*p))
	}
	opts = append(opts, stats.WithoutAccessLog(al.DisabledRoutes...))
	if sc.Tracing.OTLPEndpoint != "" {
		ratio := 1.0
		if p := sc.Tracing.SampleRatio; p != nil {
			if *p < 0 || *p > 1 {
				return nil, fmt.Errorf("tracing.sample_ratio %v: want 0 to 1", *p)
			}
			ratio = *p
		}
		opts = append(opts, stats.WithOTLP(sc.Tracing.OTLPEndpoint, ratio))
	}
	return opts, nil
}

// rateLimitMode is how limits are enforced, for the admin API. It runs at
// request time: the limiter is built after stats.
func (g *Gateway) rateLimitMode() (string, uint32) {
	mode := g.cfg.RateLimit.Mode
	if mode == "" {
		mode = "local"
	}
	if l, ok := g.policies.ratelimit.(*ratelimit.Limiter); ok {
		return mode, uint32(max(l.Stats().Replicas, 1))
	}
	return mode, 1
}

// rateLimitOverride is the Consul KV limit in force for a method, for the
// admin API; it runs at request time, like rateLimitMode.
func (g *Gateway) rateLimitOverride(service, method string) (*adminv1.RateLimit, bool) {
	l, ok := g.policies.ratelimit.(*ratelimit.Limiter)
	if !ok {
		return nil, false
	}
	o, ok := l.Override(service, method)
	if !ok {
		return nil, false
	}
	return adminRateLimit(o), true
}

// backendsUnready names the first backend without a healthy instance.
func backendsUnready(backends []stats.Backend) string {
	for _, b := range backends {
		switch {
		case !b.Resolved:
			return fmt.Sprintf("backend %q: no answer from consul yet", b.Name)
		case len(b.Instances) == 0:
			return fmt.Sprintf("backend %q has no healthy instance", b.Name)
		}
	}
	return ""
}

// adminRoutes describes the route table for the admin API.
func adminRoutes(routes []*Route) []*adminv1.Route {
	out := make([]*adminv1.Route, len(routes))
	for i, r := range routes {
		ar := &adminv1.Route{
			Method: r.FullMethod, Service: r.Service, Http: r.HTTP, Backend: r.Backend,
			Tag: r.Tag, Datacenter: r.Datacenter, Kind: r.kind(),
			Policy: &adminv1.Policy{Access: r.Policy.Access.String(), Scopes: r.Policy.Scopes, RateLimit: adminRateLimit(r.Policy.RateLimit)},
		}
		if r.Timeout > 0 {
			ar.Timeout = durationpb.New(r.Timeout)
		}
		out[i] = ar
	}
	return out
}

func adminRateLimit(rl policy.RateLimit) *adminv1.RateLimit {
	if !rl.Enabled() {
		return nil
	}
	return &adminv1.RateLimit{Requests: rl.Requests, Period: durationpb.New(rl.Period), Burst: rl.Burst}
}
