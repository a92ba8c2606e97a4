package chain

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// RESTPeer is the peer of every in-process REST call. Its address tells the
// chain that the REST door's metadata (proxy.MDRoute, proxy.MDClientIP,
// proxy.MDClientCert) is the door's own.
var RESTPeer = &peer.Peer{Addr: restAddr{}}

// NewRESTPeer is RESTPeer for a request that came over TLS, or for a
// composite's step (step non-nil, which the call's facts take as
// policy.Call.Step): its AuthInfo is the request's TLS state, as the gRPC
// door's is the connection's (credentials.TLSInfo), so the chain reads a
// client certificate the same way from both doors. Without TLS and a step
// it is RESTPeer.
func NewRESTPeer(cs *tls.ConnectionState, step *policy.Step) *peer.Peer {
	if cs == nil && step == nil {
		return RESTPeer
	}
	p := &peer.Peer{Addr: restAddr{step: step}}
	if cs != nil {
		p.AuthInfo = credentials.TLSInfo{State: *cs}
	}
	return p
}

type restAddr struct{ step *policy.Step }

func (restAddr) Network() string { return "portico-rest" }
func (restAddr) String() string  { return "portico-rest" }

// bufconnNetwork is the network of the in-memory connection that REST
// streams take; nothing outside the process can dial it.
const bufconnNetwork = "bufconn"

func fromRESTDoor(a net.Addr) bool {
	if _, ok := a.(restAddr); ok {
		return true
	}
	return a != nil && a.Network() == bufconnNetwork
}

type webKey struct{}

// WebContext marks ctx as a gRPC-Web or Connect call's, for the call's
// facts (policy.Call.Web): the web door hands such a call to the gRPC
// server's ServeHTTP, whose stream's context descends from the request's.
func WebContext(ctx context.Context) context.Context { return context.WithValue(ctx, webKey{}, true) }

// factsUnary puts the call's *policy.Call into the context, so every
// policy sees the same facts.
func (c *Chain) factsUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	call, err := c.newCall(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(policy.NewContext(ctx, call), req)
}

func (c *Chain) factsStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	call, err := c.newCall(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: policy.NewContext(ss.Context(), call)})
}

// newCall describes a call to a routed method. The chain is bound to routed
// methods only, so a method without a route is a wiring mistake: INTERNAL.
func (c *Chain) newCall(ctx context.Context, fullMethod string) (*policy.Call, error) {
	r, ok := c.routes.Lookup(fullMethod)
	if !ok {
		return nil, policy.Error(codes.Internal, policy.ReasonInternal, fmt.Sprintf("the chain met %s, which has no route", fullMethod), nil)
	}
	p, _ := peer.FromContext(ctx)
	// The door's map, found once here for every reader after the head.
	in, _ := policy.Incoming(ctx)
	call := &policy.Call{
		FullMethod: r.FullMethod,
		Service:    r.Service,
		Method:     r.Method,
		Backend:    r.Backend,
		Policy:     r.Policy,
		Transport:  policy.GRPC,
		Incoming:   in,
		Input:      r.Input.Descriptor(),
	}
	call.ClientIP = c.clientIP(ctx, call, p)
	if p != nil {
		switch _, tcp := p.Addr.(*net.TCPAddr); {
		case fromRESTDoor(p.Addr):
			call.Transport = policy.REST
			call.HTTPRoute = first(call.IncomingValue(ctx, proxy.MDRoute))
			if a, ok := p.Addr.(restAddr); ok {
				call.Step = a.step
			}
		case !tcp: // a native call's peer is a TCP address: only others look
			call.Web = ctx.Value(webKey{}) != nil
		}
	}
	call.ClientCert = clientCert(ctx, call, p)
	return call, nil
}

// clientCert is the leaf of the caller's verified certificate chain, or
// nil. Only a chain the handshake verified counts: a certificate that was
// presented but not verified (a listener that asks for one without
// requiring it, or a CA the listener does not trust) proves nothing. A
// gRPC connection and a unary REST call carry the TLS state in the peer; a
// REST stream, whose peer is the in-memory connection, carries the REST
// door's word (proxy.MDClientCert), which the door gives only for a verified
// chain.
func clientCert(ctx context.Context, call *policy.Call, p *peer.Peer) *x509.Certificate {
	if p == nil {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if v := ti.State.VerifiedChains; len(v) > 0 && len(v[0]) > 0 {
			return v[0][0]
		}
		return nil
	}
	if p.Addr == nil || p.Addr.Network() != bufconnNetwork {
		return nil
	}
	der := call.IncomingValue(ctx, proxy.MDClientCert)
	if len(der) != 1 {
		return nil
	}
	cert, err := x509.ParseCertificate([]byte(der[0]))
	if err != nil {
		return nil // the door parsed it once already: nothing to believe
	}
	return cert
}

// clientIP is the caller's address: the REST door's word for calls from
// it, else the peer's, behind trusted proxies. Single keys, not
// metadata.FromIncomingContext: that copies every key and value of the
// call, and this runs once per call. p is ctx's peer.
func (c *Chain) clientIP(ctx context.Context, call *policy.Call, p *peer.Peer) string {
	switch {
	case p == nil || p.Addr == nil:
		return clientip.Unknown
	case fromRESTDoor(p.Addr):
		return first(call.IncomingValue(ctx, proxy.MDClientIP))
	}
	forwardedFor := call.IncomingValue(ctx, proxy.MDForwardedFor)
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return c.trusted.FromAddr(tcp.AddrPort().Addr(), forwardedFor)
	}
	return c.trusted.FromRemote(p.Addr.String(), forwardedFor)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// contextStream is a ServerStream with a different context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// Unknown answers a method the gateway does not route, on the gRPC door:
// UNIMPLEMENTED with reason NO_ROUTE, as the REST door answers an unknown
// path, and counted as a refusal. The server's interceptors mark its source.
func (c *Chain) unknown(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	if len(method) > 256 {
		method = method[:256] + "..."
	}
	err := policy.Error(codes.Unimplemented, policy.ReasonNoRoute, fmt.Sprintf("no route for gRPC method %q", method), nil)
	ctx := ss.Context()
	p, _ := peer.FromContext(ctx)
	call := &policy.Call{Transport: policy.GRPC}
	call.ClientIP = c.clientIP(ctx, call, p)
	for _, r := range c.refusals {
		r.Refused(ctx, call, err, 0)
	}
	return err
}

// Refusals returns the policies that account for refused calls, for the
// REST door.
func (c *Chain) Refusals() []Refusals { return c.refusals }
