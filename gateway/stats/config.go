package stats

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/portico-gw/portico/gateway/policy"
	gwroute "github.com/portico-gw/portico/gateway/route"
)

// Config configures the stats policy. Metrics are always on, served at
// /metrics on the admin listener next to the admin page and API.
type Config struct {
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

// FromConfig builds the policy for the route table, registering its metrics
// on env.Registry. Options in extra follow those the config implies, so
// they win (tests use them for an in-memory tracer and a captured log).
func FromConfig(cfg Config, routes []*gwroute.Route, env policy.Env, extra ...Option) (*Stats, error) {
	opts, err := cfg.options(os.Stdout)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	rs := make([]Route, len(routes))
	for i, r := range routes {
		rs[i] = Route{FullMethod: r.FullMethod, Service: r.Service, Method: r.Method, Backend: r.Backend}
	}
	opts = append(opts, WithLogger(env.Logger))
	s, err := New(env.Registry, rs, append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	s.readinessRequiresBackends = cfg.ReadinessRequiresBackends
	return s, nil
}

// options turns the config into options; the access log goes to out.
func (c Config) options(out io.Writer) ([]Option, error) {
	var opts []Option
	al := c.AccessLog
	// Buffered either way: one write(2) per call cost about 8% of the
	// gateway's CPU. Lines go out whole, at least every 100ms, and on
	// shutdown. JSON lines have an encoder of their own, cheaper than slog's.
	var logOpt Option
	switch al.Format {
	case "", "json":
		logOpt = WithJSONAccessLog(out)
	case "text":
		logOpt = WithBufferedAccessLog(out, func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) })
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
		opts = append(opts, WithAccessLogSample(*p))
	}
	opts = append(opts, WithoutAccessLog(al.DisabledRoutes...))
	if c.Tracing.OTLPEndpoint != "" {
		ratio := 1.0
		if p := c.Tracing.SampleRatio; p != nil {
			if *p < 0 || *p > 1 {
				return nil, fmt.Errorf("tracing.sample_ratio %v: want 0 to 1", *p)
			}
			ratio = *p
		}
		opts = append(opts, WithOTLP(c.Tracing.OTLPEndpoint, ratio))
	}
	return opts, nil
}

// NotReady says why the gateway should not take traffic, or "": with
// readiness_requires_backends, while a backend has no healthy instance.
func (s *Stats) NotReady() string {
	if !s.readinessRequiresBackends {
		return ""
	}
	for _, b := range s.Backends() {
		switch {
		case !b.Resolved:
			return fmt.Sprintf("backend %q: no answer from consul yet", b.Name)
		case len(b.Instances) == 0:
			return fmt.Sprintf("backend %q has no healthy instance", b.Name)
		}
	}
	return ""
}
