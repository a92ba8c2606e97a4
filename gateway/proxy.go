package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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

// messageMode is how the proxy holds the messages of a method.
type messageMode int

const (
	// asBytes: no policy reads messages. Requests and responses are the
	// bytes received, sent on as they are.
	asBytes messageMode = iota
	// forPolicies: the gateway's own policies (validation) read requests.
	// Each request is decoded for them and its bytes are still what the
	// backend gets; responses stay bytes.
	forPolicies
	// typed: interceptors of the embedder's (WithUnaryInterceptors,
	// WithStreamInterceptors) are on the chain. They get requests and
	// responses as the generated Go types, as from any gRPC server, and
	// what they leave is what is encoded and sent.
	typed
)

// chainPlan is the interceptor chain of unary methods, bound around each
// method's proxy with the method's decode step at decodeAt: after auth and
// rate limiting, before validation and the embedder's interceptors.
type chainPlan struct {
	unary    []grpc.UnaryServerInterceptor
	decodeAt int
}

// newMethodProxies builds the proxy of every route, with the unary chain
// bound around each unary method.
func newMethodProxies(routes []*Route, conns map[string]*grpc.ClientConn, st *stats.Stats, plan chainPlan, unaryMode, streamMode messageMode) map[string]*methodProxy {
	out := make(map[string]*methodProxy, len(routes))
	for _, r := range routes {
		p := &methodProxy{route: r, conn: conns[r.target()], stats: st, mode: unaryMode}
		if r.ClientStreams || r.ServerStreams {
			p.mode = streamMode
			p.desc = &grpc.StreamDesc{ServerStreams: r.ServerStreams, ClientStreams: r.ClientStreams}
			out[r.FullMethod] = p
			continue
		}
		chain := plan.unary
		if p.mode != asBytes {
			chain = slices.Insert(slices.Clone(plan.unary), plan.decodeAt, grpc.UnaryServerInterceptor(p.decodeStep))
		}
		p.call = bindUnary(chain, &grpc.UnaryServerInfo{FullMethod: r.FullMethod}, p.invoke)
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
	route *Route
	conn  *grpc.ClientConn
	stats *stats.Stats      // measures backend calls; nil when stats is off
	mode  messageMode       // how requests and responses are held
	call  grpc.UnaryHandler // unary methods: the chain bound around invoke
	desc  *grpc.StreamDesc  // the backend stream's shape; nil for unary methods
}

// unary is the gRPC server's handler of a unary method. It runs the bound
// chain (p.call), not the interceptor the server passes, which is the same
// chain nested anew on every call.
func (p *methodProxy) unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	raw := &rawMessage{}
	if err := dec(raw); err != nil {
		return nil, err
	}
	return p.call(ctx, raw)
}

// decodeStep is the chain's step that decodes a native gRPC request, bound
// after auth and rate limiting: an anonymous caller learns nothing about a
// protected method's input, and a request that does not decode is a call
// like any other for stats. Bytes that are not a message of the method's
// input type are the caller's mistake. REST requests arrive decoded.
func (p *methodProxy) decodeStep(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	raw, ok := req.(*rawMessage)
	if !ok {
		return handler(ctx, req)
	}
	m := p.route.input.New().Interface()
	if err := proto.Unmarshal(contiguous(raw.data), m); err != nil {
		return nil, Error(codes.InvalidArgument, ReasonBadRequest,
			fmt.Sprintf("request is not a valid %s: %v", p.route.input.Descriptor().FullName(), err), nil)
	}
	if p.mode == typed {
		// Encoded again from what the interceptors leave.
		raw.release()
		return handler(ctx, m)
	}
	// The decoded message takes over raw's buffers, to send them on.
	return handler(ctx, &decodedMessage{Message: m, rawMessage: *raw})
}

// invoke calls the backend with req, as received, decoded for the policies
// or as grpc-gateway built it, and returns the backend's response: a
// *rawMessage, or in typed mode the generated Go type.
func (p *methodProxy) invoke(ctx context.Context, req any) (any, error) {
	if _, ok := ctx.Deadline(); !ok && p.route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.route.Timeout)
		defer cancel()
	}
	out := p.newResponse()
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
	switch p.mode {
	case forPolicies:
		return &decodedMessage{Message: p.route.input.New().Interface()}
	case typed:
		return p.route.input.New().Interface()
	}
	return &rawMessage{}
}

// newResponse is what a backend's next response is received into.
func (p *methodProxy) newResponse() any {
	if p.mode == typed {
		return p.route.output.New().Interface()
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

// errBackendStreamCanceled is what a backend stream that the proxy gave up
// on (the client went away, or sent an invalid message) counts as.
var errBackendStreamCanceled = status.Error(codes.Canceled, "the client's side of the stream ended first")

func (p *methodProxy) stream(_ any, ss grpc.ServerStream) error {
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
	// The backend's side is measured by how the backend stream ended, not
	// by what the client is told.
	backendErr := errBackendStreamCanceled
	defer func() { measure.End(backendErr) }()
	cs, err := p.conn.NewStream(octx, p.desc, p.route.FullMethod, grpc.Peer(&pr))
	if err != nil {
		backendErr = err
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

	// Backend to client. As bytes, one rawMessage serves every message:
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
	m := p.newResponse()
	for {
		if err := cs.RecvMsg(m); err != nil {
			if md := cs.Trailer(); len(md) > 0 {
				ss.SetTrailer(dropHopMD(md))
			}
			if errors.Is(err, io.EOF) {
				backendErr = nil
				return nil
			}
			if e := recvErr.Load(); e != nil {
				return *e
			}
			backendErr = err
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
