package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/stats"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	protobuf "google.golang.org/protobuf/proto"
)

// Mode is how a method proxy holds the messages of its method.
type Mode int

const (
	// AsBytes: nothing on the chain reads messages. Requests and responses
	// are the bytes received, sent on as they are.
	AsBytes Mode = iota
	// ForPolicies: the gateway's own policies (validation) read requests.
	// Each request is decoded for them and its bytes are still what the
	// backend gets; responses stay bytes.
	ForPolicies
	// Typed: interceptors of the embedder's are on the chain. They get
	// requests and responses as the generated Go types, as from any gRPC
	// server, and what they leave is what is encoded and sent.
	Typed
)

// Meter measures backend calls; *stats.Stats is one.
type Meter interface {
	StartBackendCall(ctx context.Context, fullMethod string) (context.Context, stats.BackendCall)
}

var _ Meter = (*stats.Stats)(nil)

// Limiter is the circuit breaker of a backend connection
// (*backend.Conn): Acquire takes a place for one call or stream, or
// refuses at once.
type Limiter interface {
	Acquire(ctx context.Context) (release func(), err error)
}

// Method forwards one routed method to its backend.
type Method struct {
	route  *route.Route
	conn   grpc.ClientConnInterface
	limit  Limiter // the conn's, when it has one
	mode   Mode    // how requests and responses are held
	meter  Meter
	logger *slog.Logger
	// readLimit bounds the wait for a stream's first request message.
	readLimit     time.Duration
	onReadTimeout func()
	shutdown      context.Context   // ends open streams; nil: never
	call          grpc.UnaryHandler // unary methods: the chain bound around Invoke
	serve         grpc.UnaryHandler // a method the gateway serves itself; nil: a backend's
	desc          *grpc.StreamDesc  // the backend stream's shape; nil for unary methods
}

// Option configures a Method.
type Option func(*Method)

// WithMeter measures backend calls with meter (*stats.Stats).
func WithMeter(meter Meter) Option { return func(m *Method) { m.meter = meter } }

// WithReadLimit ends a stream whose first request message has not come
// within d, calling onTimeout (to count it).
func WithReadLimit(d time.Duration, onTimeout func()) Option {
	return func(m *Method) { m.readLimit, m.onReadTimeout = d, onTimeout }
}

// WithShutdown ends the streams still open when ctx ends with UNAVAILABLE
// (SHUTTING_DOWN): the gateway's grace is over.
func WithShutdown(ctx context.Context) Option { return func(m *Method) { m.shutdown = ctx } }

// WithLogger sets where the detail of failed backend connections goes.
func WithLogger(l *slog.Logger) Option { return func(m *Method) { m.logger = l } }

// WithHandler serves the method in the gateway with h instead of calling a
// backend: a composite method (package compose). Nil changes nothing.
func WithHandler(h grpc.UnaryHandler) Option { return func(m *Method) { m.serve = h } }

// New makes the proxy of r over conn, the connection to r's backend.
func New(r *route.Route, conn grpc.ClientConnInterface, mode Mode, opts ...Option) *Method {
	m := &Method{route: r, conn: conn, mode: mode, logger: slog.Default()}
	m.limit, _ = conn.(Limiter)
	for _, opt := range opts {
		opt(m)
	}
	if r.Streams() {
		m.desc = &grpc.StreamDesc{ServerStreams: r.ServerStreams, ClientStreams: r.ClientStreams}
	}
	return m
}

// Route is the method's route.
func (m *Method) Route() *route.Route { return m.route }

// Bind sets the chain a unary call runs: bind nests the interceptors
// around Invoke once, at start, so no call builds its nesting.
func (m *Method) Bind(bind func(handler grpc.UnaryHandler) grpc.UnaryHandler) {
	m.call = bind(m.Invoke)
}

// Call runs a unary call through the bound chain: what both doors call.
func (m *Method) Call(ctx context.Context, req any) (any, error) { return m.call(ctx, req) }

// ServiceDesc describes one proto service whose handlers are the method
// proxies, for grpc.Server.RegisterService.
func ServiceDesc(service string, methods []*Method) *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{ServiceName: service, HandlerType: (*any)(nil)}
	for _, m := range methods {
		r := m.route
		if r.Service != service {
			continue
		}
		if m.desc == nil {
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: r.Method, Handler: m.unary})
			continue
		}
		desc.Streams = append(desc.Streams, grpc.StreamDesc{
			StreamName: r.Method, Handler: m.stream, ServerStreams: r.ServerStreams, ClientStreams: r.ClientStreams,
		})
	}
	return desc
}

// unary is the gRPC server's handler of a unary method. It runs the bound
// chain, not the interceptor the server passes, which would be the same
// chain nested anew on every call.
func (m *Method) unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	raw := &rawMessage{}
	if err := dec(raw); err != nil {
		return nil, err
	}
	return m.call(ctx, raw)
}

// DecodeStep is the chain's step that decodes a native gRPC unary request
// for what reads it; the gateway binds it after auth and rate limiting, so
// an anonymous caller learns nothing about a protected method's input and a
// request that does not decode is a call like any other for stats. REST
// requests arrive decoded. Nil in AsBytes mode: nothing reads requests.
func (m *Method) DecodeStep() grpc.UnaryServerInterceptor {
	if m.mode == AsBytes {
		return nil
	}
	return m.decodeStep
}

func (m *Method) decodeStep(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	raw, ok := req.(*rawMessage)
	if !ok {
		return handler(ctx, req)
	}
	msg := m.route.Input.New().Interface()
	if err := raw.decodeNew(msg); err != nil {
		return nil, err
	}
	if m.mode == Typed {
		// Encoded again from what the interceptors leave.
		raw.release()
		return handler(ctx, msg)
	}
	// The decoded message takes over raw's buffers, to send them on.
	return handler(ctx, &decodedMessage{Message: msg, rawMessage: *raw})
}

// DecodeStream is the stream chain's decode step, at the same place as
// DecodeStep: each client message the proxy asks for decoded (ForPolicies
// and Typed modes) is received as bytes and decoded here, so a message
// that does not decode fails the stream with INVALID_ARGUMENT, as a unary
// call does.
func DecodeStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, decodingStream{ss})
}

type decodingStream struct{ grpc.ServerStream }

func (s decodingStream) RecvMsg(m any) error {
	switch v := m.(type) {
	case *decodedMessage:
		if err := s.ServerStream.RecvMsg(&v.rawMessage); err != nil {
			return err
		}
		return v.decodeInto(v.Message)
	case protobuf.Message:
		raw := &rawMessage{}
		if err := s.ServerStream.RecvMsg(raw); err != nil {
			return err
		}
		defer raw.release()
		return raw.decodeInto(v)
	}
	return s.ServerStream.RecvMsg(m)
}

// Invoke calls the backend with req, as received, decoded for the policies
// or as grpc-gateway built it, and returns the backend's response: a
// *rawMessage, or in Typed mode the generated Go type.
func (m *Method) Invoke(ctx context.Context, req any) (any, error) {
	if _, ok := ctx.Deadline(); !ok && m.route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.route.Timeout)
		defer cancel()
	}
	if m.serve != nil {
		return m.serve(ctx, req)
	}
	if m.limit != nil {
		release, err := m.limit.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	out := m.newResponse()
	// What the call options fill in, in one object: apart, each would be
	// an allocation of its own.
	var got struct {
		header, trailer metadata.MD
		peer            peer.Peer
	}
	call, _ := policy.FromContext(ctx)
	octx, measure := m.startBackendCall(ctx, call)
	err := m.conn.Invoke(octx, m.route.FullMethod, req, out,
		grpc.Header(&got.header), grpc.Trailer(&got.trailer), grpc.Peer(&got.peer))
	header, trailer := got.header, got.trailer
	measure.Reached(got.peer.Addr)
	measure.Attempts(attempts(call))
	measure.End(err)
	if err != nil {
		// Read before the filtering below, which drops content-type.
		err = m.backendError(ctx, err, got.peer.Addr != nil, header, trailer)
	}
	// The Header and Trailer call options, like a client stream's Header
	// and Trailer, give the proxy copies of its own: filtered in place,
	// and sent with what the policies added in one write.
	if len(header) > 0 {
		dropHopMD(header)
	}
	if call != nil {
		header = call.MergeHeader(header)
	}
	if len(header) > 0 {
		_ = grpc.SetHeader(ctx, header)
	}
	if len(trailer) > 0 {
		_ = grpc.SetTrailer(ctx, dropHopMD(trailer))
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// recvFirst receives a server stream's one request within the read limit.
// The receive goes on in its goroutine until grpc-go ends the stream,
// which the handler's return does; the limit is what ends the call.
func (m *Method) recvFirst(ss grpc.ServerStream, first any) error {
	if m.readLimit <= 0 {
		return ss.RecvMsg(first)
	}
	done := make(chan error, 1)
	go func() { done <- ss.RecvMsg(first) }()
	t := time.NewTimer(m.readLimit)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return m.readTimedOut()
	}
}

// readTimedOut is the answer to a stream whose request did not come in time.
func (m *Method) readTimedOut() error {
	if m.onReadTimeout != nil {
		m.onReadTimeout()
	}
	return policy.Error(codes.DeadlineExceeded, policy.ReasonRequestTimeout,
		fmt.Sprintf("no request message arrived within %v", m.readLimit), nil)
}

// newRequest is what a client's next stream message is received into.
func (m *Method) newRequest() any {
	switch m.mode {
	case ForPolicies:
		return &decodedMessage{Message: m.route.Input.New().Interface()}
	case Typed:
		return m.route.Input.New().Interface()
	}
	return &rawMessage{}
}

// newResponse is what a backend's next response is received into.
func (m *Method) newResponse() any {
	if m.mode == Typed {
		return m.route.Output.New().Interface()
	}
	return &rawMessage{}
}

// startBackendCall makes the outgoing context of a backend call, c's, and
// starts measuring the call.
func (m *Method) startBackendCall(ctx context.Context, c *policy.Call) (context.Context, stats.BackendCall) {
	octx := m.outgoingContext(ctx, c)
	if m.meter == nil {
		return octx, stats.BackendCall{}
	}
	return m.meter.StartBackendCall(octx, m.route.FullMethod)
}

// errBackendStreamCanceled is what a backend stream that the proxy gave up
// on (the client went away, or sent an invalid message) counts as.
var errBackendStreamCanceled = status.Error(codes.Canceled, "the client's side of the stream ended first")

func (m *Method) stream(_ any, ss grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if _, ok := ctx.Deadline(); !ok && m.route.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, m.route.Timeout)
		defer cancel()
	}
	// A server stream has exactly one request: receive it (the chain
	// validates it on the way) before any backend is involved, so a bad
	// request fails with its own error.
	var first any
	if !m.route.ClientStreams {
		first = m.newRequest()
		if err := m.recvFirst(ss, first); err != nil {
			return err
		}
	}
	if m.limit != nil {
		release, err := m.limit.Acquire(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	var pr peer.Peer
	call, _ := policy.FromContext(ctx)
	octx, measure := m.startBackendCall(ctx, call)
	// The backend's side is measured by how the backend stream ended, not
	// by what the client is told.
	backendErr := errBackendStreamCanceled
	defer func() {
		measure.Attempts(attempts(call))
		measure.End(backendErr)
	}()
	cs, err := m.conn.NewStream(octx, m.desc, m.route.FullMethod, grpc.Peer(&pr))
	if err != nil {
		backendErr = err
		return m.backendError(ctx, err, false, nil, nil)
	}

	// Client to backend. For a client stream this runs until the client
	// half-closes or the call ends. A receive error (an invalid message, a
	// client gone) ends the call with that error, not the backend's CANCELED.
	var recvErr atomic.Pointer[error]
	if m.shutdown != nil {
		stop := context.AfterFunc(m.shutdown, func() {
			err := policy.Error(codes.Unavailable, policy.ReasonShuttingDown, "the gateway is shutting down", nil)
			recvErr.Store(&err)
			cancel()
		})
		defer stop()
	}
	var received atomic.Bool // the client's first message, or its half-close
	if first == nil && m.readLimit > 0 {
		// A client stream's first message must come within the read limit;
		// if not, the call ends with that error, not the backend's.
		t := time.AfterFunc(m.readLimit, func() {
			if !received.Load() {
				err := m.readTimedOut()
				recvErr.Store(&err)
				cancel()
			}
		})
		defer t.Stop()
	}
	if first != nil {
		if err := cs.SendMsg(first); err == nil {
			_ = cs.CloseSend()
		} // else RecvMsg below reports the backend's status
	} else {
		go func() {
			for {
				msg := m.newRequest()
				err := ss.RecvMsg(msg)
				received.Store(true)
				if err != nil {
					if errors.Is(err, io.EOF) {
						_ = cs.CloseSend()
					} else {
						recvErr.CompareAndSwap(nil, &err)
						cancel()
					}
					return
				}
				if err := cs.SendMsg(msg); err != nil {
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
		// Filtered in place: md stays non-nil, which tells backendError
		// that headers arrived.
		if err := ss.SetHeader(dropHopMD(md)); err != nil {
			return err
		}
	}
	msg := m.newResponse()
	for {
		if err := cs.RecvMsg(msg); err != nil {
			trailer := cs.Trailer()
			if !errors.Is(err, io.EOF) {
				// Read before the filtering below, which drops content-type.
				backendErr = err
				err = m.backendError(ctx, err, pr.Addr != nil, md, trailer)
			} else {
				backendErr, err = nil, nil
			}
			if len(trailer) > 0 {
				ss.SetTrailer(dropHopMD(trailer))
			}
			if e := recvErr.Load(); e != nil && backendErr != nil {
				return *e
			}
			return err
		}
		if err := ss.SendMsg(msg); err != nil {
			return err
		}
	}
}

// attempts is how many attempts call (nil: none known) made to its
// backend: the backend connection's balancer counts them in its facts.
func attempts(c *policy.Call) int {
	if c == nil {
		return 0
	}
	return c.Attempts()
}
