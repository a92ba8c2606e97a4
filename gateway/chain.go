package gateway

import (
	"context"
	"net/http"

	"google.golang.org/grpc"
)

// Policy is one link of the interceptor chain. Each policy lives in its own
// package (gateway/auth, gateway/ratelimit, gateway/validate, gateway/stats)
// and hands the gateway a matching unary and stream interceptor.
type Policy interface {
	UnaryServerInterceptor() grpc.UnaryServerInterceptor
	StreamServerInterceptor() grpc.StreamServerInterceptor
}

// starter and closer are what a policy implements when it has background
// work (key refresh, Consul watches): Start runs after the listeners are
// open, Close after the servers have stopped.
type starter interface {
	Start(ctx context.Context) error
}
type closer interface{ Close() error }

// chainPolicies returns the configured policies in the chain's fixed order:
//
//	error source -> call facts -> stats -> auth -> rate limit -> validation -> [extra] -> proxy
//
// Stats comes first so it also counts what later policies reject; auth
// precedes rate limiting (limits are per consumer) and validation (an
// anonymous caller learns nothing about a protected request's shape).
func (g *Gateway) chainPolicies() []Policy {
	var out []Policy
	for _, p := range []Policy{g.policies.stats, g.policies.auth, g.policies.ratelimit, g.policies.validate} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// policies holds the configured policies; nil ones are off.
type policies struct {
	stats, auth, ratelimit, validate Policy
}

// setupPolicies builds every policy from the config. Each setup function
// lives next to the wiring of its policy (setup_*.go) and may also add
// backend dial options, admin routes and readiness checks.
func (g *Gateway) setupPolicies() error {
	if g.opts.noPolicies {
		return nil
	}
	for _, setup := range []func() error{g.setupStats, g.setupAuth, g.setupRateLimit, g.setupValidation} {
		if err := setup(); err != nil {
			return err
		}
	}
	return nil
}

// adminRoute is an extra handler on the admin listener.
type adminRoute struct {
	pattern string
	handler http.Handler
}

// readinessCheck reports why the gateway is not ready, or "" when it is.
type readinessCheck func() string

// chainUnary runs interceptors in order around a handler, building the
// nesting on each call: the gRPC server's interceptor, which only the
// gateway's own services (health, reflection) go through. Routed methods
// have theirs built once (bindUnary).
func chainUnary(interceptors []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return bindUnary(interceptors, info, handler)(ctx, req)
	}
}

// bindUnary nests interceptors, in order, around one method's handler. Each
// routed method's chain is bound once at start, so a call runs it without
// allocating its nesting; the native gRPC door and the REST door call the
// same bound chain.
func bindUnary(interceptors []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) grpc.UnaryHandler {
	for i := len(interceptors) - 1; i >= 0; i-- {
		interceptor, next := interceptors[i], handler
		handler = func(ctx context.Context, req any) (any, error) { return interceptor(ctx, req, info, next) }
	}
	return handler
}
