package ratelimit_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/internal/testredis"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// A limit no benchmark exhausts, so each iteration is one full decision.
var benchLimit = policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30}

func benchCall(ip string) *policy.Call {
	return &policy.Call{FullMethod: "/bench.v1.Svc/Get", Service: "bench.v1.Svc", Method: "Get",
		Policy: &policy.Policy{RateLimit: benchLimit}, ClientIP: ip}
}

func calls(n int) []*policy.Call {
	out := make([]*policy.Call, n)
	for i := range out {
		out[i] = benchCall("10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255))
	}
	return out
}

// One caller, one goroutine: the cost of a decision on a known key.
func BenchmarkAllowSerial(b *testing.B) {
	l := ratelimit.New()
	c := benchCall("203.0.113.1")
	l.Decide(context.Background(), c)
	b.ReportAllocs()
	for b.Loop() {
		l.Decide(context.Background(), c)
	}
}

// One hot caller hammered from every P: contention on one bucket.
func BenchmarkAllowParallelOneKey(b *testing.B) {
	l := ratelimit.New()
	c := benchCall("203.0.113.1")
	l.Decide(context.Background(), c)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Decide(context.Background(), c)
		}
	})
}

// Many known callers from every P: the sharded table without a hot spot.
func BenchmarkAllowParallelManyKeys(b *testing.B) {
	l := ratelimit.New()
	cs := calls(10_000)
	for _, c := range cs {
		l.Decide(context.Background(), c)
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			l.Decide(context.Background(), cs[i%len(cs)])
			i++
		}
	})
}

// A million distinct callers: the memory each tracked key costs.
func BenchmarkMillionKeys(b *testing.B) {
	const n = 1_000_000
	cs := calls(n)
	b.ReportAllocs()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l := ratelimit.New(ratelimit.WithMaxKeys(n))
		for _, c := range cs {
			l.Decide(context.Background(), c)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := l.Stats().Keys; got != n {
			b.Fatalf("tracked %d keys, want %d", got, n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(l)
	}
}

// headerStream is the server side of a call as grpc.SetHeader sees it: it
// keeps the headers, as grpc-go's transport stream does until it writes them.
type headerStream struct{ md metadata.MD }

func (s *headerStream) Method() string { return "/bench.v1.Svc/Get" }
func (s *headerStream) SetHeader(md metadata.MD) error {
	s.md = metadata.Join(s.md, md)
	return nil
}
func (s *headerStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }
func (s *headerStream) SetTrailer(metadata.MD) error    { return nil }

// BenchmarkUnaryInterceptorAdmitted is the unary interceptor on an admitted
// call, headers included (rate_limit.headers.grpc: true): the decision, the
// RateLimit-* metadata and grpc.SetHeader on a server stream.
func BenchmarkUnaryInterceptorAdmitted(b *testing.B) {
	in := ratelimit.New(ratelimit.WithAdmittedHeaders(ratelimit.Headers{GRPC: true})).UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/bench.v1.Svc/Get"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := policy.NewContext(context.Background(), benchCall("203.0.113.1"))
	st := &headerStream{}
	ctx = grpc.NewContextWithServerTransportStream(ctx, st)
	b.ReportAllocs()
	for b.Loop() {
		st.md = nil
		if _, err := in(ctx, nil, info, handler); err != nil {
			b.Fatal(err)
		}
	}
	if got := st.md.Get(ratelimit.HeaderPolicy); len(got) != 1 {
		b.Fatalf("policy header %q, want one", got)
	}
}

// BenchmarkDecisionMetadata is the RateLimit-* metadata alone.
func BenchmarkDecisionMetadata(b *testing.B) {
	l := ratelimit.New()
	c := benchCall("203.0.113.1")
	for _, bc := range []struct {
		name string
		d    ratelimit.Decision
	}{
		{"admitted", l.Decide(context.Background(), c)},
		{"rejected", func() ratelimit.Decision {
			lim := policy.RateLimit{Requests: 1, Period: time.Minute, Burst: 1}
			c := &policy.Call{FullMethod: "/bench.v1.Svc/Tight", Service: "bench.v1.Svc", Method: "Tight",
				Policy: &policy.Policy{RateLimit: lim}, ClientIP: "203.0.113.1"}
			l.Decide(context.Background(), c)
			return l.Decide(context.Background(), c)
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = bc.d.Metadata()
			}
		})
	}
}

// BenchmarkDecide is a decision as the interceptors make it, in local mode
// and in mode redis (a real redis-server on loopback: one round trip per
// decision), on one goroutine and from every P: the price of exactness
// across replicas. Each call is a new caller of a limit no run exhausts.
func BenchmarkDecide(b *testing.B) {
	srv := testredis.New(b)
	redisL, err := ratelimit.NewRedis(ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := redisL.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { redisL.Close() })
	cs := calls(10_000)
	local := ratelimit.New()
	for _, c := range cs { // known callers, as in the other benchmarks
		local.Decide(context.Background(), c)
	}
	for _, m := range []struct {
		name string
		l    *ratelimit.Limiter
	}{{"local", local}, {"redis", redisL}} {
		ctx := context.Background()
		b.Run(m.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !m.l.Decide(ctx, cs[i%len(cs)]).Allowed {
					b.Fatal("refused")
				}
				i++
			}
		})
		b.Run(m.name+"/parallel", func(b *testing.B) {
			var next atomic.Uint32
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				for pb.Next() {
					if !m.l.Decide(ctx, cs[i%len(cs)]).Allowed {
						b.Error("refused")
						return
					}
					i++
				}
			})
		})
	}
	if st, _ := redisL.StoreStatus(); st.Errors > 0 {
		b.Fatalf("redis errors during the benchmark: %+v", st)
	}
}
