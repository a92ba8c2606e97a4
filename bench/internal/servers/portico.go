package servers

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/portico-gw/portico/bench/internal/load"
	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/portico-gw/portico/gen/registry"
)

// PorticoConfig is the gateway as the benchmark runs it: the default
// policy chain (API-key auth, validation, rate limiting, metrics, access
// log) with every limit too high to reject, and both example services
// routed to the benchmark backend.
func PorticoConfig(consulAddr string) gateway.Config {
	high := &policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30}
	unlimited := gateway.PolicyConfig{RateLimit: high}
	return gateway.Config{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Consul: discovery.ConsulConfig{Address: consulAddr},
		Auth: auth.Config{APIKeys: []auth.APIKeyConfig{
			{Consumer: "bench", SHA256: auth.HashAPIKey(load.APIKey), Scopes: []string{"catalog.write"}},
		}},
		Services: map[string]gateway.ServiceConfig{
			"catalog.v1.CatalogService": {Backend: BackendName, PolicyConfig: unlimited, Methods: map[string]gateway.MethodConfig{
				// CreateProduct declares its own limit, which beats the service's.
				"CreateProduct": {PolicyConfig: unlimited},
			}},
			"orders.v1.OrderService": {Backend: BackendName, PolicyConfig: unlimited},
		},
	}
}

// Option changes the benchmark's gateway config.
type Option func(*gateway.Config)

// WithLooseLimits sets the edge limits (config key limits) as loose as
// config allows: the rapid-reset guard off (max_resets_per_second 0, the
// one limit that turns off), and every other count, size and time, which
// cannot be turned off (0 takes the default), at a value the benchmark
// never reaches. What stays is the limits' machinery: the connection cap's
// semaphore, the REST listener's framing check, and the gRPC tap that
// counts headers and cuts deadlines.
func WithLooseLimits() Option {
	return func(c *gateway.Config) {
		const never = 24 * time.Hour
		c.Limits = edge.Config{
			MaxConnections:       1 << 30,
			MaxConcurrentStreams: math.MaxUint32,
			MaxHeaderBytes:       64 << 20,
			MaxHeaders:           1 << 20,
			RequestReadTimeout:   never,
			BodyTimeout:          never,
			IdleTimeout:          never,
			MaxResetsPerSecond:   new(0),
		}
	}
}

// WithoutRetries turns retries off: retry max_attempts 1 on every service,
// so no method has a retry policy. retry_throttling cannot be turned off
// (max_tokens is at least 1): its token bucket still counts successes.
func WithoutRetries() Option {
	return eachService(func(b *backend.Config) { b.Retry = &backend.Retry{MaxAttempts: 1} })
}

// WithoutCircuitBreaker lifts the circuit breaker's limit:
// max_concurrent_requests -1, on every service (they share the backend
// connection, and so must agree).
func WithoutCircuitBreaker() Option {
	return eachService(func(b *backend.Config) { b.MaxConcurrentRequests = -1 })
}

// eachService applies f to the resilience config of every service.
func eachService(f func(*backend.Config)) Option {
	return func(c *gateway.Config) {
		for name, svc := range c.Services {
			f(&svc.Config)
			c.Services[name] = svc
		}
	}
}

// WithTLS serves the gateway's REST and gRPC listeners over TLS with tc;
// nil leaves them plaintext.
func WithTLS(tc *tlsconfig.Config) Option { return func(c *gateway.Config) { c.TLS = tc } }

// NewPortico builds the benchmark's gateway, with the chain on or off. With
// the chain on, access log lines go to accessLog as the gateway's default
// config writes them to standard output: JSON, buffered.
func NewPortico(consulAddr string, chain bool, accessLog io.Writer, cfgOpts ...Option) (*gateway.Gateway, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []gateway.Option{gateway.WithLogger(logger)}
	if chain {
		opts = append(opts, gateway.WithStatsOptions(stats.WithJSONAccessLog(accessLog)))
	} else {
		opts = append(opts, gateway.WithoutPolicies())
	}
	cfg := PorticoConfig(consulAddr)
	for _, o := range cfgOpts {
		o(&cfg)
	}
	return gateway.New(cfg, registry.Services(), opts...)
}

// Portico runs the gateway, with the chain on or off, and writes its
// access log to the file accessLog. With tc, both its REST and gRPC
// listeners serve over TLS; opts change its config further.
func Portico(ctx context.Context, consulAddr string, chain bool, accessLog string, tc *tlsconfig.Config, readyPath string, opts ...Option) error {
	var log io.Writer = io.Discard
	if chain {
		f, err := os.Create(accessLog)
		if err != nil {
			return err
		}
		defer f.Close()
		log = f
	}
	gw, err := NewPortico(consulAddr, chain, log, append(opts, WithTLS(tc))...)
	if err != nil {
		return err
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(sctx)
	}()
	return ready(ctx, readyPath, procs.Ready{HTTP: gw.HTTPAddr(), GRPC: gw.GRPCAddr()})
}
