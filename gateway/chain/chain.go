package chain

import (
	"context"
	"log/slog"
	"slices"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	"google.golang.org/grpc"
)

// Policy is one link of the chain: a matching unary and stream interceptor.
// Each policy lives in its own package and refuses, with INTERNAL, a call
// it cannot place (no *policy.Call in the context).
type Policy interface {
	UnaryServerInterceptor() grpc.UnaryServerInterceptor
	StreamServerInterceptor() grpc.StreamServerInterceptor
}

// RequestReader is a policy that reads request messages (validation): the
// chain decodes requests right before the first one.
type RequestReader interface {
	Policy
	ReadsRequests()
}

// PanicCounter is a policy that counts the panics recovery caught.
type PanicCounter interface {
	CountPanic(fullMethod string)
}

// Refusals is a policy that accounts for calls refused before the chain
// could run: an unknown gRPC method here, an unknown path, a body that does
// not parse or is too large at the REST door. c.FullMethod is empty when
// no route matched; httpStatus is 0 on the gRPC door.
type Refusals interface {
	Refused(ctx context.Context, c *policy.Call, err error, httpStatus int)
}

// Config is what a chain is built from.
type Config struct {
	// Routes is the route table: the chain applies to its methods.
	Routes *route.Table
	// Trusted says whose X-Forwarded-For to believe.
	Trusted clientip.Trusted
	// Policies run in this order.
	Policies []Policy
	// Unary and Stream are the embedder's interceptors, after the policies.
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// Logger logs recovered panics.
	Logger *slog.Logger
}

// Chain is the built chain.
type Chain struct {
	routes   *route.Table
	trusted  clientip.Trusted
	head     []grpc.UnaryServerInterceptor // error source, recovery, call facts
	unary    []grpc.UnaryServerInterceptor // the policies, then the embedder's
	stream   []grpc.StreamServerInterceptor
	decodeAt int // in unary and stream: where the decode step goes
	readers  bool
	typed    struct{ unary, stream bool }
	panics   []PanicCounter
	refusals []Refusals
	logger   *slog.Logger
}

// New builds the chain. It does no I/O.
func New(cfg Config) *Chain {
	c := &Chain{routes: cfg.Routes, trusted: cfg.Trusted, logger: cfg.Logger, decodeAt: -1}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	for _, p := range cfg.Policies {
		if _, ok := p.(RequestReader); ok && c.decodeAt < 0 {
			c.decodeAt, c.readers = len(c.unary), true
		}
		if pc, ok := p.(PanicCounter); ok {
			c.panics = append(c.panics, pc)
		}
		if r, ok := p.(Refusals); ok {
			c.refusals = append(c.refusals, r)
		}
		c.unary = append(c.unary, p.UnaryServerInterceptor())
		c.stream = append(c.stream, p.StreamServerInterceptor())
	}
	if c.decodeAt < 0 {
		c.decodeAt = len(c.unary)
	}
	c.typed.unary, c.typed.stream = len(cfg.Unary) > 0, len(cfg.Stream) > 0
	c.unary = append(c.unary, cfg.Unary...)
	c.stream = append(c.stream, cfg.Stream...)
	c.head = []grpc.UnaryServerInterceptor{errorSourceUnary, c.recoveryUnary(), c.factsUnary}
	return c
}

// Mode is how the proxy of a method should hold its messages: as the
// generated types when the embedder's interceptors are on the chain,
// decoded for the policies when one reads requests, else as bytes.
func (c *Chain) Mode(streams bool) proxy.Mode {
	typed := c.typed.unary
	if streams {
		typed = c.typed.stream
	}
	switch {
	case typed:
		return proxy.Typed
	case c.readers:
		return proxy.ForPolicies
	}
	return proxy.AsBytes
}

// Bind returns the function that nests the unary chain, with decode (nil
// when nothing reads requests) at its place, around one method's handler.
// Each routed method's chain is bound once at start, so a call runs it
// without allocating its nesting; both doors call the same bound chain.
func (c *Chain) Bind(fullMethod string, decode grpc.UnaryServerInterceptor) func(grpc.UnaryHandler) grpc.UnaryHandler {
	steps := slices.Concat(c.head, c.unary)
	if decode != nil {
		steps = slices.Insert(steps, len(c.head)+c.decodeAt, decode)
	}
	return bind(steps, fullMethod)
}

// BindOuter and BindInner bind the two halves of the unary chain around
// the decode step's place: the outer half (error source, recovery, call
// facts and the policies that do not read requests) and the inner half
// (the policies that do, and the embedder's). The REST door runs the outer
// half before it reads a request's body, so auth and rate limiting refuse
// a call before its body costs anything, and the inner half once
// grpc-gateway has decoded the body.
func (c *Chain) BindOuter(fullMethod string) func(grpc.UnaryHandler) grpc.UnaryHandler {
	return bind(slices.Concat(c.head, c.unary[:c.decodeAt]), fullMethod)
}

func (c *Chain) BindInner(fullMethod string) func(grpc.UnaryHandler) grpc.UnaryHandler {
	return bind(c.unary[c.decodeAt:], fullMethod)
}

func bind(steps []grpc.UnaryServerInterceptor, fullMethod string) func(grpc.UnaryHandler) grpc.UnaryHandler {
	info := &grpc.UnaryServerInfo{FullMethod: fullMethod}
	return func(handler grpc.UnaryHandler) grpc.UnaryHandler {
		for i := len(steps) - 1; i >= 0; i-- {
			step, next := steps[i], handler
			handler = func(ctx context.Context, req any) (any, error) { return step(ctx, req, info, next) }
		}
		return handler
	}
}

// ServerOptions are the gRPC server's interceptors and unknown-method
// handler. Routed unary methods run their bound chains instead of the
// server's unary interceptors, which only the gateway's own services
// (health, reflection) meet. decodeStream is the proxy's stream decode
// step, placed as in unary chains.
func (c *Chain) ServerOptions(decodeStream grpc.StreamServerInterceptor) []grpc.ServerOption {
	routed := slices.Concat([]grpc.StreamServerInterceptor{c.factsStream}, c.stream)
	if c.readers || c.typed.stream {
		routed = slices.Insert(routed, 1+c.decodeAt, decodeStream)
	}
	isRouted := selector.MatchFunc(func(_ context.Context, m interceptors.CallMeta) bool {
		_, ok := c.routes.Lookup(m.FullMethod())
		return ok
	})
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(errorSourceUnary, c.recoveryUnary()),
		grpc.ChainStreamInterceptor(errorSourceStream, c.recoveryStream(),
			selector.StreamServerInterceptor(chainStream(routed), isRouted)),
		grpc.UnknownServiceHandler(c.unknown),
	}
}

// chainStream nests stream interceptors into one, for the selector.
func chainStream(steps []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		for i := len(steps) - 1; i >= 0; i-- {
			step, next := steps[i], handler
			handler = func(srv any, ss grpc.ServerStream) error { return step(srv, ss, info, next) }
		}
		return handler(srv, ss)
	}
}
