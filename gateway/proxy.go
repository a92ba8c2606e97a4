package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/stats"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// newMethodProxies builds the proxy of every route, with the unary chain
// bound around each unary method. decodeUnary and decodeStream say whether
// a policy on the chain reads request fields, in which case requests are
// decoded for it (and still forwarded as received).
func newMethodProxies(routes []*Route, conns map[string]*grpc.ClientConn, st *stats.Stats, unary []grpc.UnaryServerInterceptor, decodeUnary, decodeStream bool) map[string]*methodProxy {
	out := make(map[string]*methodProxy, len(routes))
	for _, r := range routes {
		p := &methodProxy{route: r, conn: conns[r.target()], stats: st, decode: decodeUnary}
		if r.ClientStreams || r.ServerStreams {
			p.decode = decodeStream
			p.desc = &grpc.StreamDesc{ServerStreams: r.ServerStreams, ClientStreams: r.ClientStreams}
		} else {
			p.call = bindUnary(unary, &grpc.UnaryServerInfo{FullMethod: r.FullMethod}, p.invoke)
		}
		out[r.FullMethod] = p
	}
	return out
}

// proxyDesc builds a grpc.ServiceDesc whose handlers forward each method of
// one proto service to its backend. The interceptor chain runs around these
// handlers like around any generated service.
func proxyDesc(service string, routes []*Route, proxies map[string]*methodProxy) *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
	}
	for _, r := range routes {
		if r.Service != service {
			continue
		}
		p := proxies[r.FullMethod]
		if p.desc == nil {
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: r.Method, Handler: p.unary})
			continue
		}
		desc.Streams = append(desc.Streams, grpc.StreamDesc{
			StreamName:    r.Method,
			Handler:       p.stream,
			ServerStreams: r.ServerStreams,
			ClientStreams: r.ClientStreams,
		})
	}
	return desc
}

// methodProxy forwards one method.
type methodProxy struct {
	route  *Route
	conn   *grpc.ClientConn
	stats  *stats.Stats      // measures backend calls; nil when stats is off
	decode bool              // decode requests for the policies
	call   grpc.UnaryHandler // unary methods: the chain bound around invoke
	desc   *grpc.StreamDesc  // the backend stream's shape; nil for unary methods
}

// unary is the gRPC server's handler of a unary method. It runs the bound
// chain (p.call), not the interceptor the server passes, which is the same
// chain nested anew on every call.
func (p *methodProxy) unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	raw := &rawMessage{}
	if err := dec(raw); err != nil {
		return nil, err
	}
	var req any = raw
	if p.decode {
		m, err := p.decodeRequest(raw)
		if err != nil {
			return nil, markError(ctx, nil, err)
		}
		req = m
	}
	return p.call(ctx, req)
}

// decodeRequest decodes a request for the policies; the decoded message
// takes over raw's buffers, to send them on. Bytes that are not a message
// of the method's input type are the caller's mistake.
func (p *methodProxy) decodeRequest(raw *rawMessage) (*decodedMessage, error) {
	m := p.route.input.New().Interface()
	if err := proto.Unmarshal(contiguous(raw.data), m); err != nil {
		return nil, Error(codes.InvalidArgument, ReasonBadRequest,
			fmt.Sprintf("request is not a valid %s: %v", p.route.input.Descriptor().FullName(), err), nil)
	}
	return &decodedMessage{Message: m, data: raw.data, size: raw.size}, nil
}

// invoke calls the backend with req, as received or as grpc-gateway built
// it, and returns the backend's response undecoded (a *rawMessage).
func (p *methodProxy) invoke(ctx context.Context, req any) (any, error) {
	if _, ok := ctx.Deadline(); !ok && p.route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.route.Timeout)
		defer cancel()
	}
	out := &rawMessage{}
	var header, trailer metadata.MD
	var pr peer.Peer
	octx, measure := p.startBackendCall(ctx)
	err := p.conn.Invoke(octx, p.route.FullMethod, req, out,
		grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&pr))
	measure.Reached(pr.Addr)
	measure.End(err)
	// The Header and Trailer call options, like a client stream's Header
	// and Trailer, give the proxy copies of its own: filtered in place.
	if len(header) > 0 {
		_ = grpc.SetHeader(ctx, dropHopMD(header))
	}
	if len(trailer) > 0 {
		_ = grpc.SetTrailer(ctx, dropHopMD(trailer))
	}
	if err != nil {
		return nil, p.callError(ctx, err, pr.Addr != nil)
	}
	return out, nil
}

// newRequest is what a client's next stream message is received into.
func (p *methodProxy) newRequest() any {
	if p.decode {
		return &decodedMessage{Message: p.route.input.New().Interface()}
	}
	return &rawMessage{}
}

// startBackendCall makes the outgoing context of a backend call and starts
// measuring the call.
func (p *methodProxy) startBackendCall(ctx context.Context) (context.Context, stats.BackendCall) {
	octx := outgoingContext(ctx)
	if p.stats == nil {
		return octx, stats.BackendCall{}
	}
	return p.stats.StartBackendCall(octx, p.route.FullMethod)
}

func (p *methodProxy) stream(_ any, ss grpc.ServerStream) (err error) {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if _, ok := ctx.Deadline(); !ok && p.route.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, p.route.Timeout)
		defer cancel()
	}
	// A server stream has exactly one request: receive it (the chain
	// validates it on the way) before any backend is involved, so a bad
	// request fails with its own error.
	var first any
	if !p.route.ClientStreams {
		first = p.newRequest()
		if err := ss.RecvMsg(first); err != nil {
			return err
		}
	}
	var pr peer.Peer
	octx, measure := p.startBackendCall(ctx)
	defer func() { measure.End(err) }()
	cs, err := p.conn.NewStream(octx, p.desc, p.route.FullMethod, grpc.Peer(&pr))
	if err != nil {
		return p.callError(ctx, err, false)
	}

	// Client to backend. For a client stream this runs until the client
	// half-closes or the call ends. A receive error (an invalid message, a
	// client gone) ends the call with that error, not the backend's CANCELED.
	var recvErr atomic.Pointer[error]
	if first != nil {
		if err := cs.SendMsg(first); err == nil {
			_ = cs.CloseSend()
		} // else RecvMsg below reports the backend's status
	} else {
		go func() {
			for {
				m := p.newRequest()
				if err := ss.RecvMsg(m); err != nil {
					if errors.Is(err, io.EOF) {
						_ = cs.CloseSend()
					} else {
						recvErr.Store(&err)
						cancel()
					}
					return
				}
				if err := cs.SendMsg(m); err != nil {
					return // RecvMsg below reports the backend's status
				}
			}
		}()
	}

	// Backend to client, as bytes. One rawMessage serves every message:
	// each receive gives it new buffers, and SendMsg hands them over.
	md, _ := cs.Header() // its error, if any, comes again from RecvMsg
	// Header has settled the attempt: its context knows the instance.
	if bp, ok := peer.FromContext(cs.Context()); ok {
		measure.Reached(bp.Addr)
	}
	if len(md) > 0 {
		if err := ss.SetHeader(dropHopMD(md)); err != nil {
			return err
		}
	}
	m := &rawMessage{}
	for {
		if err := cs.RecvMsg(m); err != nil {
			if md := cs.Trailer(); len(md) > 0 {
				ss.SetTrailer(dropHopMD(md))
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if e := recvErr.Load(); e != nil {
				return *e
			}
			return p.callError(ctx, err, pr.Addr != nil)
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
}

// callError tells apart errors the backend sent from failures to reach one.
func (p *methodProxy) callError(ctx context.Context, err error, reached bool) error {
	st := status.Convert(err)
	meta := map[string]string{"backend": p.route.Backend}
	switch {
	case st.Code() == codes.DeadlineExceeded && deadlineReached(ctx):
		return Error(codes.DeadlineExceeded, ReasonDeadline,
			fmt.Sprintf("deadline exceeded waiting for backend %q", p.route.Backend), meta)
	case ctx.Err() != nil && st.Code() == codes.Canceled:
		return status.Error(codes.Canceled, "call canceled by the client")
	case !reached && st.Code() == codes.Unavailable:
		return Error(codes.Unavailable, ReasonNoHealthyBackend,
			fmt.Sprintf("no healthy instance of backend %q is reachable", p.route.Backend), meta)
	}
	return &backendError{st: st}
}

func hopRequestKey(k string) bool {
	switch k {
	case ":authority", "content-type", "user-agent", "te", "connection":
		return true
	}
	return strings.HasPrefix(k, "grpc-")
}

// dropHopMD removes from md, in place, the response metadata that grpc-go
// manages itself and the gateway's error source, and returns md.
func dropHopMD(md metadata.MD) metadata.MD {
	for k := range md {
		if k == "content-type" || k == ErrorSourceKey || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
			delete(md, k)
		}
	}
	return md
}

// deadlineSlack is how close to the call's deadline a DEADLINE_EXCEEDED
// counts as that deadline firing. The backend gets the same deadline and its
// timer may fire a moment before ours; either way it is the call's deadline,
// not something the backend decided.
const deadlineSlack = 20 * time.Millisecond

func deadlineReached(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < deadlineSlack
}
