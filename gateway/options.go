package gateway

import (
	"log/slog"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/stats"
	"google.golang.org/grpc"
)

// Option configures a Gateway.
type Option func(*options)

type options struct {
	logger       *slog.Logger
	unary        []grpc.UnaryServerInterceptor
	stream       []grpc.StreamServerInterceptor
	resolverOpts []discovery.Option
	noPolicies   bool
	statsOpts    []stats.Option
	openapi      []byte
}

// WithLogger sets the gateway's logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithUnaryInterceptors appends interceptors to the unary chain, after the
// policies. They run for REST and native gRPC calls alike, in the order
// given, and get messages as the generated Go types.
func WithUnaryInterceptors(i ...grpc.UnaryServerInterceptor) Option {
	return func(o *options) { o.unary = append(o.unary, i...) }
}

// WithStreamInterceptors appends interceptors to the stream chain.
func WithStreamInterceptors(i ...grpc.StreamServerInterceptor) Option {
	return func(o *options) { o.stream = append(o.stream, i...) }
}

// WithoutPolicies serves with no policy on the chain (no stats, auth, rate
// limit or validation): the baseline the chain's cost is measured against.
// Not for production.
func WithoutPolicies() Option { return func(o *options) { o.noPolicies = true } }

// WithResolverOptions tunes the Consul resolver and the policies' Consul
// watches (backoff, wait time).
func WithResolverOptions(opts ...discovery.Option) Option {
	return func(o *options) { o.resolverOpts = append(o.resolverOpts, opts...) }
}

// WithStatsOptions passes options to the stats policy after those the
// config implies, so they win: tests use it for an in-memory tracer and a
// captured access log.
func WithStatsOptions(opts ...stats.Option) Option {
	return func(o *options) { o.statsOpts = append(o.statsOpts, opts...) }
}

// WithOpenAPI gives the OpenAPI 3 document the REST port serves
// (gen/openapi.Document); without it there is none.
func WithOpenAPI(doc []byte) Option { return func(o *options) { o.openapi = doc } }
