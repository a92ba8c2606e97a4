package stats_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var benchRoute = stats.Route{FullMethod: healthpb.Health_Check_FullMethodName, Service: "grpc.health.v1.Health", Method: "Check", Backend: "health"}

func benchStats(b *testing.B, opts ...stats.Option) *stats.Stats {
	b.Helper()
	s, err := stats.New(prometheus.NewRegistry(), []stats.Route{benchRoute}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func discardLog() stats.Option {
	return stats.WithAccessLog(slog.New(slog.NewJSONHandler(io.Discard, nil)))
}

// logFile is a file in the benchmark's temporary directory: the access log
// as production writes it, one write(2) per line reaching the kernel.
func logFile(b *testing.B) *os.File {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkInterceptor is the stats policy's own cost per unary call, with
// a handler that does nothing.
func BenchmarkInterceptor(b *testing.B) {
	c := benchCall(policy.REST)
	c.HTTPRoute = "GET /v1/health"
	ctx := policy.NewContext(context.Background(), c)
	req, resp := wrapperspb.String("prd-000001"), wrapperspb.String("a product with a name")
	handler := func(context.Context, any) (any, error) { return resp, nil }
	info := &grpc.UnaryServerInfo{FullMethod: c.FullMethod}
	for _, bc := range []struct {
		name string
		opts func(*testing.B) []stats.Option
	}{
		{"metrics", func(*testing.B) []stats.Option { return nil }},
		{"metrics+log", func(*testing.B) []stats.Option { return []stats.Option{discardLog()} }},
		{"metrics+log+trace", func(*testing.B) []stats.Option {
			return []stats.Option{discardLog(), stats.WithTracerProvider(sdktrace.NewTracerProvider())}
		}},
		// The access log to a real file, unbuffered: one write(2) per call.
		{"metrics+log-file", func(b *testing.B) []stats.Option {
			return []stats.Option{stats.WithAccessLog(slog.New(slog.NewJSONHandler(logFile(b), nil)))}
		}},
		// The same file behind the buffer: a write(2) per 64 KiB.
		{"metrics+log-file-buffered", func(b *testing.B) []stats.Option {
			return []stats.Option{stats.WithBufferedAccessLog(logFile(b), func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) })}
		}},
		// The same file, buffered, with the JSON access log's own encoder:
		// what the gateway's config uses.
		{"metrics+log-file-json", func(b *testing.B) []stats.Option {
			return []stats.Option{stats.WithJSONAccessLog(logFile(b))}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := benchStats(b, bc.opts(b)...).UnaryServerInterceptor()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in(ctx, req, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChainOverhead is what stats adds to a real unary call: an
// in-process gRPC server (bufconn) whose chain sets the call facts as the
// gateway does, with and without the stats interceptor (metrics, and the
// JSON access log to io.Discard). The with/without ratio is the number to
// watch.
func BenchmarkChainOverhead(b *testing.B) {
	facts := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(policy.NewContext(ctx, benchCall(policy.GRPC)), req)
	}
	s := benchStats(b, discardLog())
	with := inMemory(b, grpc.ChainUnaryInterceptor(facts, s.UnaryServerInterceptor()))
	without := inMemory(b, grpc.ChainUnaryInterceptor(facts))
	compare(b, context.Background(), with, without)
}

// BenchmarkBackendCall is what measuring one backend call costs the proxy
// (StartBackendCall, Reached, End; tracing off): latency and code per
// instance, and the instance for the access log.
func BenchmarkBackendCall(b *testing.B) {
	s := benchStats(b)
	s.Observer().Instances(benchRoute.Backend, []discovery.Instance{{ID: "catalog-a", Addr: "10.0.0.1:7001"}})
	ctx := policy.NewContext(context.Background(), benchCall(policy.GRPC))
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7001}
	b.ReportAllocs()
	for b.Loop() {
		_, call := s.StartBackendCall(ctx, benchRoute.FullMethod)
		call.Reached(addr)
		call.End(nil)
	}
}

func benchCall(t policy.Transport) *policy.Call {
	return &policy.Call{FullMethod: benchRoute.FullMethod, Service: benchRoute.Service, Method: benchRoute.Method,
		Backend: benchRoute.Backend, Transport: t, ClientIP: "192.0.2.1"}
}

// compare calls with and without in turn, b.N times each, and reports
// their mean latency and ratio. Taking turns going first spreads machine
// noise, and the cost of waking the scheduler, over both.
func compare(b *testing.B, ctx context.Context, with, without healthpb.HealthClient) {
	req := &healthpb.HealthCheckRequest{}
	call := func(c healthpb.HealthClient) time.Duration {
		t0 := time.Now()
		if _, err := c.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for range 100 { // warm up connections and pools
		call(with)
		call(without)
	}
	var tw, to time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			tw += call(with)
			to += call(without)
		} else {
			to += call(without)
			tw += call(with)
		}
	}
	b.ReportMetric(float64(tw.Nanoseconds())/float64(b.N), "with-ns/call")
	b.ReportMetric(float64(to.Nanoseconds())/float64(b.N), "without-ns/call")
	b.ReportMetric(float64(tw)/float64(to), "with/without")
}

// inMemory serves grpc.health.v1 over bufconn and returns a client of it.
func inMemory(b *testing.B, opts ...grpc.ServerOption) healthpb.HealthClient {
	b.Helper()
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bench",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}
