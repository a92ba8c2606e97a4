package rest

import (
	"context"
	"crypto/tls"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// conn is the connection grpc-gateway's handlers call. A unary call is a
// function call into the same bound chain and proxy that native gRPC calls
// reach through the gRPC server; streams go over the in-memory connection.
type conn struct {
	methods map[string]*proxy.Method
	streams grpc.ClientConnInterface
	// outgoing names response metadata as HTTP headers: the mux's outgoing
	// header matcher, which the door's error handler uses too.
	outgoing runtime.HeaderMatcherFunc
}

var _ grpc.ClientConnInterface = (*conn)(nil)

func (c *conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if p := pendingFrom(ctx); p != nil && !p.invoked && p.b.method.Route().FullMethod == method {
		// The outer half of the chain has run (early.go): the inner half now.
		err := p.invokeInner(ctx, args, reply)
		// The outer half's rate limiter keeps its numbers in the call for
		// the proxy to send with the backend's headers. An inner half that
		// ended without them (a refusal, a composite method) leaves them
		// there; the outer half ends only after grpc-gateway has written
		// the response, so they go out here.
		if call, ok := policy.FromContext(ctx); ok {
			call.SendKeptHeader(ctx)
		}
		if sts, ok := grpc.ServerTransportStreamFromContext(ctx).(*transportStream); ok {
			if sts == &p.sts {
				// Straight into the response's headers, which grpc-gateway
				// would fill from a copy of each value (Header.Add).
				proxy.ForwardHeaders(p.w.Header(), sts.takeHeader(), c.outgoing)
			}
			sts.giveTo(opts)
		}
		return err
	}
	m, ok := c.methods[method]
	if !ok || m.Route().Streams() {
		return c.streams.Invoke(ctx, method, args, reply, opts...)
	}
	// A composite's step (or a unary call without a binding, early.go):
	// its mark, which the composite put a few contexts up, goes to the
	// chain's head in the call's peer (restPeer).
	step := policy.StepFromContext(ctx)
	// The method's max_timeout, as at either door.
	ctx, cancel := capDeadline(ctx, m)
	defer cancel()
	// What a gRPC server would give the handler: the request metadata as
	// incoming and none as outgoing (so a call the chain makes cannot
	// forward the client's credentials), the peer, and a stream to set
	// response metadata on.
	// The caller's context may carry its own call's incoming metadata as
	// the door's map (policy.Incoming): this call's replaces it.
	md, _ := metadata.FromOutgoingContext(ctx)
	sts := &transportStream{method: method}
	ctx = policy.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
	var cs *tls.ConnectionState
	if sc := streamFrom(ctx); sc != nil {
		cs = sc.tls // a unary call without a binding (early.go)
	}
	ctx = grpc.NewContextWithServerTransportStream(peer.NewContext(ctx, restPeer(ctx, cs, step)), sts)

	resp, err := m.Call(ctx, args)
	if err == nil {
		if err = proxy.DecodeReply(resp, reply); err != nil {
			// After the chain, which marks only its own errors.
			_ = sts.SetTrailer(metadata.Pairs(policy.ErrorSourceKey, policy.SourceGateway))
		}
	}
	sts.giveTo(opts)
	if err != nil {
		// As a gRPC server would send it: a status, Unknown for anything else.
		return status.Convert(err).Err()
	}
	return nil
}

func (c *conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := c.streams.NewStream(ctx, desc, method, opts...)
	if sc := streamFrom(ctx); sc != nil && err == nil {
		return &recordingStream{ClientStream: cs, call: sc}, nil
	}
	return cs, err
}

// transportStream collects the response metadata that the chain and the
// proxy set with grpc.SetHeader, grpc.SendHeader and grpc.SetTrailer.
type transportStream struct {
	method string

	mu              sync.Mutex
	header, trailer collected
}

func (s *transportStream) Method() string { return s.method }

// giveTo hands the collected metadata to the Header and Trailer call
// options, as a gRPC client connection would.
func (s *transportStream) giveTo(opts []grpc.CallOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = s.header.md
		case grpc.TrailerCallOption:
			*o.TrailerAddr = s.trailer.md
		}
	}
}

// takeHeader is the header metadata collected so far, which the stream
// then no longer holds.
func (s *transportStream) takeHeader() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	md := s.header.md
	s.header = collected{}
	return md
}

func (s *transportStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	s.header.add(md)
	s.mu.Unlock()
	return nil
}

func (s *transportStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *transportStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	s.trailer.add(md)
	s.mu.Unlock()
	return nil
}

// collected is response metadata as a transportStream collects it. The
// first metadata set is kept as it is, not copied as grpc-go's transport
// copies it (metadata.Join): the chain's policies and the proxy hand over
// metadata made for the call, usually once (the proxy merges the
// policies' into the backend's), and nothing here writes to it; it is
// copied only when more arrives. A copy of ratelimit's four keys and the
// backend's was 5 to 7 allocations a call.
type collected struct {
	md  metadata.MD
	own bool // md was made here (Join) and may be written
}

func (c *collected) add(md metadata.MD) {
	switch {
	case len(md) == 0:
	case c.md == nil:
		c.md = md
	case !c.own:
		c.md, c.own = metadata.Join(c.md, md), true
	default:
		for k, v := range md {
			c.md[k] = append(c.md[k], v...)
		}
	}
}
