package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // load_balancing: least_request
	_ "google.golang.org/grpc/balancer/ringhash"     // load_balancing: ring_hash
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/health" // health_check: grpc-go's client-side health checking
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ReasonOverloaded is the ErrorInfo reason of a call the circuit breaker
// refused.
const ReasonOverloaded = "BACKEND_OVERLOADED"

// Method is one method served over a connection, with its retry policy:
// nil for a method that is not idempotent, which gets only grpc-go's
// transparent retries (the request never reached a backend).
type Method struct {
	Service, Method string
	Retry           *Retry
}

// Conn is one backend connection: grpc-go's ClientConn, balanced and
// retried by the service config that Config makes, with the concurrency
// limit (circuit breaker) and the outlier filter's view.
type Conn struct {
	*grpc.ClientConn
	backend  string
	cfg      Config
	tracker  *Tracker
	inFlight atomic.Int64
	gauge    prometheus.Gauge
	refused  prometheus.Counter
	// releaseFn is release as a func value, made once: a method value
	// made per call would be an allocation per call.
	releaseFn func()
}

// Dial makes the connection to target, the backend named backend, resolved
// by rb, with the connection part of cfg (effective: WithDefaults) and
// methods' retries. It does no I/O.
func Dial(target, backend string, cfg Config, methods []Method, rb resolver.Builder, m *Metrics, logger *slog.Logger, opts ...grpc.DialOption) (*Conn, error) {
	c := &Conn{backend: backend, cfg: cfg, tracker: newTracker(backend, m, logger),
		gauge: m.inFlight.WithLabelValues(backend), refused: m.overloaded.WithLabelValues(backend)}
	sc, err := serviceConfig(cfg, methods)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(target, append(opts, grpc.WithResolvers(trackingBuilder{rb, c.tracker}), grpc.WithDefaultServiceConfig(sc))...)
	if err != nil {
		return nil, err
	}
	c.ClientConn, c.releaseFn = cc, c.release
	return c, nil
}

// Config is the connection's effective configuration.
func (c *Conn) Config() Config { return c.cfg }

// Ejections lists the instances outlier detection has out now.
func (c *Conn) Ejections() []Ejection { return c.tracker.Ejections() }

// InFlight is the number of calls and streams open to the backend.
func (c *Conn) InFlight() int64 { return c.inFlight.Load() }

// Acquire takes a place for one call or stream under
// max_concurrent_requests, or refuses at once: UNAVAILABLE with reason
// BACKEND_OVERLOADED, a RetryInfo and a retry-after header, rather than
// queueing calls on a backend that is not keeping up. release gives the
// place back; call it once.
func (c *Conn) Acquire(ctx context.Context) (release func(), err error) {
	if c == nil { // a composite route's: the gateway serves it
		return func() {}, nil
	}
	if !c.take() {
		c.refused.Inc()
		_ = grpc.SetHeader(ctx, metadata.Pairs("retry-after", "1"))
		return nil, policy.Error(codes.Unavailable, ReasonOverloaded,
			fmt.Sprintf("backend %q has %d calls in flight, its limit (max_concurrent_requests); retry later", c.backend, c.cfg.MaxConcurrentRequests),
			map[string]string{"backend": c.backend, "max_concurrent_requests": strconv.Itoa(c.cfg.MaxConcurrentRequests)},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
	}
	c.gauge.Inc()
	return c.releaseFn, nil
}

// take counts one more call in flight unless that would go over the
// limit: the count never passes it, even for a moment.
func (c *Conn) take() bool {
	limit := int64(c.cfg.MaxConcurrentRequests)
	if limit <= 0 {
		c.inFlight.Add(1)
		return true
	}
	for {
		n := c.inFlight.Load()
		if n >= limit {
			return false
		}
		if c.inFlight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (c *Conn) release() {
	c.inFlight.Add(-1)
	c.gauge.Dec()
}

// serviceConfig is grpc-go's service config for a connection.
func serviceConfig(cfg Config, methods []Method) (string, error) {
	child := map[string]any{}
	switch cfg.LoadBalancing {
	case RoundRobin:
		child["round_robin"] = map[string]any{}
	case LeastRequest:
		child["least_request_experimental"] = map[string]any{"choiceCount": 2}
	case RingHash:
		child["ring_hash_experimental"] = map[string]any{"requestHashHeader": cfg.HashHeader}
	default:
		return "", fmt.Errorf("backend: load_balancing %q", cfg.LoadBalancing)
	}
	o := cfg.OutlierDetection
	sc := map[string]any{
		"loadBalancingConfig": []any{map[string]any{Name: lbConfig{
			ConsecutiveFailures: o.ConsecutiveFailures, Interval: jsonDur(o.Interval),
			BaseEjectionTime: jsonDur(o.BaseEjectionTime), MaxEjectionTime: jsonDur(o.MaxEjectionTime),
			MaxEjectionPercent: o.MaxEjectionPercent, ChildPolicy: mustJSON([]any{child}),
		}}},
		"retryThrottling": map[string]any{"maxTokens": cfg.RetryThrottling.MaxTokens, "tokenRatio": cfg.RetryThrottling.TokenRatio},
	}
	if *cfg.HealthCheck {
		// "": the whole server's status, which Portico's hosts keep.
		sc["healthCheckConfig"] = map[string]any{"serviceName": ""}
	}
	var mcs []any
	for _, m := range methods {
		r := m.Retry
		if r == nil || r.MaxAttempts < 2 {
			continue
		}
		codes := make([]string, len(r.Codes))
		for i, c := range r.Codes {
			codes[i] = strings.ToUpper(c)
		}
		mcs = append(mcs, map[string]any{
			"name": []any{map[string]string{"service": m.Service, "method": m.Method}},
			"retryPolicy": map[string]any{
				"maxAttempts": r.MaxAttempts, "initialBackoff": jsonDuration(r.InitialBackoff), "maxBackoff": jsonDuration(r.MaxBackoff),
				"backoffMultiplier": r.BackoffMultiplier, "retryableStatusCodes": codes,
			},
		})
	}
	if len(mcs) > 0 {
		sc["methodConfig"] = mcs
	}
	b, err := json.Marshal(sc)
	return string(b), err
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings and numbers reach here
	}
	return b
}
