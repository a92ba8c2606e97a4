package rest

import (
	"context"
	"crypto/tls"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
)

var (
	protojsonAll    = protojson.MarshalOptions{EmitUnpopulated: true}
	protojsonStrict = protojson.UnmarshalOptions{DiscardUnknown: false}
)

// MaxBodyBytes is the default largest REST body, as large as the largest
// gRPC message the gateway's server takes (grpc-go's default). A route may
// set its own (max_body_bytes).
const MaxBodyBytes = 4 << 20

// unmatched is the route of a request that matched none: a bounded label
// and log value, never the raw path.
const unmatched = "unmatched"

// Config is what the door is built from.
type Config struct {
	// Methods are the method proxies, by full method: unary calls run
	// their bound chains.
	Methods map[string]*proxy.Method
	// Streams is the in-memory connection to the gateway's gRPC server.
	Streams grpc.ClientConnInterface
	// Trusted says whose X-Forwarded-For to believe.
	Trusted clientip.Trusted
	// Refusals account for requests refused before the chain.
	Refusals []chain.Refusals
	// Chain, when set, runs each unary call's outer half before its body
	// is read (early.go); without it the whole chain runs once grpc-gateway
	// has decoded the body.
	Chain *chain.Chain
	// MaxHeaders caps the number of request header fields; 0 is no cap.
	MaxHeaders int
	// OnRefuse counts a refusal by reason (the edge's portico_refused_total).
	OnRefuse func(reason string)
	// MuxOptions are added to grpc-gateway's: more marshalers (SSE, package
	// web) and forward-response options.
	MuxOptions []runtime.ServeMuxOption
}

// Door serves REST.
type Door struct {
	cfg       Config
	mux       *runtime.ServeMux
	conn      *conn
	handler   http.Handler
	byPattern map[string]map[string]*binding // by template, then HTTP method
	maxBody   int64                          // the largest route body limit
	// match is the mux's incoming header matcher; headerKeys its answers
	// for common headers (metadata.go).
	match      runtime.HeaderMatcherFunc
	headerKeys map[string]headerKey
	// plain is the marshaler the mux picks for a request without a
	// content type or Accept (handlerHeader).
	plain runtime.Marshaler
}

// New builds the door; services register their routes on Mux with Conn.
func New(cfg Config) *Door {
	d := &Door{cfg: cfg, conn: &conn{methods: cfg.Methods, streams: cfg.Streams, outgoing: outgoingMatcher(proxy.OutgoingHTTPHeader)},
		maxBody: MaxBodyBytes, match: proxy.IncomingHTTPHeader}
	d.headerKeys = headerKeys(d.match)
	for _, m := range cfg.Methods {
		d.maxBody = max(d.maxBody, m.Route().MaxBodyBytes)
	}
	d.mux = runtime.NewServeMux(append([]runtime.ServeMuxOption{
		runtime.WithMiddlewares(d.early),
		runtime.WithErrorHandler(d.errorHandler),
		runtime.WithRoutingErrorHandler(d.routingErrorHandler),
		runtime.WithIncomingHeaderMatcher(d.match),
		runtime.WithOutgoingHeaderMatcher(d.conn.outgoing),
		runtime.WithMetadata(d.annotate),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, Marshaler()),
		runtime.WithStreamErrorHandler(d.streamError),
	}, cfg.MuxOptions...)...)
	d.plain, _ = runtime.MarshalerForRequest(d.mux, &http.Request{Header: http.Header{}})
	d.byPattern = d.bindings()
	d.handler = d.limitHeaders(d.limitBody(d.mux))
	return d
}

// Mux is where the generated Register…HandlerClient functions go.
func (d *Door) Mux() *runtime.ServeMux { return d.mux }

// Conn is the connection the generated handlers call.
func (d *Door) Conn() grpc.ClientConnInterface { return d.conn }

func (d *Door) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.handler.ServeHTTP(w, r) }

// restPeer is the peer an in-process REST call meets the chain with: the
// REST door's, with the request's TLS state cs when it came over TLS, so
// the chain finds the client's certificate where it finds a gRPC client's,
// and the mark of the composite step the call is, if it is one.
func restPeer(ctx context.Context, cs *tls.ConnectionState, step *policy.Step) *peer.Peer {
	if p, ok := peer.FromContext(ctx); ok && cs == nil {
		// A call the gateway makes through conn for a caller (a composite
		// method's step) keeps that caller's TLS state.
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			cs = &ti.State
		}
	}
	return chain.NewRESTPeer(cs, step)
}

// annotate passes the route template and the client's address to the chain,
// for each request, and to a stream the client's verified certificate: a
// stream's peer is the in-memory connection, a unary call's is restPeer.
func (d *Door) annotate(ctx context.Context, r *http.Request) metadata.MD {
	if ctx.Value(pendingKey{}) != nil {
		// grpc-gateway's handler of a call the outer half admitted: that
		// half annotated it already (handlerHeader).
		return nil
	}
	route, _ := runtime.HTTPPathPattern(ctx)
	md := metadata.Pairs(
		proxy.MDRoute, r.Method+" "+route,
		proxy.MDClientIP, d.clientIP(r),
	)
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 && d.streams(ctx) {
		md[proxy.MDClientCert] = []string{string(r.TLS.VerifiedChains[0][0].Raw)}
	}
	return md
}

// streams reports whether the call in ctx goes over the in-memory
// connection.
func (d *Door) streams(ctx context.Context) bool {
	full, _ := runtime.RPCMethod(ctx)
	m, ok := d.cfg.Methods[full]
	return !ok || m.Route().Streams()
}

func (d *Door) clientIP(r *http.Request) string {
	return d.cfg.Trusted.FromRemote(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
}
