package stats_test

import (
	"context"
	"net"
	"testing"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

// TestSpansFollowTheCall checks the server span continues the caller's
// trace, the client span of the backend attempt is its child, and the
// backend is sent the client span's context, not the caller's.
func TestSpansFollowTheCall(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	f := newFixture(t, stats.WithTracerProvider(tp))
	f.s.Observer().Instances("catalog", []discovery.Instance{{ID: "catalog-a", Addr: "10.0.0.1:7001"}})
	c := restCall("GetProduct")
	callerParent := "00-" + callerTrace + "-" + callerSpan + "-01"
	var sent string
	err := f.unary(t, incoming(c, "traceparent", callerParent), c, func(ctx context.Context, req any) (any, error) {
		// What the proxy does: forward the caller's metadata and measure
		// the backend call it makes with it.
		md, _ := metadata.FromIncomingContext(ctx)
		actx, call := f.s.StartBackendCall(metadata.NewOutgoingContext(ctx, md.Copy()), c.FullMethod)
		out, _ := metadata.FromOutgoingContext(actx)
		sent = out.Get("traceparent")[0]
		call.Reached(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7001})
		call.End(nil)
		return ok(ctx, req)
	})
	if err != nil {
		t.Fatal(err)
	}

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("want a client and a server span, got %d", len(spans))
	}
	client, server := spans[0], spans[1]
	if server.SpanKind() != trace.SpanKindServer || client.SpanKind() != trace.SpanKindClient {
		t.Fatalf("span kinds: %v, %v", client.SpanKind(), server.SpanKind())
	}
	if server.SpanContext().TraceID().String() != callerTrace || server.Parent().SpanID().String() != callerSpan || !server.Parent().IsRemote() {
		t.Errorf("server span does not continue the caller's trace: parent %v", server.Parent())
	}
	if server.Name() != "catalog.v1.CatalogService/GetProduct" {
		t.Errorf("server span name %q", server.Name())
	}
	if client.Parent().SpanID() != server.SpanContext().SpanID() || client.SpanContext().TraceID() != server.SpanContext().TraceID() {
		t.Errorf("client span is not the server span's child")
	}
	if want := "00-" + callerTrace + "-" + client.SpanContext().SpanID().String() + "-01"; sent != want {
		t.Errorf("backend got traceparent %q, want %q", sent, want)
	}
	attrs := map[string]string{}
	for _, kv := range client.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["portico.instance"] != "catalog-a" || attrs["server.address"] != "10.0.0.1:7001" {
		t.Errorf("client span attributes %v", attrs)
	}

	if got, _ := value(t, f.reg, "portico_backend_requests_total", map[string]string{"backend": "catalog", "instance": "catalog-a", "code": "OK"}); got != 1 {
		t.Errorf("backend attempts of catalog-a = %v, want 1", got)
	}
	if got, _ := value(t, f.reg, "portico_backend_request_duration_seconds", map[string]string{"backend": "catalog", "instance": "catalog-a"}); got != 1 {
		t.Errorf("backend latency observations = %v, want 1", got)
	}
	line := f.log.lines(t)[0]
	if line["instance"] != "catalog-a" || line["trace_id"] != callerTrace {
		t.Errorf("access log instance/trace: %v", line)
	}
}

func TestBackendAttemptsPerInstance(t *testing.T) {
	f := newFixture(t)
	o := f.s.Observer()
	o.Instances("catalog", []discovery.Instance{{ID: "catalog-a", Addr: "10.0.0.1:7001"}})
	c := restCall("GetProduct")
	ctx := incoming(c)
	attempt := func(addr net.Addr, err error) {
		_, call := f.s.StartBackendCall(ctx, c.FullMethod)
		call.Reached(addr) // nil: no instance was reached
		call.End(err)
	}
	attempt(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7001}, status.Error(codes.NotFound, "no such product"))
	attempt(nil, status.Error(codes.Unavailable, "no healthy instance"))

	if got, _ := value(t, f.reg, "portico_backend_requests_total", map[string]string{"instance": "catalog-a", "code": "NotFound"}); got != 1 {
		t.Errorf("NotFound from catalog-a = %v, want 1", got)
	}
	if got, _ := value(t, f.reg, "portico_backend_requests_total", map[string]string{"instance": "none", "code": "Unavailable"}); got != 1 {
		t.Errorf("attempts that reached no instance = %v, want 1", got)
	}
	if b := f.s.Backends()[0]; b.Instances[0].Calls != 1 || b.Instances[0].Errors != 1 {
		t.Errorf("catalog-a calls/errors = %d/%d, want 1/1", b.Instances[0].Calls, b.Instances[0].Errors)
	}

	// The instance leaves Consul: its series go, so instance churn does not
	// grow /metrics forever.
	o.Instances("catalog", []discovery.Instance{{ID: "catalog-b", Addr: "10.0.0.2:7001"}})
	if _, found := value(t, f.reg, "portico_backend_requests_total", map[string]string{"instance": "catalog-a"}); found {
		t.Error("series of a departed instance are still exported")
	}
	if _, found := value(t, f.reg, "portico_backend_requests_total", map[string]string{"instance": "none"}); !found {
		t.Error(`the "none" series must stay`)
	}
}

func TestTracingOffAddsNothing(t *testing.T) {
	f := newFixture(t)
	c := restCall("GetProduct")
	md := metadata.Pairs("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	actx, _ := f.s.StartBackendCall(metadata.NewOutgoingContext(incoming(c), md), c.FullMethod)
	out, _ := metadata.FromOutgoingContext(actx)
	if got := out.Get("traceparent"); len(got) != 1 || got[0] != md.Get("traceparent")[0] {
		t.Errorf("with tracing off the caller's traceparent passes unchanged; got %v", got)
	}
	if trace.SpanFromContext(actx).SpanContext().IsValid() {
		t.Error("a span was started with tracing off")
	}
}

// TestOTLPExporterLivesBetweenStartAndClose: New validates the endpoint and
// does nothing else; tracing begins at Start; Close flushes and stops it.
func TestOTLPExporterLivesBetweenStartAndClose(t *testing.T) {
	if _, err := stats.New(prometheus.NewRegistry(), routes, stats.WithOTLP("127.0.0.1:4317", 1)); err == nil {
		t.Error("an endpoint that is not a URL must stop the start")
	}
	// Nothing listens there, and nothing is sampled: no export is tried.
	s, err := stats.New(prometheus.NewRegistry(), routes, stats.WithOTLP("http://127.0.0.1:1", 0))
	if err != nil {
		t.Fatal(err)
	}
	c := restCall("GetProduct")
	traced := func() bool {
		ctx, _ := s.StartBackendCall(incoming(c), c.FullMethod)
		return trace.SpanFromContext(ctx).SpanContext().IsValid()
	}
	if traced() {
		t.Error("tracing before Start")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !traced() {
		t.Error("no tracing after Start")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
