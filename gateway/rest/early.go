package rest

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// A unary REST call meets the chain before its body is read. Credentials
// and the caller's address are headers, so auth and rate limiting (the
// chain's outer half) run first; only a call they admit has its body read,
// within the route's limit, and decoded by grpc-gateway, whose handler
// then calls the inner half (validation, the embedder's interceptors) and
// the proxy through conn. An anonymous 4 MiB body on a protected route
// costs nothing but its headers.

// binding is one unary REST route: its method and the two halves of its
// bound chain.
type binding struct {
	method       *proxy.Method
	template     string // the route's HTTP template, as in route.Route.HTTP
	route        string // "VERB template", the call's route for the chain
	outer, inner grpc.UnaryHandler
}

// pending is a REST call between the chain's outer half and grpc-gateway's
// handler. It travels as the outer half's request and in the context.
type pending struct {
	b      *binding
	w      http.ResponseWriter
	r      *http.Request
	params map[string]string
	next   runtime.HandlerFunc
	sts    transportStream // the call's, in its context

	resumed bool  // grpc-gateway's handler ran and wrote the answer
	invoked bool  // the handler called the inner half
	err     error // what the inner half answered, or why the handler could not call it
	size    int   // the decoded request's encoded size, for stats
	reply   sized // the response's, for stats
}

// sized is a message known only by its encoded size, as stats counts it.
type sized int

func (s sized) WireSize() int { return int(s) }

// WireSize is the request's size once decoded; stats reads it after the
// call.
func (p *pending) WireSize() int { return p.size }

type pendingKey struct{}

func pendingFrom(ctx context.Context) *pending {
	p, _ := ctx.Value(pendingKey{}).(*pending)
	return p
}

// bindings maps a template, as grpc-gateway's Pattern.String writes it,
// to the unary routes' bindings by HTTP method.
func (d *Door) bindings() map[string]map[string]*binding {
	out := map[string]map[string]*binding{}
	if d.cfg.Chain == nil {
		return out
	}
	for full, m := range d.cfg.Methods {
		if m.Route().Streams() {
			continue
		}
		for _, h := range m.Route().HTTP {
			verb, tmpl, _ := strings.Cut(h, " ")
			b := &binding{method: m, template: tmpl, route: h}
			b.outer = d.cfg.Chain.BindOuter(full)(d.resume)
			b.inner = d.cfg.Chain.BindInner(full)(m.Invoke)
			key := patternKey(tmpl)
			if out[key] == nil {
				out[key] = map[string]*binding{}
			}
			out[key][verb] = b
		}
	}
	return out
}

// captureDefault finds a template's captures without a pattern ("{id}"),
// which grpc-gateway's Pattern.String writes as "{id=*}".
var captureDefault = regexp.MustCompile(`\{([^={}]+)\}`)

// patternKey is a template as grpc-gateway's Pattern.String writes it.
func patternKey(template string) string {
	return captureDefault.ReplaceAllString(template, "{$1=*}")
}

// bindingsOf are the bindings, by HTTP method, of the pattern r matched.
func (d *Door) bindingsOf(r *http.Request) map[string]*binding {
	pat, ok := runtime.HTTPPattern(r.Context())
	if !ok {
		return nil
	}
	return d.byPattern[pat.String()]
}

// early runs the chain's outer half before grpc-gateway's handler reads
// the body: a grpc-gateway middleware, so the route has matched.
//
// grpc-gateway wraps each route's handler in its own call of early, so
// the route's bindings are looked up once, on its first request, not by
// writing out its pattern on every request. They are kept by HTTP method:
// grpc-gateway hands a GET route a POST form (its path length fallback),
// which takes the whole chain after the body, as a route without a binding.
func (d *Door) early(next runtime.HandlerFunc) runtime.HandlerFunc {
	var once sync.Once
	var byMethod map[string]*binding
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		once.Do(func() { byMethod = d.bindingsOf(r) })
		b := byMethod[r.Method]
		if b == nil {
			// A stream (or a unary call when the chain runs whole): a
			// stream's errors find its writer and trailers here.
			r = r.WithContext(context.WithValue(r.Context(), streamKey{}, &streamCall{w: w, tls: r.TLS}))
			next(w, r, params)
			return
		}
		if !d.limitRouteBody(w, r, b) {
			return
		}
		// What a gRPC server would give the chain: the headers as incoming
		// metadata (and none as outgoing: the request's context has none),
		// the REST door's peer, and a stream that collects response
		// metadata.
		ctx, err := d.incomingContext(r.Context(), r, b)
		if err != nil {
			d.errorHandler(r.Context(), d.mux, nil, w, r, err)
			return
		}
		ctx, cancel := capDeadline(ctx, b.method)
		defer cancel()
		p := &pending{b: b, w: w, r: r, params: params, next: next}
		p.sts.method = b.method.Route().FullMethod
		ctx = grpc.NewContextWithServerTransportStream(peer.NewContext(ctx, restPeer(ctx, r.TLS, nil)), &p.sts)
		ctx = context.WithValue(ctx, pendingKey{}, p)
		_, err = b.outer(ctx, p)
		if p.resumed {
			return // grpc-gateway's handler wrote the answer
		}
		// Refused before the body: the chain's error, with the metadata its
		// policies set (WWW-Authenticate, Retry-After, RateLimit-*).
		ctx = runtime.NewServerMetadataContext(ctx, runtime.ServerMetadata{HeaderMD: p.sts.header.md, TrailerMD: p.sts.trailer.md})
		d.errorHandler(ctx, d.mux, nil, w, r, err)
	}
}

// capDeadline gives a call that enters the gateway through the REST door,
// or through conn as a composite's step, the deadline edge.Tap gives a
// gRPC caller (route.CallLimit): the route's timeout when it has none, its
// max_timeout when it asks for more.
func capDeadline(ctx context.Context, m *proxy.Method) (context.Context, context.CancelFunc) {
	if limit := m.Route().CallLimit(ctx); limit > 0 {
		return context.WithTimeout(ctx, limit)
	}
	return ctx, func() {}
}

// resume is the end of the outer half: grpc-gateway's handler now reads
// and decodes the body and calls conn, which runs the inner half. Its
// answer is the outer half's, for stats and the error source.
func (d *Door) resume(ctx context.Context, _ any) (any, error) {
	p := pendingFrom(ctx)
	p.resumed = true
	defer func() {
		if v := recover(); v != nil {
			// The handler wrote nothing: the chain's recovery answers, and
			// the door writes that answer.
			p.resumed = false
			panic(v)
		}
	}()
	r := p.r.WithContext(ctx)
	// What the handler annotates goes nowhere (handlerHeader): without the
	// host and the client's address it adds no x-forwarded-host or -for.
	r.Header, r.Host, r.RemoteAddr = d.handlerHeader(p.r), "", ""
	p.next(p.w, r, p.params)
	if p.err != nil {
		return nil, p.err
	}
	return p.reply, nil
}

// invokeInner is conn.Invoke for a call the outer half admitted.
func (p *pending) invokeInner(ctx context.Context, args, reply any) error {
	p.invoked = true
	if m, ok := args.(proto.Message); ok {
		p.size = proto.Size(m)
	}
	resp, err := p.b.inner(ctx, args)
	switch r := resp.(type) {
	case policy.Encoded:
		p.reply = sized(r.WireSize())
	case proto.Message:
		p.reply = sized(proto.Size(r))
	}
	if err == nil {
		err = proxy.DecodeReply(resp, reply)
	}
	p.err = err
	return err
}

// limitRouteBody applies the route's body limit, and marks the body as a
// unary call's, which the JSON decoder reads whole; false when it refused.
func (d *Door) limitRouteBody(w http.ResponseWriter, r *http.Request, b *binding) bool {
	max := b.method.Route().MaxBodyBytes
	if r.ContentLength > max {
		d.tooLarge(w, r, b.method.Route().FullMethod, r.Method+" "+b.template, max)
		return false
	}
	// limitBody has wrapped the body in the largest route limit; a route
	// with that limit needs no second reader.
	if r.Body != nil && r.Body != http.NoBody {
		if max < d.maxBody {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		r.Body = &unaryBody{ReadCloser: r.Body, size: r.ContentLength} // read whole (json.go)
	}
	return true
}

// handlerHeader is what grpc-gateway's handler of an admitted unary call
// sees of the request's headers: only those it reads itself, the content
// type and Accept (to pick its marshalers) and TE (to send trailers). It
// annotates the request again, building metadata from every header it is
// given, and that metadata goes nowhere: the chain reads what the outer
// half annotated. With all the headers that cost about 35 allocations a
// call; the content type and Accept alone cost 10 more, so they are left
// out when they pick the marshalers no headers pick (JSON, for
// application/json or any type without a marshaler of its own).
func (d *Door) handlerHeader(r *http.Request) http.Header {
	out := make(http.Header, 3)
	keep := func(k string) {
		if v, ok := r.Header[k]; ok {
			out[k] = v
		}
	}
	keep("Te")
	if in, o := runtime.MarshalerForRequest(d.mux, r); in != d.plain || o != d.plain {
		keep("Content-Type")
		keep("Accept")
	}
	return out
}
