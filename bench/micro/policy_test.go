package micro_test

import (
	"context"
	"flag"
	"io"
	"testing"
	"time"

	"github.com/portico-gw/portico/bench/internal/fixture"
	"github.com/portico-gw/portico/bench/internal/load"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/portico-gw/portico/gateway/validate"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// BenchmarkPolicy is each policy's own cost per unary call, as the chain
// runs it (the call's facts already in the context), around a handler that
// returns a canned response.
func BenchmarkPolicy(b *testing.B) {
	high := policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30}
	calls := []struct {
		name   string
		method string
		req    proto.Message
		resp   proto.Message
		access policy.Access
	}{
		{"get", catalogv1.CatalogService_GetProduct_FullMethodName, &catalogv1.GetProductRequest{Id: fixture.ProductID},
			&catalogv1.GetProductResponse{Product: fixture.Product(1)}, policy.Public},
		{"create", catalogv1.CatalogService_CreateProduct_FullMethodName, &catalogv1.CreateProductRequest{Product: fixture.NewProduct()},
			&catalogv1.CreateProductResponse{Product: fixture.Product(1)}, policy.Authenticated},
	}
	var routes []stats.Route
	for _, c := range calls {
		routes = append(routes, stats.Route{FullMethod: c.method, Service: "catalog.v1.CatalogService", Method: c.name, Backend: "catalog"})
	}
	// The access log as the gateway's default config writes it: JSON lines
	// from the access log's own encoder.
	st, err := stats.New(prometheus.NewRegistry(), routes, stats.WithJSONAccessLog(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	au, err := auth.New(auth.Config{APIKeys: []auth.APIKeyConfig{
		{Consumer: "bench", SHA256: auth.HashAPIKey(load.APIKey), Scopes: []string{"catalog.write"}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	va, err := validate.New(validate.WithMessages(
		(&catalogv1.GetProductRequest{}).ProtoReflect().Descriptor(),
		(&catalogv1.CreateProductRequest{}).ProtoReflect().Descriptor()))
	if err != nil {
		b.Fatal(err)
	}
	rl := ratelimit.New()
	// In the chain's order (gateway/policies.go); "chain" runs all four.
	names := []string{"stats", "auth", "ratelimit", "validation", "chain"}
	all := []grpc.UnaryServerInterceptor{st.UnaryServerInterceptor(), au.UnaryServerInterceptor(),
		rl.UnaryServerInterceptor(), va.UnaryServerInterceptor()}

	for _, c := range calls {
		// newCall is one call's context, request and response, as a server
		// gives the chain a call of its own.
		newCall := func() (context.Context, proto.Message, grpc.UnaryHandler) {
			call := &policy.Call{FullMethod: c.method, Service: "catalog.v1.CatalogService", Method: c.name, Backend: "catalog",
				Policy:    &policy.Policy{Access: c.access, Scopes: []string{"catalog.write"}, RateLimit: high},
				Transport: policy.GRPC, ClientIP: "127.0.0.1"}
			md := metadata.Pairs("x-api-key", load.APIKey, "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0")
			// The request's metadata as both doors give it to the chain.
			ctx := policy.NewContext(policy.NewIncomingContext(context.Background(), md), call)
			// Where grpc.SetHeader and SetTrailer put response metadata in a
			// server; without one they fail, and the failure costs more than
			// the work they stand for.
			ctx = grpc.NewContextWithServerTransportStream(ctx, &metadataSink{method: c.method})
			resp := proto.Clone(c.resp)
			return ctx, proto.Clone(c.req), func(context.Context, any) (any, error) { return resp, nil }
		}
		info := &grpc.UnaryServerInfo{FullMethod: c.method}
		if *coldCaches {
			// The cold baseline: the handler alone, and the clock.
			b.Run(c.name+"/none-cold", func(b *testing.B) { benchCold(b, newCall, nil, info) })
		}
		for i, name := range names {
			is := all
			if i < len(all) {
				is = all[i : i+1]
			}
			b.Run(c.name+"/"+name, func(b *testing.B) {
				ctx, req, handler := newCall()
				h := chain(is, info, handler)
				if _, err := h(ctx, req); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					_, _ = h(ctx, req)
				}
			})
			if *coldCaches {
				b.Run(c.name+"/"+name+"-cold", func(b *testing.B) { benchCold(b, newCall, is, info) })
			}
			// The same from every core at once, each goroutine with calls of
			// its own from the one caller, as the harness's load generator
			// is one client (so the rate limiter's figure is a hot caller's):
			// ns/op is wall time, so CPU per call is ns/op times GOMAXPROCS,
			// and any excess over the serial figure is what the cores'
			// sharing of the policy's state costs.
			b.Run(c.name+"/"+name+"-parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					ctx, req, handler := newCall()
					h := chain(is, info, handler)
					for pb.Next() {
						_, _ = h(ctx, req)
					}
				})
			})
		}
	}
}

var coldCaches = flag.Bool("policy.cold", false,
	"BenchmarkPolicy: also run each policy, the chain and an empty chain with the caches evicted before every call")

// benchCold is a call with the core's caches cold, as in a proxy whose
// other work (grpc-go's, the runtime's, other processes') evicts the
// policies' code and data between one call and the next: before each call
// it reads a word of each cache line of evictBytes, written once so that
// its pages are real memory (an untouched page reads as the kernel's one
// page of zeros). Only the call is timed, in cold-ns/call; ns/op is mostly
// the eviction.
func benchCold(b *testing.B, newCall func() (context.Context, proto.Message, grpc.UnaryHandler),
	is []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo) {
	ctx, req, handler := newCall()
	h := chain(is, info, handler)
	evict := make([]uint64, evictBytes/8)
	for i := range evict {
		evict[i] = uint64(i)
	}
	var in time.Duration
	var sum uint64
	n := 0
	for b.Loop() {
		for i := 0; i < len(evict); i += 8 { // a word of each cache line
			sum += evict[i]
		}
		t0 := time.Now()
		_, _ = h(ctx, req)
		in += time.Since(t0)
		n++
	}
	b.ReportMetric(float64(in.Nanoseconds())/float64(n), "cold-ns/call")
	evictSink = sum
}

// evictBytes is four times a core's L2 here (2 MiB), so that a core's own
// caches hold none of the policies' lines; a large L3 shared by all cores
// may. evictSink keeps the reads from being optimised away.
const evictBytes = 8 << 20

var evictSink uint64

// chain nests interceptors the way grpc.ChainUnaryInterceptor does.
func chain(is []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) grpc.UnaryHandler {
	for i := len(is) - 1; i >= 0; i-- {
		next, in := h, is[i]
		h = func(ctx context.Context, req any) (any, error) { return in(ctx, req, info, next) }
	}
	return h
}

// metadataSink takes response metadata as a server transport does, by
// copying it (Join); it keeps only the last call's, so that a benchmark's
// iterations do not pile up metadata.
type metadataSink struct {
	method          string
	header, trailer metadata.MD
}

func (s *metadataSink) Method() string { return s.method }
func (s *metadataSink) SetHeader(md metadata.MD) error {
	s.header = metadata.Join(md)
	return nil
}
func (s *metadataSink) SendHeader(md metadata.MD) error { return s.SetHeader(md) }
func (s *metadataSink) SetTrailer(md metadata.MD) error {
	s.trailer = metadata.Join(md)
	return nil
}
