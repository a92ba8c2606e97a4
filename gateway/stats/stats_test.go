package stats_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var routes = []stats.Route{
	{FullMethod: "/catalog.v1.CatalogService/GetProduct", Service: "catalog.v1.CatalogService", Method: "GetProduct", Backend: "catalog"},
	{FullMethod: "/catalog.v1.CatalogService/ListProducts", Service: "catalog.v1.CatalogService", Method: "ListProducts", Backend: "catalog"},
	{FullMethod: "/orders.v1.OrderService/WatchOrder", Service: "orders.v1.OrderService", Method: "WatchOrder", Backend: "orders"},
}

const (
	secretToken = "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl"
	secretKey   = "pk_live_0123456789abcdef"
)

// fixture is a Stats with its registry and a captured access log.
type fixture struct {
	s   *stats.Stats
	reg *prometheus.Registry
	log *logBuffer
}

func newFixture(t *testing.T, opts ...stats.Option) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), log: &logBuffer{}}
	opts = append([]stats.Option{stats.WithAccessLog(slog.New(slog.NewJSONHandler(f.log, nil)))}, opts...)
	s, err := stats.New(f.reg, routes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	return f
}

// incoming is the context a call has when it reaches stats: the caller's
// metadata, with credentials, and the gateway's call facts.
func incoming(c *policy.Call, kv ...string) context.Context {
	md := metadata.Pairs(append([]string{"authorization", secretToken, "x-api-key", secretKey}, kv...)...)
	return policy.NewContext(metadata.NewIncomingContext(context.Background(), md), c)
}

func restCall(method string) *policy.Call {
	return &policy.Call{FullMethod: "/catalog.v1.CatalogService/" + method, Service: "catalog.v1.CatalogService", Method: method,
		Backend: "catalog", Transport: policy.REST, HTTPRoute: "GET /v1/products/{id}", ClientIP: "192.0.2.7"}
}

func (f *fixture) unary(t *testing.T, ctx context.Context, c *policy.Call, handler grpc.UnaryHandler) error {
	t.Helper()
	_, err := f.s.UnaryServerInterceptor()(ctx, wrapperspb.String("prd-000001"),
		&grpc.UnaryServerInfo{FullMethod: c.FullMethod}, handler)
	return err
}

func ok(context.Context, any) (any, error) { return wrapperspb.String("a product"), nil }

// value returns the value of the series name{labels}, and whether it exists.
func value(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return number(m), true
		}
	}
	return 0, false
}

func number(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func TestUnaryCallIsCountedAndLogged(t *testing.T) {
	f := newFixture(t)
	c := restCall("GetProduct")
	ctx := incoming(c, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	err := f.unary(t, ctx, c, func(ctx context.Context, req any) (any, error) {
		// Auth runs after stats and names the caller.
		c, _ := policy.FromContext(ctx)
		c.Identity = &policy.Identity{Consumer: "alice"}
		return ok(ctx, req)
	})
	if err != nil {
		t.Fatal(err)
	}
	call := map[string]string{"service": "catalog.v1.CatalogService", "method": "GetProduct", "transport": "rest"}
	for name, want := range map[string]float64{
		"portico_request_duration_seconds":     1,
		"portico_requests_in_flight":           0,
		"portico_request_message_bytes_total":  float64(len("prd-000001") + 2),
		"portico_response_message_bytes_total": float64(len("a product") + 2),
	} {
		if got, found := value(t, f.reg, name, call); !found || got != want {
			t.Errorf("%s = %v (found %v), want %v", name, got, found, want)
		}
	}
	call["code"] = "OK"
	if got, _ := value(t, f.reg, "portico_requests_total", call); got != 1 {
		t.Errorf("portico_requests_total{code=OK} = %v, want 1", got)
	}

	lines := f.log.lines(t)
	if len(lines) != 1 {
		t.Fatalf("want one access log line, got %d: %s", len(lines), f.log)
	}
	want := map[string]any{
		"msg": "call", "transport": "rest", "route": "GET /v1/products/{id}", "method": "/catalog.v1.CatalogService/GetProduct",
		"status": float64(200), "code": "OK", "client_ip": "192.0.2.7", "consumer": "alice", "backend": "catalog",
		"bytes_in": float64(12), "bytes_out": float64(11), "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("access log %s = %v, want %v", k, lines[0][k], v)
		}
	}
	if _, ok := lines[0]["latency"].(float64); !ok {
		t.Errorf("access log has no latency: %v", lines[0])
	}
	f.log.noSecrets(t)
}

func TestRejectionsCountedByPolicyAndReason(t *testing.T) {
	f := newFixture(t)
	c := restCall("GetProduct")
	c.Transport, c.HTTPRoute = policy.GRPC, ""
	reject := func(name, reason string) grpc.UnaryHandler {
		return func(context.Context, any) (any, error) {
			return nil, policy.Reject(codes.ResourceExhausted, name, reason, "slow down", nil, &errdetails.RetryInfo{})
		}
	}
	for range 2 {
		if err := f.unary(t, incoming(c), c, reject("ratelimit", "RATE_LIMITED")); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("the rejection must pass unchanged, got %v", err)
		}
	}
	_ = f.unary(t, incoming(c), c, reject("made-up", "ANYTHING"))
	// A backend's own error is no rejection.
	_ = f.unary(t, incoming(c), c, func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "no such product") })

	base := map[string]string{"service": "catalog.v1.CatalogService", "method": "GetProduct"}
	for _, tc := range []struct {
		policy, reason string
		want           float64
	}{{"ratelimit", "RATE_LIMITED", 2}, {"other", "ANYTHING", 1}} {
		labels := map[string]string{"policy": tc.policy, "reason": tc.reason}
		for k, v := range base {
			labels[k] = v
		}
		if got, _ := value(t, f.reg, "portico_rejections_total", labels); got != tc.want {
			t.Errorf("rejections %v = %v, want %v", labels, got, tc.want)
		}
	}
	if got, _ := value(t, f.reg, "portico_requests_total", map[string]string{"method": "GetProduct", "transport": "grpc", "code": "NotFound"}); got != 1 {
		t.Errorf("NotFound calls = %v, want 1", got)
	}
	lines := f.log.lines(t)
	if len(lines) != 4 || lines[0]["rejected_by"] != "ratelimit" || lines[0]["reason"] != "RATE_LIMITED" || lines[0]["code"] != "ResourceExhausted" {
		t.Errorf("access log of a rejection: %v", lines)
	}
	if _, has := lines[0]["status"]; has {
		t.Errorf("a gRPC call has no HTTP status in the access log: %v", lines[0])
	}
}

func TestAccessLogSamplingAndQuietRoutes(t *testing.T) {
	f := newFixture(t, stats.WithAccessLogSample(0), stats.WithoutAccessLog("catalog.v1.CatalogService/ListProducts"))
	get, list := restCall("GetProduct"), restCall("ListProducts")
	_ = f.unary(t, incoming(get), get, ok)
	_ = f.unary(t, incoming(get), get, func(context.Context, any) (any, error) { return nil, status.Error(codes.Internal, "boom") })
	_ = f.unary(t, incoming(list), list, func(context.Context, any) (any, error) { return nil, status.Error(codes.Internal, "boom") })
	lines := f.log.lines(t)
	if len(lines) != 1 || lines[0]["code"] != "Internal" || lines[0]["method"] != get.FullMethod {
		t.Fatalf("with sample 0 only failures are logged, and never for a quiet route; got %v", lines)
	}
	// Metrics do not sample.
	if got, _ := value(t, f.reg, "portico_requests_total", map[string]string{"method": "ListProducts", "code": "Internal"}); got != 1 {
		t.Errorf("quiet route still counts: got %v", got)
	}

	if _, err := stats.New(prometheus.NewRegistry(), routes, stats.WithoutAccessLog("catalog.v1.CatalogService/Nope")); err == nil ||
		!strings.Contains(err.Error(), "Nope") {
		t.Errorf("an unknown route must stop the start, got %v", err)
	}
}

func TestStreamCountsMessagesAndWholeStream(t *testing.T) {
	f := newFixture(t)
	c := &policy.Call{FullMethod: "/orders.v1.OrderService/WatchOrder", Service: "orders.v1.OrderService", Method: "WatchOrder",
		Backend: "orders", Transport: policy.GRPC, ClientIP: "192.0.2.9"}
	ss := &fakeStream{ctx: incoming(c)}
	err := f.s.StreamServerInterceptor()(nil, ss, &grpc.StreamServerInfo{FullMethod: c.FullMethod, IsServerStream: true},
		func(_ any, ss grpc.ServerStream) error {
			var in wrapperspb.StringValue
			if err := ss.RecvMsg(&in); err != nil {
				return err
			}
			for range 3 {
				if err := ss.SendMsg(wrapperspb.String("status")); err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"method": "WatchOrder", "transport": "grpc"}
	if got, _ := value(t, f.reg, "portico_response_message_bytes_total", labels); got != 3*8 {
		t.Errorf("response bytes = %v, want 24", got)
	}
	if got, _ := value(t, f.reg, "portico_request_message_bytes_total", labels); got != 4 {
		t.Errorf("request bytes = %v, want 4", got)
	}
	if lines := f.log.lines(t); len(lines) != 1 || lines[0]["bytes_out"] != float64(24) {
		t.Errorf("one line per stream, with its bytes: %v", lines)
	}
}

// A call without a policy.Call cannot be measured under a route: stats
// refuses it (the chain runs stats only for routed methods), and logs nothing.
func TestCallsWithoutCallFactsAreRefused(t *testing.T) {
	f := newFixture(t)
	_, err := f.s.UnaryServerInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"},
		func(context.Context, any) (any, error) { t.Error("the handler ran"); return nil, nil })
	if status.Code(err) != codes.Internal {
		t.Fatalf("no call facts: %v, want INTERNAL", err)
	}
	if n := len(f.log.lines(t)); n != 0 {
		t.Errorf("logged %d lines for a call without facts", n)
	}
}

// A panic below stats is measured as INTERNAL, and the call leaves the
// in-flight gauge, before the panic goes on to the chain's recovery.
func TestPanicBelowIsMeasured(t *testing.T) {
	f := newFixture(t)
	ctx := policy.NewContext(context.Background(), &policy.Call{FullMethod: "/catalog.v1.CatalogService/GetProduct",
		Service: "catalog.v1.CatalogService", Method: "GetProduct", Backend: "catalog", Transport: policy.GRPC})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("stats swallowed the panic; the chain's recovery must answer it")
			}
		}()
		_, _ = f.s.UnaryServerInterceptor()(ctx, nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { panic("below") })
	}()
	labels := map[string]string{"service": "catalog.v1.CatalogService", "method": "GetProduct", "transport": "grpc"}
	if got, _ := value(t, f.reg, "portico_requests_total", map[string]string{"service": "catalog.v1.CatalogService", "method": "GetProduct", "transport": "grpc", "code": "Internal"}); got != 1 {
		t.Errorf("INTERNAL calls = %v, want 1", got)
	}
	if got, _ := value(t, f.reg, "portico_requests_in_flight", labels); got != 0 {
		t.Errorf("in flight = %v, want 0", got)
	}
}

func TestObserverFeedsBackendMetrics(t *testing.T) {
	f := newFixture(t)
	o := f.s.Observer()
	o.Instances("catalog", []discovery.Instance{{ID: "catalog-b", Addr: "10.0.0.2:2"}, {ID: "catalog-a", Addr: "10.0.0.1:1"}})
	o.WatchOK("catalog")
	o.WatchError("orders", errors.New("consul: connection refused"))
	o.Instances("not-a-backend", nil) // ignored: only route backends have series

	if got, _ := value(t, f.reg, "portico_backend_healthy_instances", map[string]string{"backend": "catalog"}); got != 2 {
		t.Errorf("healthy catalog instances = %v, want 2", got)
	}
	if got, _ := value(t, f.reg, "portico_consul_watch_errors_total", map[string]string{"backend": "orders"}); got != 1 {
		t.Errorf("orders watch errors = %v, want 1", got)
	}
	if _, found := value(t, f.reg, "portico_consul_watch_age_seconds", map[string]string{"backend": "catalog"}); !found {
		t.Error("no watch age for catalog")
	}
	if _, found := value(t, f.reg, "portico_consul_watch_age_seconds", map[string]string{"backend": "orders"}); found {
		t.Error("a watch age for orders, which Consul never answered")
	}
	if _, found := value(t, f.reg, "portico_backend_healthy_instances", map[string]string{"backend": "not-a-backend"}); found {
		t.Error("a series for a service outside the route table")
	}

	bs := f.s.Backends()
	if len(bs) != 2 || bs[0].Name != "catalog" || !bs[0].Resolved || len(bs[0].Instances) != 2 || bs[0].Instances[0].ID != "catalog-a" {
		t.Fatalf("Backends() = %+v", bs)
	}
	if bs[1].Name != "orders" || bs[1].Resolved || bs[1].WatchErrors != 1 || !strings.Contains(bs[1].LastWatchError, "refused") {
		t.Errorf("orders = %+v", bs[1])
	}
}

// fakeStream is a server stream that hands out one request and takes any
// number of responses. It embeds the interface: what it does not fake,
// the test does not call.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) SendMsg(any) error        { return nil }
func (s *fakeStream) RecvMsg(m any) error {
	m.(*wrapperspb.StringValue).Value = "id"
	return nil
}

// logBuffer is an access log sink.
type logBuffer struct{ testutil.LockedBuffer }

func (s *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range s.Lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func (s *logBuffer) noSecrets(t *testing.T) {
	t.Helper()
	for _, secret := range []string{secretToken, "eyJhbGciOiJIUzI1NiJ9", secretKey} {
		if strings.Contains(s.String(), secret) {
			t.Errorf("access log leaks %q:\n%s", secret, s)
		}
	}
}
