package ratelimit

import (
	"context"
	"log/slog"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// Option configures a Limiter.
type Option func(*options)

type options struct {
	clock      func() time.Time
	maxKeys    int
	idle       time.Duration
	logger     *slog.Logger
	onOverflow func()
	known      func(service, method string) bool
	declared   func(fullMethod string) (service, method string, lim policy.RateLimit, ok bool)
	watchers   []func(context.Context, *Limiter)
	// headers: which admitted calls carry the numbers.
	headers Headers
}

// Defaults: a hundred thousand callers take about 12 MB (see docs/rate-limiting.md's
// benchmark), and a caller unseen for a minute is forgotten.
const (
	DefaultMaxKeys     = 100_000
	DefaultIdleTimeout = time.Minute
)

func defaultOptions() options {
	return options{clock: time.Now, maxKeys: DefaultMaxKeys, idle: DefaultIdleTimeout, logger: slog.Default(), headers: DefaultHeaders()}
}

// Headers says which admitted calls carry the RateLimit-* headers: REST
// calls, native gRPC calls, and gRPC-Web and Connect calls (Web), which
// reach the chain as gRPC. A refused call always carries them.
type Headers struct{ REST, GRPC, Web bool }

// DefaultHeaders: REST and web clients get the numbers; native gRPC
// clients do not, as Envoy sends none over gRPC by default. Over gRPC the
// four headers cost every call metadata copies and header encoding on both
// ends, and native gRPC clients seldom read them.
func DefaultHeaders() Headers { return Headers{REST: true, Web: true} }

// WithAdmittedHeaders says which admitted calls carry the RateLimit-*
// headers (DefaultHeaders without it).
func WithAdmittedHeaders(h Headers) Option {
	return func(o *options) { o.headers = h }
}

// WithClock sets the clock, for tests. It must be monotonic.
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithMaxKeys caps how many callers are tracked at once (per method and
// caller). Callers beyond it share their method's overflow bucket.
func WithMaxKeys(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxKeys = n
		}
	}
}

// WithIdleTimeout sets how long a caller's full bucket is kept after its
// last call.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.idle = d
		}
	}
}

// WithLogger sets where the limiter logs (table full, limit changes, bad
// settings in Consul KV).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithOverflowHook is called once for every call charged to an overflow
// bucket because the key table was full: a metrics counter, typically. It
// runs on the call's goroutine and must be quick.
func WithOverflowHook(fn func()) Option { return func(o *options) { o.onOverflow = fn } }

// WithDeclaredLimits lets the limiter answer Quota for a method no call has
// reached yet: declared returns a method's names and its declared limit.
func WithDeclaredLimits(declared func(fullMethod string) (service, method string, lim policy.RateLimit, ok bool)) Option {
	return func(o *options) { o.declared = declared }
}

// WithKnownMethods lets the limiter tell a misspelt Consul KV key from a real
// one: known reports whether a service (method "") or a method of it exists.
func WithKnownMethods(known func(service, method string) bool) Option {
	return func(o *options) { o.known = known }
}
