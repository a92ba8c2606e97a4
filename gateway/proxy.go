package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// proxyDesc builds a grpc.ServiceDesc whose handlers forward each method of
// one proto service to its backend. The interceptor chain runs around these
// handlers like around any generated service.
func proxyDesc(service string, routes []*Route, conns map[string]*grpc.ClientConn) *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
	}
	for _, r := range routes {
		if r.Service != service {
			continue
		}
		p := &methodProxy{route: r, conn: conns[r.target()],
			desc: &grpc.StreamDesc{ServerStreams: r.ServerStreams, ClientStreams: r.ClientStreams}}
		if !r.ClientStreams && !r.ServerStreams {
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
	desc  *grpc.StreamDesc // the backend stream's shape, for streaming methods
}

func (p *methodProxy) unary(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := p.route.input.New().Interface()
	if err := dec(in); err != nil {
		// grpc-go has already sent its own status (INTERNAL) for a payload
		// that does not decode; nothing returned here reaches the client.
		return nil, err
	}
	if interceptor == nil {
		return p.invoke(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: p.route.FullMethod}, p.invoke)
}

func (p *methodProxy) invoke(ctx context.Context, req any) (any, error) {
	if _, ok := ctx.Deadline(); !ok && p.route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.route.Timeout)
		defer cancel()
	}
	out := p.route.output.New().Interface()
	var header, trailer metadata.MD
	var pr peer.Peer
	err := p.conn.Invoke(outgoingContext(ctx), p.route.FullMethod, req, out,
		grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&pr))
	if len(header) > 0 {
		_ = grpc.SetHeader(ctx, filterResponseMD(header))
	}
	if len(trailer) > 0 {
		_ = grpc.SetTrailer(ctx, filterResponseMD(trailer))
	}
	if err != nil {
		return nil, p.callError(ctx, err, pr.Addr != nil)
	}
	return out, nil
}

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
	var first proto.Message
	if !p.route.ClientStreams {
		first = p.route.input.New().Interface()
		if err := ss.RecvMsg(first); err != nil {
			return err
		}
	}
	var pr peer.Peer
	cs, err := p.conn.NewStream(outgoingContext(ctx), p.desc, p.route.FullMethod, grpc.Peer(&pr))
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
				m := p.route.input.New().Interface()
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

	// Backend to client.
	if md, err := cs.Header(); err == nil && len(md) > 0 {
		if err := ss.SetHeader(filterResponseMD(md)); err != nil {
			return err
		}
	}
	for {
		m := p.route.output.New().Interface()
		if err := cs.RecvMsg(m); err != nil {
			if md := cs.Trailer(); len(md) > 0 {
				ss.SetTrailer(filterResponseMD(md))
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

// filterResponseMD drops response metadata that grpc-go manages itself.
func filterResponseMD(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md))
	for k, v := range md {
		if k == "content-type" || k == ErrorSourceKey || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
			continue
		}
		out[k] = v
	}
	return out
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
