package backend

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// Config is a service's resilience settings (services.<name> in the
// gateway's config). Unset fields take the defaults below; routes that
// share a backend connection must agree on the connection's part (all but
// Retry).
type Config struct {
	// Retry tunes the retries of the service's idempotent methods.
	Retry *Retry `yaml:"retry"`
	// RetryThrottling bounds retries per backend connection.
	RetryThrottling *Throttling `yaml:"retry_throttling"`
	// OutlierDetection ejects instances that keep failing.
	OutlierDetection *Outlier `yaml:"outlier_detection"`
	// MaxConcurrentRequests is the circuit breaker: calls and streams open
	// to the backend at once. Over it a call is refused at once with
	// UNAVAILABLE, reason BACKEND_OVERLOADED. Default 1000; -1 is no limit.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	// LoadBalancing is round_robin (the default), least_request or
	// ring_hash.
	LoadBalancing string `yaml:"load_balancing"`
	// HashHeader is the request header ring_hash hashes (x-user-id); a call
	// without it goes to a random instance.
	HashHeader string `yaml:"hash_header"`
	// HealthCheck has the gateway watch each instance's grpc.health.v1
	// status, on top of Consul's checks, and route only to SERVING ones.
	// Default false: Consul's checks already do, only less often.
	HealthCheck *bool `yaml:"health_check"`
}

// Retry is a retry policy, grpc-go's service-config retryPolicy. A call
// is retried only when its method is idempotent (option idempotency_level
// or portico.options.v1.method idempotent): other methods get grpc-go's
// transparent retries only, for requests that never reached a backend.
type Retry struct {
	// MaxAttempts counts the first attempt; 1 turns retries off. At most 5
	// (grpc-go's cap). Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// Codes are the status codes retried. Default UNAVAILABLE. A backend
	// steers retries as gRPC defines (gRFC A6): trailer
	// grpc-retry-pushback-ms says when to retry, and a negative value that
	// the call must not be retried. RESOURCE_EXHAUSTED is not retried by
	// default: grpc-go would retry it also from a backend that says
	// nothing, and a backend that limits its callers then sees up to three
	// times their calls. List it to retry it.
	Codes []string `yaml:"codes"`
	// InitialBackoff and MaxBackoff bound the jittered exponential wait
	// between attempts. Defaults 50ms and 500ms.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// BackoffMultiplier grows the backoff after each attempt. Default 2.
	BackoffMultiplier float64 `yaml:"backoff_multiplier"`
}

// Throttling is grpc-go's retryThrottling: a token bucket per backend
// connection. A failed attempt takes a token, a success gives back
// TokenRatio; while the bucket is at or under half, nothing is retried. So
// once more than TokenRatio/(1+TokenRatio) of attempts fail, retries stop
// and cannot multiply an outage.
type Throttling struct {
	// MaxTokens is the bucket's size. Default 100: a burst of calls that
	// meets a failing instance before it is ejected (about 50 failures)
	// is still retried.
	MaxTokens int `yaml:"max_tokens" json:"maxTokens"`
	// TokenRatio is what a success gives back. Default 0.5: retries stop
	// when a third of attempts fail.
	TokenRatio float64 `yaml:"token_ratio" json:"tokenRatio"`
}

// Outlier is outlier detection: an instance whose last ConsecutiveFailures
// attempts all failed is taken out of rotation for BaseEjectionTime times
// the number of times it has been ejected (at most MaxEjectionTime), then
// comes back on its own. Never more than MaxEjectionPercent of a backend's
// instances are out at once.
type Outlier struct {
	// ConsecutiveFailures ejects an instance; 0 turns detection off.
	// Default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// Interval is how often ejections are reviewed. Default 1s.
	Interval time.Duration `yaml:"interval"`
	// BaseEjectionTime is the first ejection's length. Default 10s.
	BaseEjectionTime time.Duration `yaml:"base_ejection_time"`
	// MaxEjectionTime caps an ejection's length. Default 300s.
	MaxEjectionTime time.Duration `yaml:"max_ejection_time"`
	// MaxEjectionPercent bounds the share ejected at once. Default 50.
	MaxEjectionPercent int `yaml:"max_ejection_percent"`
}

// The load-balancing policies.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	RingHash     = "ring_hash"
)

// Defaults: on without any configuration.
var (
	DefaultRetry      = Retry{MaxAttempts: 3, Codes: []string{"UNAVAILABLE"}, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, BackoffMultiplier: 2}
	DefaultThrottling = Throttling{MaxTokens: 100, TokenRatio: 0.5}
	DefaultOutlier    = Outlier{ConsecutiveFailures: 5, Interval: time.Second, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50}
)

// DefaultMaxConcurrentRequests is the circuit breaker's default limit.
const DefaultMaxConcurrentRequests = 1000

// maxAttempts is grpc-go's cap on a retry policy's attempts.
const maxAttempts = 5

// WithDefaults fills what c leaves unset.
func (c Config) WithDefaults() Config {
	if c.Retry == nil {
		c.Retry = &Retry{}
	}
	r := c.Retry.WithDefaults(DefaultRetry)
	c.Retry = &r
	t := DefaultThrottling
	if c.RetryThrottling != nil {
		t = *c.RetryThrottling
		if t.MaxTokens == 0 {
			t.MaxTokens = DefaultThrottling.MaxTokens
		}
		if t.TokenRatio == 0 {
			t.TokenRatio = DefaultThrottling.TokenRatio
		}
	}
	c.RetryThrottling = &t
	o := DefaultOutlier
	if c.OutlierDetection != nil {
		o = *c.OutlierDetection
		d := DefaultOutlier
		if o.Interval == 0 {
			o.Interval = d.Interval
		}
		if o.BaseEjectionTime == 0 {
			o.BaseEjectionTime = d.BaseEjectionTime
		}
		if o.MaxEjectionTime == 0 {
			o.MaxEjectionTime = max(d.MaxEjectionTime, o.BaseEjectionTime)
		}
		if o.MaxEjectionPercent == 0 {
			o.MaxEjectionPercent = d.MaxEjectionPercent
		}
	}
	c.OutlierDetection = &o
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if c.LoadBalancing == "" {
		c.LoadBalancing = RoundRobin
	}
	c.HashHeader = strings.ToLower(c.HashHeader)
	if c.HealthCheck == nil {
		c.HealthCheck = new(bool)
	}
	return c
}

// WithDefaults fills what r leaves unset from base (a service's retry, for
// a method's).
func (r Retry) WithDefaults(base Retry) Retry {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = base.MaxAttempts
	}
	if r.Codes == nil {
		r.Codes = base.Codes
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = base.InitialBackoff
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(base.MaxBackoff, r.InitialBackoff)
	}
	if r.BackoffMultiplier == 0 {
		r.BackoffMultiplier = base.BackoffMultiplier
	}
	return r
}

// Validate checks an effective (defaulted) config; key names the config
// key it came from, for the message.
func (c Config) Validate(key string) error {
	if err := c.Retry.Validate(key + ".retry"); err != nil {
		return err
	}
	if t := c.RetryThrottling; t.MaxTokens < 1 || t.MaxTokens > 1000 || t.TokenRatio <= 0 {
		return fmt.Errorf("%s.retry_throttling: max_tokens must be 1 to 1000 and token_ratio above 0", key)
	}
	o := c.OutlierDetection
	switch {
	case o.ConsecutiveFailures < 0:
		return fmt.Errorf("%s.outlier_detection.consecutive_failures: %d is negative (0 turns detection off)", key, o.ConsecutiveFailures)
	case o.Interval < 0 || o.BaseEjectionTime < 0 || o.MaxEjectionTime < o.BaseEjectionTime:
		return fmt.Errorf("%s.outlier_detection: interval and base_ejection_time must be positive and max_ejection_time at least base_ejection_time", key)
	case o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100:
		return fmt.Errorf("%s.outlier_detection.max_ejection_percent: %d is not a percentage", key, o.MaxEjectionPercent)
	}
	if c.MaxConcurrentRequests < -1 {
		return fmt.Errorf("%s.max_concurrent_requests: %d: want a positive limit, or -1 for none", key, c.MaxConcurrentRequests)
	}
	switch c.LoadBalancing {
	case RoundRobin, LeastRequest:
		if c.HashHeader != "" {
			return fmt.Errorf("%s.hash_header: only ring_hash hashes a header, not %s", key, c.LoadBalancing)
		}
	case RingHash:
		if c.HashHeader == "" {
			return fmt.Errorf("%s.load_balancing: ring_hash needs hash_header, the request header to hash (x-user-id)", key)
		}
		if strings.HasSuffix(c.HashHeader, "-bin") || strings.HasPrefix(c.HashHeader, ":") || strings.HasPrefix(c.HashHeader, "grpc-") {
			return fmt.Errorf("%s.hash_header: %q cannot be hashed: a binary or reserved header", key, c.HashHeader)
		}
	default:
		return fmt.Errorf("%s.load_balancing: %q: want round_robin, least_request or ring_hash", key, c.LoadBalancing)
	}
	return nil
}

// Validate checks an effective retry policy.
func (r Retry) Validate(key string) error {
	if r.MaxAttempts < 1 || r.MaxAttempts > maxAttempts {
		return fmt.Errorf("%s.max_attempts: %d: want 1 (no retries) to %d", key, r.MaxAttempts, maxAttempts)
	}
	if r.MaxAttempts > 1 && len(r.Codes) == 0 {
		return fmt.Errorf("%s.codes: empty: name the status codes to retry (UNAVAILABLE)", key)
	}
	for _, name := range r.Codes {
		if _, ok := codeByName(name); !ok {
			return fmt.Errorf("%s.codes: %q is not a gRPC status code name (UNAVAILABLE, RESOURCE_EXHAUSTED, ...)", key, name)
		}
	}
	if r.InitialBackoff <= 0 || r.MaxBackoff < r.InitialBackoff || r.BackoffMultiplier < 1 {
		return fmt.Errorf("%s: initial_backoff must be positive, max_backoff at least initial_backoff and backoff_multiplier at least 1", key)
	}
	return nil
}

// codeByName reads a status code's name as the service config spells it.
func codeByName(name string) (codes.Code, bool) {
	var c codes.Code
	err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(name) + `"`))
	return c, err == nil && c != codes.OK
}

// String shows the policy the way -routes and the admin page print it.
func (r *Retry) String() string {
	if r == nil || r.MaxAttempts <= 1 {
		return "none"
	}
	return fmt.Sprintf("%d attempts on %s, backoff %s..%s", r.MaxAttempts, strings.Join(r.Codes, ","), r.InitialBackoff, r.MaxBackoff)
}

// SameConnection reports whether two effective configs agree on what the
// backend connection they would share carries (all but Retry).
func SameConnection(a, b Config) bool {
	return *a.RetryThrottling == *b.RetryThrottling && *a.OutlierDetection == *b.OutlierDetection &&
		a.MaxConcurrentRequests == b.MaxConcurrentRequests && a.LoadBalancing == b.LoadBalancing &&
		a.HashHeader == b.HashHeader && *a.HealthCheck == *b.HealthCheck
}

// jsonDuration is a duration as the service config writes it ("0.05s").
func jsonDuration(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// Row is the connection part of c as a tab-separated row of the route
// table: backend, balancing, outlier detection, max concurrent, retry
// throttling, health check.
func (c Config) Row(backend string) string {
	lb := c.LoadBalancing
	if c.LoadBalancing == RingHash {
		lb += " on " + c.HashHeader
	}
	o := c.OutlierDetection
	od := "off"
	if o.ConsecutiveFailures > 0 {
		od = fmt.Sprintf("after %d failures, %s+ (max %d%%)", o.ConsecutiveFailures, o.BaseEjectionTime, o.MaxEjectionPercent)
	}
	limit := "none"
	if c.MaxConcurrentRequests > 0 {
		limit = fmt.Sprint(c.MaxConcurrentRequests)
	}
	hc := "consul"
	if *c.HealthCheck {
		hc = "consul+grpc"
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%d tokens, ratio %g\t%s", backend, lb, od, limit,
		c.RetryThrottling.MaxTokens, c.RetryThrottling.TokenRatio, hc)
}
