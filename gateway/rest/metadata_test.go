package rest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	"google.golang.org/grpc/metadata"
)

// getProduct is a door over the catalog's routes with a chain, and the
// binding of GET /v1/products/{id}.
func getProduct(t testing.TB) (*Door, *binding) {
	t.Helper()
	d := catalogDoor(t, func(r *route.Route) *proxy.Method { return proxy.New(r, nil, proxy.AsBytes) },
		func(c *Config, tbl *route.Table) { c.Chain = chain.New(chain.Config{Routes: tbl}) })
	b := d.byPattern["/v1/products/{id=*}"]["GET"]
	if b == nil {
		t.Fatalf("no binding for GET /v1/products/{id}: %v", d.byPattern)
	}
	return d, b
}

// annotated is the incoming metadata grpc-gateway's AnnotateContext gives
// r with the door's matcher and annotator, as the door read it before it
// built its own.
func annotated(t *testing.T, d *Door, r *http.Request, b *binding) metadata.MD {
	t.Helper()
	ctx, err := runtime.AnnotateIncomingContext(r.Context(), d.mux, r, b.method.Route().FullMethod, runtime.WithHTTPPathPattern(b.template))
	if err != nil {
		t.Fatal(err)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

func TestIncomingMatchesGRPCGateway(t *testing.T) {
	d, b := getProduct(t)
	for _, tc := range []struct {
		name   string
		header http.Header
		host   string
		remote string
		plain  bool // built by the door, not AnnotateContext
	}{
		{name: "no headers", plain: true},
		{name: "curl", header: http.Header{"Accept": {"*/*"}, "User-Agent": {"curl/8.5.0"}}, plain: true},
		{name: "credentials", header: http.Header{"Authorization": {"Bearer a.b.c", "Basic eA=="}, "X-Api-Key": {"k1"}}, plain: true},
		{name: "browser", header: http.Header{
			"Accept": {"application/json"}, "Accept-Encoding": {"gzip, br"}, "Accept-Language": {"en"},
			"Cookie": {"a=1", "b=2"}, "Origin": {"https://example.com"}, "Referer": {"https://example.com/"},
			"Sec-Fetch-Mode": {"cors"}, "Cache-Control": {"no-cache"}, "Pragma": {"no-cache"},
		}, plain: true},
		{name: "trace and custom", header: http.Header{
			"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "Tracestate": {"a=b"},
			"X-Tenant": {"t1"}, "X-Request-Id": {"r1"}, "Some-Header": {"dropped"},
		}, plain: true},
		{name: "forwarded", header: http.Header{"X-Forwarded-For": {"203.0.113.7, 10.0.0.1", "10.0.0.2"}, "X-Forwarded-Host": {"api.example.com"}}, plain: true},
		{name: "empty forwarded for", header: http.Header{"X-Forwarded-For": {""}}, remote: "bad", plain: true},
		{name: "invalid forwarded for dropped", header: http.Header{"X-Forwarded-For": {"caf\u00e9"}}, plain: true},
		{name: "no host, no remote address", remote: "", host: "", plain: true},
		{name: "ipv6 remote", remote: "[2001:db8::1]:443", plain: true},
		{name: "portico keys", header: http.Header{"X-Portico-Internal-Route": {"GET /forged"}, "X-Portico-Internal-Client-Ip": {"1.2.3.4"}}, plain: true},
		{name: "grpc-timeout", header: http.Header{"Grpc-Timeout": {"1S"}}},
		{name: "binary header", header: http.Header{"X-Trace-Bin": {"AAEC"}}},
		{name: "not ascii", header: http.Header{"X-Name": {"caf\u00e9"}}},
		{name: "not ascii, common header", header: http.Header{"User-Agent": {"caf\u00e9"}}},
		{name: "not ascii, unmatched header", header: http.Header{"Some-Header": {"caf\u00e9"}}, plain: true},
		{name: "invalid authorization", header: http.Header{"Authorization": {"caf\u00e9"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/products/p1", nil)
			r.Host, r.RemoteAddr = "gateway.example:8080", "192.0.2.10:5555"
			if tc.host != "" || tc.name == "no host, no remote address" {
				r.Host = tc.host
			}
			if tc.remote != "" || tc.name == "no host, no remote address" {
				r.RemoteAddr = tc.remote
			}
			for k, vs := range tc.header {
				r.Header[k] = vs
			}
			got, ok := d.incoming(r, b)
			if ok != tc.plain {
				t.Fatalf("built by the door: %v, want %v", ok, tc.plain)
			}
			if !ok {
				return
			}
			want := annotated(t, d, r, b)
			if len(got) != len(want) {
				t.Errorf("keys: got %v, want %v", got, want)
			}
			for k, wv := range want {
				if gv := got[k]; !slices.Equal(gv, wv) {
					t.Errorf("%s: got %q, want %q", k, gv, wv)
				}
			}
		})
	}
}

// TestIncomingContext: a request the door does not build metadata for
// still meets the chain with AnnotateContext's, and its errors.
func TestIncomingContext(t *testing.T) {
	d, b := getProduct(t)
	r := httptest.NewRequest(http.MethodGet, "/v1/products/p1", nil)
	r.Header.Set("Grpc-Timeout", "5S")
	r.Header.Set("X-Api-Key", "k")
	// A context that already carries another call's map (as a
	// composite's step's would): this call's replaces it.
	stale := policy.WithIncoming(context.Background(), metadata.Pairs("x-api-key", "someone-else"))
	ctx, err := d.incomingContext(stale, r, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ctx.Deadline(); !ok {
		t.Error("grpc-timeout set no deadline")
	}
	if v := metadata.ValueFromIncomingContext(ctx, "x-api-key"); !slices.Equal(v, []string{"k"}) {
		t.Errorf("x-api-key = %q", v)
	}
	if v := policy.IncomingValue(ctx, "x-api-key"); !slices.Equal(v, []string{"k"}) {
		t.Errorf("x-api-key as the chain reads it = %q, want this call's", v)
	}
	r.Header.Set("Grpc-Timeout", "soon")
	if _, err := d.incomingContext(context.Background(), r, b); err == nil {
		t.Error("an invalid grpc-timeout was taken")
	}
}

func BenchmarkIncoming(b *testing.B) {
	d, bd := getProduct(b)
	r := httptest.NewRequest(http.MethodGet, "/v1/products/p1", nil)
	r.Header = http.Header{"Accept": {"application/json"}, "User-Agent": {"Go-http-client/1.1"},
		"X-Api-Key": {"k"}, "Accept-Encoding": {"gzip"}}
	b.Run("door", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = d.incomingContext(context.Background(), r, bd)
		}
	})
	b.Run("annotate-context", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, _ := runtime.AnnotateContext(context.Background(), d.mux, r, bd.method.Route().FullMethod, runtime.WithHTTPPathPattern(bd.template))
			md, _ := metadata.FromOutgoingContext(ctx)
			_ = metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
		}
	})
}

// TestOutgoingMatcher: the kept answers are the matcher's.
func TestOutgoingMatcher(t *testing.T) {
	m := outgoingMatcher(proxy.OutgoingHTTPHeader)
	for _, k := range append(slices.Clone(outgoingKeys), "x-backend", "grpc-status", "content-type", "other") {
		h, ok := m(k)
		wh, wok := proxy.OutgoingHTTPHeader(k)
		if h != wh || ok != wok {
			t.Errorf("%s: %q %v, want %q %v", k, h, ok, wh, wok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = m("ratelimit-remaining") }); n != 0 {
		t.Errorf("ratelimit-remaining: %v allocations", n)
	}
}

// TestHandlerHeader: grpc-gateway's handler of an admitted call picks the
// same marshalers from the headers the door gives it as from the request's,
// and gets TE.
func TestHandlerHeader(t *testing.T) {
	_, b := getProduct(t)
	d := New(Config{Methods: map[string]*proxy.Method{b.method.Route().FullMethod: b.method},
		MuxOptions: []runtime.ServeMuxOption{runtime.WithMarshalerOption("text/event-stream", &runtime.JSONPb{})}})
	for _, h := range []http.Header{
		{},
		{"Accept": {"application/json"}, "Content-Type": {"application/json"}},
		{"Content-Type": {"application/json; charset=utf-8"}, "Te": {"trailers"}},
		{"Accept": {"text/event-stream"}},
		{"Content-Type": {"text/event-stream"}},
		{"Accept": {"*/*", "text/event-stream"}, "Content-Type": {"not a media type"}},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/products", nil)
		r.Header = h
		in, out := runtime.MarshalerForRequest(d.mux, r)
		hh := d.handlerHeader(r)
		gotIn, gotOut := runtime.MarshalerForRequest(d.mux, &http.Request{Header: hh})
		if gotIn != in || gotOut != out {
			t.Errorf("%v: the handler's header %v picks other marshalers", h, hh)
		}
		if !slices.Equal(hh["Te"], h["Te"]) {
			t.Errorf("%v: TE %q", h, hh["Te"])
		}
	}
}

// TestCollected: the first metadata is kept as it is and never written;
// what follows is joined into a copy.
func TestCollected(t *testing.T) {
	var c collected
	c.add(nil)
	if c.md != nil {
		t.Fatalf("empty metadata collected: %v", c.md)
	}
	first := metadata.Pairs("ratelimit-limit", "10", "x-a", "1")
	c.add(first)
	c.add(metadata.Pairs("x-a", "2", "x-b", "3"))
	c.add(metadata.Pairs("x-b", "4"))
	if want := metadata.Pairs("ratelimit-limit", "10", "x-a", "1"); len(first) != len(want) || !slices.Equal(first["x-a"], want["x-a"]) {
		t.Errorf("the first metadata was written: %v", first)
	}
	want := metadata.MD{"ratelimit-limit": {"10"}, "x-a": {"1", "2"}, "x-b": {"3", "4"}}
	if len(c.md) != len(want) {
		t.Fatalf("collected %v, want %v", c.md, want)
	}
	for k, v := range want {
		if !slices.Equal(c.md[k], v) {
			t.Errorf("%s: %q, want %q", k, c.md[k], v)
		}
	}
}
