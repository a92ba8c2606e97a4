package rest

import (
	"context"
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc/metadata"
)

// A unary call's outer half reads the request's headers as incoming
// metadata, built as grpc-gateway's AnnotateContext builds them (the door's
// header matcher, authorization first, x-forwarded-host and
// x-forwarded-for) with the door's own keys (annotate) on top. For a
// request of plain headers the door builds that metadata itself, in one
// map whose values share one array: AnnotateContext makes a list of pairs,
// a map of them, a map of the annotations and two joins of the three, and
// reading it back out of an outgoing context copies it all once more, 40
// allocations for a request of a handful of headers, more than any other
// step the door adds to a call. A request with anything AnnotateContext
// treats specially (grpc-timeout, a -bin header, a header that is not valid
// metadata, which it logs) goes through AnnotateContext itself, so the two
// cannot disagree where it matters; TestIncomingMatchesGRPCGateway holds
// the plain case to the same metadata.

// The headers AnnotateContext handles apart from the matcher.
const (
	hdrAuthorization   = "Authorization"
	hdrForwardedFor    = "X-Forwarded-For"
	hdrForwardedHost   = "X-Forwarded-Host"
	hdrGRPCTimeout     = "Grpc-Timeout"
	mdAuthorization    = "authorization"
	mdForwardedHost    = "x-forwarded-host"
	binaryHeaderSuffix = "-Bin"
)

// commonHeaders are matched once, when the door is built, rather than on
// every request: what a browser, curl, a load balancer or a tracer sends.
var commonHeaders = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control", "Connection",
	"Content-Length", "Content-Type", "Cookie", "Forwarded", "Origin", "Pragma", "Referer", "Te",
	"Traceparent", "Tracestate", "User-Agent", "Via", "X-Api-Key", "X-Forwarded-Proto",
	"X-Real-Ip", "X-Request-Id", "Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site",
}

// headerKey is what a header becomes in the metadata.
type headerKey struct {
	md string // the metadata key, lower case; "" for none
	// plain: a key AnnotateContext takes as it is (valid, not reserved,
	// not binary), its values checked one by one.
	plain bool
}

// headerKeys matches the common headers with match, the mux's matcher.
func headerKeys(match runtime.HeaderMatcherFunc) map[string]headerKey {
	out := make(map[string]headerKey, len(commonHeaders))
	for _, h := range commonHeaders {
		out[h] = matchHeader(match, h)
	}
	return out
}

// matchHeader is what AnnotateContext makes of header key, canonical.
func matchHeader(match runtime.HeaderMatcherFunc, key string) headerKey {
	if key == hdrForwardedFor || key == hdrForwardedHost {
		return headerKey{plain: true} // added apart, from the request
	}
	h, ok := match(key)
	if !ok {
		return headerKey{plain: true}
	}
	if strings.EqualFold(h, hdrForwardedFor) || strings.EqualFold(h, hdrForwardedHost) ||
		!validKey(h) || strings.HasSuffix(key, binaryHeaderSuffix) {
		return headerKey{}
	}
	return headerKey{md: strings.ToLower(h), plain: true}
}

// incoming is the incoming metadata of r, a call to b, and true; or false
// when r needs AnnotateContext (see above).
func (d *Door) incoming(r *http.Request, b *binding) (metadata.MD, bool) {
	if _, ok := r.Header[hdrGRPCTimeout]; ok {
		return nil, false
	}
	// Room for every key and value: authorization's twice (as itself and
	// as grpcgateway-authorization), x-forwarded-host and -for, the door's
	// two. (A map of up to 8 keys is one allocation.)
	auth := len(r.Header[hdrAuthorization])
	keys, n := len(r.Header)+min(auth, 1)+4, auth+4
	for _, vs := range r.Header {
		n += len(vs)
	}
	md := make(metadata.MD, keys)
	values := make([]string, 0, n)
	set := func(k, v string) {
		values = append(values, v)
		md[k] = values[len(values)-1 : len(values) : len(values)]
	}
	add := func(k, v string) {
		if prev, ok := md[k]; ok {
			md[k] = append(prev, v)
			return
		}
		set(k, v)
	}
	for _, v := range r.Header[hdrAuthorization] {
		if validValue(v) {
			add(mdAuthorization, v)
		}
	}
	for key, vs := range r.Header {
		hk, ok := d.headerKeys[key]
		if !ok {
			key = textproto.CanonicalMIMEHeaderKey(key)
			if hk, ok = d.headerKeys[key]; !ok {
				hk = matchHeader(d.match, key)
			}
		}
		if !hk.plain {
			return nil, false
		}
		if hk.md == "" {
			continue
		}
		for _, v := range vs {
			if !validValue(v) {
				return nil, false
			}
			add(hk.md, v)
		}
	}
	if host := r.Header.Get(hdrForwardedHost); host != "" && validValue(host) {
		add(mdForwardedHost, host)
	} else if r.Host != "" && validValue(r.Host) {
		add(mdForwardedHost, r.Host)
	}
	if xff, ok := forwardedFor(r); ok {
		add(proxy.MDForwardedFor, xff)
	}
	// The door's keys replace any the headers gave (annotate).
	set(proxy.MDRoute, b.route)
	set(proxy.MDClientIP, d.clientIP(r))
	return md, true
}

// forwardedFor is x-forwarded-for as AnnotateContext writes it, if at
// all: the request's valid X-Forwarded-For values and the client's address.
func forwardedFor(r *http.Request) (string, bool) {
	var remote string
	if r.RemoteAddr != "" {
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil && validValue(ip) {
			remote = ip
		}
	}
	prior := r.Header[hdrForwardedFor]
	if len(prior) == 0 {
		return remote, remote != "" // no copy
	}
	xff := make([]string, 0, len(prior)+1)
	for _, v := range prior {
		if validValue(v) {
			xff = append(xff, v)
		}
	}
	if remote != "" {
		xff = append(xff, remote)
	}
	return strings.Join(xff, ", "), len(xff) > 0
}

// incomingContext is ctx with r's headers as incoming metadata, for the
// outer half of b's chain: built by incoming, or by AnnotateContext.
func (d *Door) incomingContext(ctx context.Context, r *http.Request, b *binding) (context.Context, error) {
	if md, ok := d.incoming(r, b); ok {
		return policy.NewIncomingContext(ctx, md), nil
	}
	ctx, err := runtime.AnnotateIncomingContext(ctx, d.mux, r, b.method.Route().FullMethod, runtime.WithHTTPPathPattern(b.template))
	if err != nil {
		return ctx, err
	}
	// The door's map is this call's on this path too, so nothing a caller's
	// context carried can stand for it (a copy: the path is rare).
	md, _ := metadata.FromIncomingContext(ctx)
	return policy.WithIncoming(ctx, md), nil
}

// outgoingKeys are response metadata keys the gateway's policies set on
// calls they admit (ratelimit's four on every call of a limited route),
// matched once, when the door is built: the outgoing matcher gives each
// its HTTP name with http.CanonicalHeaderKey, a new string every time.
var outgoingKeys = []string{"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy",
	"retry-after", "www-authenticate"}

// outgoingMatcher is match with its answers for outgoingKeys kept.
func outgoingMatcher(match runtime.HeaderMatcherFunc) runtime.HeaderMatcherFunc {
	type answer struct {
		h  string
		ok bool
	}
	known := make(map[string]answer, len(outgoingKeys))
	for _, k := range outgoingKeys {
		h, ok := match(k)
		known[k] = answer{h, ok}
	}
	return func(k string) (string, bool) {
		if a, ok := known[k]; ok {
			return a.h, a.ok
		}
		return match(k)
	}
}

// validKey is grpc-gateway's test of a metadata key: 0-9 a-z A-Z _ - .
func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validValue is grpc-gateway's test of a metadata value: printable ASCII.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}
