package ratelimit_test

import (
	"context"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var _ interface {
	UnaryServerInterceptor() grpc.UnaryServerInterceptor
	StreamServerInterceptor() grpc.StreamServerInterceptor
	Start(context.Context) error
	Close() error
} = (*ratelimit.Limiter)(nil)

// Test metadata standing in for what the gateway and auth would know.
const (
	testConsumer = "x-test-consumer"
	testClientIP = "x-test-client-ip"
)

// callFacts plays the gateway's call step and auth: it puts a policy.Call
// into the context, the caller taken from test metadata, the limit from
// limits. Methods missing from limits get no Call, like the gateway's own
// services.
func callFacts(limits map[string]policy.RateLimit) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	newCall := func(ctx context.Context, fullMethod string) (context.Context, bool) {
		lim, ok := limits[fullMethod]
		if !ok {
			return ctx, false
		}
		md, _ := metadata.FromIncomingContext(ctx)
		c := &policy.Call{FullMethod: fullMethod, Service: "grpc.health.v1.Health", Method: fullMethod[strings.LastIndex(fullMethod, "/")+1:],
			Policy: &policy.Policy{RateLimit: lim}, Transport: policy.GRPC, ClientIP: "127.0.0.1"}
		if v := md.Get(testClientIP); len(v) == 1 {
			c.ClientIP = v[0]
		}
		if v := md.Get(testConsumer); len(v) == 1 {
			c.Identity = &policy.Identity{Consumer: v[0], Subject: v[0], Method: "api_key"}
		}
		return policy.NewContext(ctx, c), true
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, _ = newCall(ctx, info.FullMethod)
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if ctx, ok := newCall(ss.Context(), info.FullMethod); ok {
			ss = &ctxStream{ServerStream: ss, ctx: ctx}
		}
		return h(srv, ss)
	}
	return unary, stream
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// serve runs a real gRPC server on loopback with the chain
// call facts -> limiter -> grpc.health.v1, and returns a client.
func serve(t *testing.T, l *ratelimit.Limiter, limits map[string]policy.RateLimit) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fu, fs := callFacts(limits)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(fu, l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(fs, l.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

const (
	checkMethod = "/grpc.health.v1.Health/Check"
	watchMethod = "/grpc.health.v1.Health/Watch"
)

// as is a call context carrying test metadata, bounded by the test.
func as(t *testing.T, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// grpcHeaders is a limiter whose admitted gRPC calls carry the headers
// (rate_limit.headers.grpc: true).
func grpcHeaders() *ratelimit.Limiter {
	return ratelimit.New(ratelimit.WithAdmittedHeaders(ratelimit.Headers{REST: true, GRPC: true}))
}

func TestAdmittedGRPCCallsCarryNoHeadersByDefault(t *testing.T) {
	hc := serve(t, ratelimit.New(), map[string]policy.RateLimit{checkMethod: {Requests: 1, Period: time.Hour, Burst: 1}})
	var header, trailer metadata.MD
	if _, err := hc.Check(as(t), &healthpb.HealthCheckRequest{}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("ratelimit-remaining"); len(got) != 0 {
		t.Errorf("admitted gRPC call: ratelimit-remaining = %v, want none by default (headers.grpc false)", got)
	}
	// A refusal still says everything.
	_, err := hc.Check(as(t), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted || len(trailer.Get("ratelimit-remaining")) != 1 || len(trailer.Get("retry-after")) != 1 {
		t.Errorf("refused call: %v, trailer %v; want RESOURCE_EXHAUSTED with the numbers", err, trailer)
	}
}

func TestUnaryHeadersAndRejection(t *testing.T) {
	hc := serve(t, grpcHeaders(), map[string]policy.RateLimit{checkMethod: {Requests: 2, Period: time.Hour, Burst: 2}})
	for i, remaining := range []string{"1", "0"} {
		var header metadata.MD
		if _, err := hc.Check(as(t), &healthpb.HealthCheckRequest{}, grpc.Header(&header)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		for k, want := range map[string]string{"ratelimit-limit": "2", "ratelimit-remaining": remaining,
			"ratelimit-reset": []string{"1800", "3600"}[i], "ratelimit-policy": "2;w=3600;burst=2"} {
			if got := header.Get(k); len(got) != 1 || got[0] != want {
				t.Errorf("call %d: %s = %v, want %s", i, k, got, want)
			}
		}
		if len(header.Get("retry-after")) != 0 {
			t.Errorf("call %d: retry-after on an admitted call", i)
		}
	}

	var trailer metadata.MD
	_, err := hc.Check(as(t), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("third call: %v, want RESOURCE_EXHAUSTED", err)
	}
	if !strings.Contains(st.Message(), "rate limit of 2 per 1h0m0s exceeded for client 127.0.0.1; retry in 30m0s") {
		t.Errorf("message %q", st.Message())
	}
	var retry *errdetails.RetryInfo
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.ErrorInfo:
			info = d
		}
	}
	if d := retry.GetRetryDelay().AsDuration(); d <= 29*time.Minute || d > 30*time.Minute {
		t.Errorf("RetryInfo = %v, want just under 30m", retry)
	}
	if info.GetReason() != ratelimit.Reason || info.GetDomain() != policy.ErrorDomain || info.GetMetadata()[policy.PolicyKey] != ratelimit.Name ||
		info.GetMetadata()["key"] != "ip" {
		t.Errorf("ErrorInfo = %v", info)
	}
	for k, want := range map[string]string{"ratelimit-limit": "2", "ratelimit-remaining": "0", "retry-after": "1800", "ratelimit-reset": "3600"} {
		if got := trailer.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("trailer %s = %v, want %s", k, got, want)
		}
	}
}

func TestConsumersAndAddressesAreIsolated(t *testing.T) {
	hc := serve(t, ratelimit.New(), map[string]policy.RateLimit{checkMethod: {Requests: 1, Period: time.Hour, Burst: 3}})
	calls := func(ctx context.Context) (ok int, last error) {
		for range 5 {
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				last = err
				continue
			}
			ok++
		}
		return ok, last
	}
	// alice exhausts her budget...
	ok, err := calls(as(t, testConsumer, "alice"))
	if ok != 3 || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("alice: %d admitted, last error %v; want 3 then RESOURCE_EXHAUSTED", ok, err)
	}
	if !strings.Contains(status.Convert(err).Message(), "for consumer alice") {
		t.Errorf("message %q should name the consumer", status.Convert(err).Message())
	}
	// ...which touches neither bob, from the same address, nor anonymous callers.
	if ok, _ := calls(as(t, testConsumer, "bob")); ok != 3 {
		t.Errorf("bob: %d admitted after alice's burst, want his own 3", ok)
	}
	if ok, _ := calls(as(t, testClientIP, "198.51.100.1")); ok != 3 {
		t.Errorf("anonymous 198.51.100.1: %d admitted, want 3", ok)
	}
	if ok, _ := calls(as(t, testClientIP, "198.51.100.2")); ok != 3 {
		t.Errorf("anonymous 198.51.100.2: %d admitted, want its own 3", ok)
	}
}

func TestStreamsAreCountedWhenOpened(t *testing.T) {
	hc := serve(t, grpcHeaders(), map[string]policy.RateLimit{watchMethod: {Requests: 1, Period: time.Hour, Burst: 1}})
	ctx, cancel := context.WithCancel(as(t))
	defer cancel()
	first, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	if h, _ := first.Header(); len(h.Get("ratelimit-remaining")) != 1 || h.Get("ratelimit-remaining")[0] != "0" {
		t.Errorf("stream header = %v, want ratelimit-remaining 0", h)
	}
	// Messages on an open stream are not counted; a second stream is.
	second, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = second.Recv()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream: %v, want RESOURCE_EXHAUSTED", err)
	}
	if tr := second.Trailer(); len(tr.Get("retry-after")) != 1 {
		t.Errorf("second stream trailer = %v, want retry-after", tr)
	}
}

// A call without a policy.Call is refused with INTERNAL, on unary calls and
// streams: a policy off the gateway's chain must not let calls through.
func TestCallsWithoutCallFactsAreRefused(t *testing.T) {
	hc := serve(t, ratelimit.New(), map[string]policy.RateLimit{}) // no policy.Call at all
	if _, err := hc.Check(as(t), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("unary: %v, want INTERNAL", err)
	}
	w, err := hc.Watch(as(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: %v, want INTERNAL", err)
	}
}

// The headers of a decision from Decide, built from the rate's preformatted
// values, are those of the same numbers formatted from scratch.
func TestMetadataPreformattedMatches(t *testing.T) {
	limits := []policy.RateLimit{
		{Requests: 50, Period: time.Second, Burst: 100},
		{Requests: 3, Period: 1500 * time.Millisecond},
		{Requests: 1, Period: time.Minute, Burst: 1},
		{Requests: 1 << 30, Period: time.Hour, Burst: 1 << 30},
	}
	l := ratelimit.New()
	for i, lim := range limits {
		c := &policy.Call{FullMethod: "/t.v1.Svc/M" + strconv.Itoa(i), Service: "t.v1.Svc", Method: "M" + strconv.Itoa(i),
			Policy: &policy.Policy{RateLimit: lim}, ClientIP: "192.0.2.7"}
		for range 3 {
			d := l.Decide(context.Background(), c)
			plain := ratelimit.Decision{Allowed: d.Allowed, Limit: d.Limit, Remaining: d.Remaining, Reset: d.Reset, RetryAfter: d.RetryAfter}
			got, want := d.Metadata(), plain.Metadata()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("limit %+v: metadata %v, want %v", lim, got, want)
			}
			if !d.Allowed && len(got[ratelimit.HeaderRetryAfter]) != 1 {
				t.Errorf("limit %+v: rejection without retry-after: %v", lim, got)
			}
		}
	}
	d := ratelimit.Decision{Limit: policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}, Reset: 1500 * time.Millisecond, RetryAfter: 20 * time.Millisecond}
	want := metadata.MD{"ratelimit-limit": {"100"}, "ratelimit-remaining": {"0"}, "ratelimit-reset": {"2"},
		"ratelimit-policy": {"50;w=1;burst=100"}, "retry-after": {"1"}}
	if got := d.Metadata(); !reflect.DeepEqual(got, want) {
		t.Errorf("metadata %v, want %v", got, want)
	}
}
