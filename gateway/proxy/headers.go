package proxy

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Every rule about which headers and metadata cross the gateway, in both
// directions and on both doors, is in this file.

// The gateway's own keys. x-portico-* is never taken from a client: the
// identity keys are set only from the auth policy's verified identity, and
// the internal keys only by the REST door (believed only on calls from it,
// which nothing outside the process can make) and never reach a backend.
const (
	porticoPrefix = "x-portico-"
	// MDRoute and MDClientIP carry the REST door's facts about a call (its
	// route template and the client's address) to the chain.
	MDRoute    = porticoPrefix + "internal-route"
	MDClientIP = porticoPrefix + "internal-client-ip"
	// MDClientCert carries, from the REST door to the chain, the DER of the
	// leaf of a REST client's verified certificate chain, for REST streams:
	// they reach the chain over the in-memory connection, whose own peer has no
	// TLS. Binary metadata (-bin), so any bytes pass. Like every x-portico-*
	// key it is never taken from a client (proxy.IncomingHTTPHeader), believed
	// only on calls from the REST door, and never forwarded to a backend.
	MDClientCert = "x-portico-internal-client-cert-bin"
	// MDForwardedFor is where a gRPC client's proxies put its address.
	MDForwardedFor = "x-forwarded-for"

	mdConsumer = porticoPrefix + "consumer"
	mdSubject  = porticoPrefix + "subject"
	mdScopes   = porticoPrefix + "scopes"
)

// OutgoingContext is the context of a backend call: the caller's metadata,
// less what belongs to the hop (pseudo-headers, content type, grpc-* which
// grpc-go sets itself, the deadline travelling in ctx), less the
// credentials the gateway consumed, less every x-portico-* key a client
// sent, plus the verified identity.
func OutgoingContext(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	c, _ := policy.FromContext(ctx)
	return outgoingContext(ctx, c, in)
}

// outgoingContext is OutgoingContext from in, the incoming metadata of c's
// call (c may be nil): the door's own map (policy.Incoming), which it only
// reads, or a copy. A
// call's metadata is mostly the hop's, so the kept keys are few: they share
// in's values, capacity-capped so that an append copies.
func outgoingContext(ctx context.Context, c *policy.Call, in metadata.MD) context.Context {
	out := make(metadata.MD, 4)
	for k, v := range in {
		if !hopRequestKey(k) && !credentialKey(k) && !strings.HasPrefix(k, porticoPrefix) {
			out[k] = v[:len(v):len(v)]
		}
	}
	addHop(ctx, out)
	if c != nil && c.Identity != nil {
		// One backing array for the three values; full slice expressions
		// keep an append to one from writing into the next.
		vals := [...]string{headerSafe(c.Identity.Consumer), headerSafe(c.Identity.Subject), scopesHeader(c.Identity.Scopes)}
		v := vals[:]
		out[mdConsumer], out[mdSubject], out[mdScopes] = v[0:1:1], v[1:2:2], v[2:3:3]
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// addHop adds a gRPC client's address to x-forwarded-for in md, as
// grpc-gateway adds a REST client's: the backend sees the same chain of
// hops either way. A call from the REST door (a REST caller's, or a
// composite's step) has no TCP peer: its hop is in already.
func addHop(ctx context.Context, md metadata.MD) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return
	}
	if host, ok := hop(p.Addr); ok {
		if prev := md[MDForwardedFor]; len(prev) > 0 {
			md[MDForwardedFor] = []string{strings.Join(prev, ", ") + ", " + host}
		} else {
			md[MDForwardedFor] = []string{host}
		}
	}
}

// hop is the address of a client on TCP: a native gRPC caller's, or a
// gRPC-Web or Connect caller's, whose peer grpc-go's ServeHTTP gives as
// the request's RemoteAddr, network "tcp" (without it the caller's own
// x-forwarded-for would reach the backend as the whole chain).
func hop(a net.Addr) (string, bool) {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.AddrPort().Addr().Unmap().String(), true
	}
	if a == nil || a.Network() != "tcp" {
		return "", false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap().String(), err == nil
}

// StepMetadata is the metadata every step of a composite call sends into
// its method's chain (through the REST door's in-process connection): the
// caller's, credentials included, since each step authenticates the caller
// anew; no x-portico-* key the caller sent, since the chain believes the
// internal keys on calls from the REST door; the caller's address as the
// composite's chain found it; and x-forwarded-for with the caller's hop,
// which the step's own proxy cannot add (its peer is the REST door's).
func StepMetadata(ctx context.Context) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx) // a copy
	if md == nil {
		md = metadata.MD{}
	}
	for k := range md {
		if strings.HasPrefix(k, porticoPrefix) {
			delete(md, k)
		}
	}
	if c, ok := policy.FromContext(ctx); ok {
		md.Set(MDClientIP, c.ClientIP)
	}
	addHop(ctx, md)
	return md
}

func hopRequestKey(k string) bool {
	switch k {
	case ":authority", "content-type", "user-agent", "te", "connection":
		return true
	}
	return strings.HasPrefix(k, "grpc-")
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

// scopesHeader is the scopes, space-separated, each made header-safe.
func scopesHeader(scopes []string) string {
	if len(scopes) == 1 {
		return headerSafe(scopes[0]) // no copy when it is safe already
	}
	var b strings.Builder
	for i, s := range scopes {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(headerSafe(s))
	}
	return b.String()
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

// dropHopMD removes from a backend's response metadata, in place, what
// grpc-go manages itself and any error source the backend claims (only
// the gateway says who made an error), and returns md.
func dropHopMD(md metadata.MD) metadata.MD {
	for k := range md {
		if k == "content-type" || k == policy.ErrorSourceKey || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
			delete(md, k)
		}
	}
	return md
}

// IncomingHTTPHeader is the REST door's rule for request headers: x-* and
// W3C trace context keep their names as metadata, everything else goes as
// grpc-gateway does by default, and x-portico-* is never taken.
func IncomingHTTPHeader(key string) (string, bool) {
	k := strings.ToLower(key)
	if strings.HasPrefix(k, porticoPrefix) {
		return "", false
	}
	if strings.HasPrefix(k, "x-") || k == "traceparent" || k == "tracestate" {
		// Trace context keeps its names, so tracing reads it from REST and
		// gRPC alike and a backend sees what a gRPC caller would send.
		return k, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// OutgoingHTTPHeader is the REST door's rule for response metadata: x-*
// keys and the headers a REST client acts on keep their HTTP names, other
// keys get grpc-gateway's Grpc-Metadata- prefix, and the in-memory leg's
// own metadata is dropped.
func OutgoingHTTPHeader(key string) (string, bool) {
	key = strings.ToLower(key)
	switch {
	case key == policy.ErrorSourceKey, key == "content-type", strings.HasPrefix(key, "grpc-"):
		return "", false
	case strings.HasPrefix(key, "x-"), clientActsOn(key):
		return http.CanonicalHeaderKey(key), true
	default:
		return runtime.MetadataHeaderPrefix + key, true
	}
}

// clientActsOn reports the response metadata a refusing policy sets for
// the client to act on: when to retry, the limit's numbers, how to
// authenticate.
func clientActsOn(key string) bool {
	return key == "www-authenticate" || key == "retry-after" || strings.HasPrefix(key, "ratelimit")
}

// RefusalMetadata is what a composite call passes on to its caller from a
// required step that failed: of the step's response metadata, only what a
// client acts on (clientActsOn), so a step refused by its rate limit
// answers with its Retry-After and RateLimit-* as a direct call would.
func RefusalMetadata(header, trailer metadata.MD) metadata.MD {
	var out metadata.MD
	for _, md := range []metadata.MD{header, trailer} {
		for k, vs := range md {
			if clientActsOn(k) {
				if out == nil {
					out = metadata.MD{}
				}
				out[k] = append(out[k], vs...)
			}
		}
	}
	return out
}

// ForwardTrailers copies a failed call's trailers to HTTP headers by
// OutgoingHTTPHeader, each replacing a header of its name: the trailers are
// the refusal's word, and the headers may say the same (ratelimit sets its
// numbers both ways on a stream) or come from a policy that admitted the
// call before (a composite's own rate limit, when a step's refused it).
func ForwardTrailers(h http.Header, md metadata.MD) {
	fromTrailer := http.Header{}
	ForwardHeaders(fromTrailer, md, OutgoingHTTPHeader)
	maps.Copy(h, fromTrailer)
}

// ForwardHeaders copies response metadata to HTTP headers, under the names
// that name gives (OutgoingHTTPHeader, or the REST door's cache of it), as
// grpc-gateway forwards a call's header metadata, but without a slice per
// header: a header new to h takes md's values as they are, capped so that
// a later Add copies them rather than write into md.
func ForwardHeaders(h http.Header, md metadata.MD, name func(string) (string, bool)) {
	for k, vs := range md {
		n, ok := name(k)
		if !ok || len(vs) == 0 {
			continue
		}
		n = textproto.CanonicalMIMEHeaderKey(n) // no copy when it is already
		if cur, ok := h[n]; ok {
			h[n] = append(cur, vs...)
		} else {
			h[n] = vs[:len(vs):len(vs)]
		}
	}
}

// outgoingContext is OutgoingContext from the door's own map, when the
// door gave it and nothing can have changed the incoming metadata since:
// the embedder's interceptors (Typed mode) may, so with them the proxy
// reads it through grpc-go. c is the call's facts (nil without them).
func (m *Method) outgoingContext(ctx context.Context, c *policy.Call) context.Context {
	if m.mode != Typed {
		if in, ok := c.IncomingMD(ctx); ok {
			return outgoingContext(ctx, c, in)
		}
	}
	in, _ := metadata.FromIncomingContext(ctx)
	return outgoingContext(ctx, c, in)
}
