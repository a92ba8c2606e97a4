package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Metadata the REST front door attaches for the chain. It is believed only
// on calls from the REST door (in-process, or over the in-memory connection,
// which nothing outside the process can dial), and it never reaches a
// backend.
const (
	internalPrefix    = "x-portico-internal-"
	mdRoute           = internalPrefix + "route"
	mdClientIP        = internalPrefix + "client-ip"
	identityPrefix    = "x-portico-"
	mdConsumer        = "x-portico-consumer"
	mdSubject         = "x-portico-subject"
	mdScopes          = "x-portico-scopes"
	bufconnNetwork    = "bufconn"
	forwardedForKey   = "x-forwarded-for"
	forwardedForHTTP  = "X-Forwarded-For"
	unknownClientAddr = "unknown"
)

// proxies says whose X-Forwarded-For to believe.
type proxies []netip.Prefix

func parseProxies(cidrs []string) (proxies, error) {
	var out proxies
	for _, c := range cidrs {
		if !strings.Contains(c, "/") {
			a, err := netip.ParseAddr(c)
			if err != nil {
				return nil, fmt.Errorf("trusted_proxies: %q: %w", c, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies: %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (ps proxies) trusted(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// clientIP finds the client behind remote: when remote is a trusted proxy,
// X-Forwarded-For is read from the right, skipping trusted proxies; the first
// untrusted address is the client. Without trusted proxies the header is
// ignored, so a client cannot choose its own address.
func (ps proxies) clientIP(remote string, forwardedFor []string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return unknownClientAddr
	}
	return ps.clientAddr(addr, forwardedFor)
}

// clientAddr is clientIP for a remote address already parsed.
func (ps proxies) clientAddr(addr netip.Addr, forwardedFor []string) string {
	if !ps.trusted(addr) {
		return addr.Unmap().String()
	}
	var hops []string
	for _, v := range forwardedFor {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		addr = a
		if !ps.trusted(a) {
			break
		}
	}
	return addr.Unmap().String()
}

// restAnnotator runs in the REST door for each request: it passes the
// route template and the client's address to the chain.
func (g *Gateway) restAnnotator(ctx context.Context, r *http.Request) metadata.MD {
	route, _ := runtime.HTTPPathPattern(ctx)
	return metadata.Pairs(
		mdRoute, r.Method+" "+route,
		mdClientIP, g.proxies.clientIP(r.RemoteAddr, r.Header.Values(forwardedForHTTP)),
	)
}

// callUnary puts a *policy.Call into the context: the first step of the
// chain after error marking, so every policy sees the same facts.
func (g *Gateway) callUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c := g.newCall(ctx, info.FullMethod); c != nil {
		ctx = policy.NewContext(ctx, c)
	}
	return handler(ctx, req)
}

func (g *Gateway) callStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if c := g.newCall(ss.Context(), info.FullMethod); c != nil {
		ss = &contextStream{ServerStream: ss, ctx: policy.NewContext(ss.Context(), c)}
	}
	return handler(srv, ss)
}

// newCall describes a call to a routed method; nil for the gateway's own
// services (health, reflection).
func (g *Gateway) newCall(ctx context.Context, fullMethod string) *policy.Call {
	r, ok := g.byMethod[fullMethod]
	if !ok {
		return nil
	}
	c := &policy.Call{
		FullMethod: r.FullMethod,
		Service:    r.Service,
		Method:     r.Method,
		Backend:    r.Backend,
		Policy:     r.Policy,
		Transport:  policy.GRPC,
		ClientIP:   unknownClientAddr,
	}
	// Single keys, not metadata.FromIncomingContext: that copies every
	// key and value of the call, and this runs once per call.
	p, _ := peer.FromContext(ctx)
	switch {
	case p != nil && fromRESTDoor(p.Addr):
		c.Transport = policy.REST
		c.HTTPRoute = first(metadata.ValueFromIncomingContext(ctx, mdRoute))
		c.ClientIP = first(metadata.ValueFromIncomingContext(ctx, mdClientIP))
	case p != nil && p.Addr != nil:
		forwardedFor := metadata.ValueFromIncomingContext(ctx, forwardedForKey)
		if tcp, ok := p.Addr.(*net.TCPAddr); ok {
			c.ClientIP = g.proxies.clientAddr(tcp.AddrPort().Addr(), forwardedFor)
		} else {
			c.ClientIP = g.proxies.clientIP(p.Addr.String(), forwardedFor)
		}
	}
	return c
}

// fromRESTDoor reports a call from grpc-gateway: a unary call made in
// process, or a stream over the in-memory connection.
func fromRESTDoor(a net.Addr) bool {
	if _, ok := a.(restAddr); ok {
		return true
	}
	return a != nil && a.Network() == bufconnNetwork
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

// outgoingContext forwards the caller's metadata to the backend, less what
// belongs to the hop (pseudo-headers, content type, grpc-* which grpc-go
// sets itself, the deadline travelling in ctx) and less every x-portico-*
// key a client sent: identity comes only from the gateway's auth policy.
func outgoingContext(ctx context.Context) context.Context {
	// FromIncomingContext returns a copy, which becomes the outgoing
	// metadata once the hop's keys are gone.
	out, _ := metadata.FromIncomingContext(ctx)
	if out == nil {
		out = make(metadata.MD, 3)
	}
	for k := range out {
		if hopRequestKey(k) || credentialKey(k) || strings.HasPrefix(k, identityPrefix) {
			delete(out, k)
		}
	}
	if c, ok := policy.FromContext(ctx); ok && c.Identity != nil {
		// One backing array for the three values; full slice expressions
		// keep an append to one from writing into the next.
		vals := [...]string{headerSafe(c.Identity.Consumer), headerSafe(c.Identity.Subject), scopesHeader(c.Identity.Scopes)}
		v := vals[:]
		out[mdConsumer], out[mdSubject], out[mdScopes] = v[0:1:1], v[1:2:2], v[2:3:3]
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// scopesHeader is the scopes, space-separated, each made header-safe.
func scopesHeader(scopes []string) string {
	var b strings.Builder
	for i, s := range scopes {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(headerSafe(s))
	}
	return b.String()
}

// credentialKey reports the credentials the gateway consumes. They stop
// here: a backend gets the verified identity, never a key or token it could
// replay against other routes.
func credentialKey(k string) bool {
	switch k {
	case "authorization", "x-api-key", "grpcgateway-authorization":
		return true
	}
	return false
}

// headerSafe percent-encodes what metadata cannot carry (anything outside
// printable ASCII, spaces, and '%' itself), so a subject such as "josé"
// reaches the backend as "jos%C3%A9" instead of failing the call.
func headerSafe(s string) string {
	safe := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f || c == '%' {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
