package stats

import (
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Option configures Stats.
type Option func(*options)

type options struct {
	accessLog    *slog.Logger // the access log through slog; nil: none, or jsonLog
	jsonLog      bool         // the access log is JSON lines written to logWriter (WithJSONAccessLog)
	logWriter    *logWriter   // the access log's buffer; nil: unbuffered
	sample       float64      // share of successful calls logged
	quiet        []string     // methods or services without access log
	tracer       trace.TracerProvider
	otlpEndpoint string
	otlpRatio    float64
	window       time.Duration // live rates and percentiles
	errorWindow  time.Duration // recent error counts
	tick         time.Duration // snapshot interval
	now          func() time.Time
	logger       *slog.Logger // what is not an access log line: Consul lost and found
}

// logging reports whether there is an access log.
func (o *options) logging() bool { return o.accessLog != nil || o.jsonLog }

func defaultOptions() options {
	return options{
		sample:      1,
		otlpRatio:   1,
		window:      10 * time.Second,
		errorWindow: time.Minute,
		tick:        time.Second,
		now:         time.Now,
		logger:      slog.Default(),
	}
}

// WithLogger sets where stats logs what is not a call: Consul becoming
// unreachable to the gateway's watches, and reachable again. The default
// is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithAccessLog writes one line per call to l, at level Info with message
// "call". Without it there is no access log.
func WithAccessLog(l *slog.Logger) Option {
	return func(o *options) { o.accessLog, o.jsonLog, o.logWriter = l, false, nil }
}

// WithJSONAccessLog writes one JSON line per call to out, buffered as by
// WithBufferedAccessLog. The lines are those slog.NewJSONHandler would
// write (message "call", level INFO), made by an encoder of the access
// log's own at a fraction of slog's cost.
func WithJSONAccessLog(out io.Writer) Option {
	return func(o *options) { o.accessLog, o.jsonLog, o.logWriter = nil, true, newLogWriter(out) }
}

// WithBufferedAccessLog writes one line per call, like WithAccessLog, to the
// handler newHandler makes (slog.NewJSONHandler, say), but gives that
// handler a buffer in front of out: lines reach out whole, in batches, when
// the buffer is full and every 100ms between Start and Close, and Flush and
// Close write out what is left. Use it when out is a file or standard
// output, where one write per call costs more than the rest of the line.
func WithBufferedAccessLog(out io.Writer, newHandler func(io.Writer) slog.Handler) Option {
	return func(o *options) {
		o.logWriter, o.jsonLog = newLogWriter(out), false
		o.accessLog = slog.New(newHandler(o.logWriter))
	}
}

// WithAccessLogSample logs only this share (0 to 1) of the calls that end
// with OK; failed calls, and composite calls with a partial failure, are
// always logged. The default is 1.
func WithAccessLogSample(share float64) Option {
	return func(o *options) { o.sample = min(max(share, 0), 1) }
}

// WithoutAccessLog turns the access log off for some routes, each named by
// its gRPC method (catalog.v1.CatalogService/ListProducts, with or without
// the leading slash) or its whole service (catalog.v1.CatalogService).
// New refuses names that match no route.
func WithoutAccessLog(names ...string) Option {
	return func(o *options) { o.quiet = append(o.quiet, names...) }
}

// WithTracerProvider turns tracing on with a provider the caller owns (and
// shuts down). Tests pass one with an in-memory exporter.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// WithOTLP turns tracing on with spans exported over OTLP/gRPC to endpoint,
// a URL such as http://127.0.0.1:4317 (https for TLS). ratio (0 to 1) is the
// share of new traces sampled; a caller's sampling decision in traceparent
// is kept. Stats builds the exporter in Start and flushes it in Close.
func WithOTLP(endpoint string, ratio float64) Option {
	return func(o *options) { o.otlpEndpoint, o.otlpRatio = endpoint, min(max(ratio, 0), 1) }
}
