package stats

import (
	"context"
	"strings"

	"github.com/portico-gw/portico/gateway/policy"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// instrumentation names the tracer, as OpenTelemetry asks.
const instrumentation = "github.com/portico-gw/portico/gateway/stats"

// tracing starts the server span of each call and the client span of each
// backend attempt. Only W3C Trace Context (traceparent, tracestate) is read
// and written, and no global OpenTelemetry state is touched.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider) *tracing {
	return &tracing{tracer: tp.Tracer(instrumentation), prop: propagation.TraceContext{}}
}

// serverSpan continues the caller's trace from the incoming metadata: a
// gRPC client's own, or the REST request's headers, which the REST door
// forwards as metadata.
func (t *tracing) serverSpan(ctx context.Context, c *policy.Call, name string) (context.Context, trace.Span) {
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = t.prop.Extract(ctx, mdCarrier(md))
	attrs := []attribute.KeyValue{
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", c.Service),
		attribute.String("rpc.method", c.Method),
		attribute.String("portico.transport", string(c.Transport)),
		attribute.String("client.address", c.ClientIP),
	}
	if c.HTTPRoute != "" {
		attrs = append(attrs, attribute.String("http.route", c.HTTPRoute))
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// clientSpan starts the span of one backend attempt and writes its context
// into the outgoing metadata, replacing the traceparent the caller sent.
func (t *tracing) clientSpan(ctx context.Context, fullMethod, backend string) (context.Context, trace.Span) {
	ctx, span := t.tracer.Start(ctx, strings.TrimPrefix(fullMethod, "/"), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), attribute.String("portico.backend", backend)))
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	t.prop.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md), span
}

// endSpan records the code. A server span is an error only for codes that
// mean the server failed, as OpenTelemetry's RPC conventions say; a client
// span for every code but OK.
func endSpan(span trace.Span, code codes.Code, server bool) {
	span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
	if code != codes.OK && (!server || serverFault(code)) {
		span.SetStatus(otelcodes.Error, code.String())
	}
	span.End()
}

func serverFault(code codes.Code) bool {
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// traceID is the call's trace for the access log: the span's, or with
// tracing off the one in the caller's traceparent, so log lines still join
// up with the caller's traces.
func traceID(ctx context.Context, c *policy.Call, span trace.Span) string {
	if span != nil {
		if sc := span.SpanContext(); sc.HasTraceID() {
			return sc.TraceID().String()
		}
	}
	v := c.IncomingValue(ctx, "traceparent")
	if len(v) == 0 {
		return ""
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), mdCarrier{"traceparent": v[:1]}))
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// InjectTrace writes the span context of ctx into md as W3C Trace Context,
// for a call the gateway makes itself through its own chain (a composite's
// step), whose server span then continues ctx's trace.
func InjectTrace(ctx context.Context, md metadata.MD) {
	propagation.TraceContext{}.Inject(ctx, mdCarrier(md))
}

// mdCarrier lets the propagator read and write gRPC metadata.
type mdCarrier metadata.MD

var _ propagation.TextMapCarrier = mdCarrier(nil)

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// newOTLPProvider exports spans in batches over OTLP/gRPC. The exporter
// connects lazily, so a collector that is down costs dropped spans, not a
// failed start.
func newOTLPProvider(ctx context.Context, endpoint string, ratio float64) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "portico"))),
	), nil
}
