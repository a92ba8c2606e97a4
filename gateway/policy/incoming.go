package policy

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// A call's incoming metadata as its door received it. grpc-go's accessors
// copy: metadata.FromIncomingContext copies every key and value, and
// ValueFromIncomingContext copies what it finds and, on a miss, walks every
// key comparing without case. The chain reads a handful of keys a call, most
// of them missing, and the proxy forwards a few of a call's keys: the doors
// hand both the map itself, which they only read.

type incomingKey struct{}

// WithIncoming returns ctx carrying md, the call's incoming metadata as its
// door received it: the map that the door (or grpc-go's transport) puts into
// ctx as incoming metadata, keys in lower case. Nobody may change it.
func WithIncoming(ctx context.Context, md metadata.MD) context.Context {
	return context.WithValue(ctx, incomingKey{}, md)
}

// NewIncomingContext is metadata.NewIncomingContext that is also the
// door's map (WithIncoming): for a door that builds the call's metadata.
func NewIncomingContext(ctx context.Context, md metadata.MD) context.Context {
	return WithIncoming(metadata.NewIncomingContext(ctx, md), md)
}

// Incoming returns the map WithIncoming put into ctx, which the caller must
// not change, and whether there was one.
func Incoming(ctx context.Context) (metadata.MD, bool) {
	md, ok := ctx.Value(incomingKey{}).(metadata.MD)
	return md, ok
}

// IncomingMD is Incoming for c's call (c may be nil): c.Incoming, without
// a walk of the context, when the chain's head found the door's map. The
// door puts the map at the bottom of the call's context (the gRPC door in
// its tap), below everything grpc-go and the chain add, so each lookup
// through ctx walks all of it.
func (c *Call) IncomingMD(ctx context.Context) (metadata.MD, bool) {
	if c != nil && c.Incoming != nil {
		return c.Incoming, true
	}
	return Incoming(ctx)
}

// IncomingValue is the package's IncomingValue for c's call (c may be
// nil), from the map IncomingMD finds.
func (c *Call) IncomingValue(ctx context.Context, key string) []string {
	if md, ok := c.IncomingMD(ctx); ok {
		return md[key]
	}
	return metadata.ValueFromIncomingContext(ctx, key)
}

// IncomingValue is metadata.ValueFromIncomingContext for a lower-case key,
// without its copy or its walk on a miss when the door gave the map. The
// caller must not change the result.
func IncomingValue(ctx context.Context, key string) []string {
	return (*Call)(nil).IncomingValue(ctx, key)
}
