package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.yaml.in/yaml/v3"
)

// RedisConfig is rate_limit.redis: where mode redis keeps its counts.
type RedisConfig struct {
	// Address is one Redis ("127.0.0.1:6379"), or a list of two or more
	// seed nodes of a Redis Cluster. Sentinel is not supported.
	Address Addresses `yaml:"address"`
	// Username and PasswordFile authenticate (Redis ACL, or AUTH with a
	// password alone). The file is read at each new connection, so a
	// rotated password needs no restart.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// TLS turns TLS on when any of its files is set: ca_file verifies the
	// server (else the system roots do), for the host name of the first
	// address; cert_file and key_file are the gateway's client
	// certificate. Files are reloaded when they change.
	TLS RedisTLS `yaml:"tls"`
	// KeyPrefix begins every key the limiter writes. Default portico:rl:.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds one decision's round trip. Default 50ms.
	Timeout time.Duration `yaml:"timeout"`
	// FailureMode is what decides while Redis cannot: "local" (the
	// default: this replica enforces its share of each limit, as in
	// cluster mode), "allow" (every call passes) or "deny" (every limited
	// call fails with UNAVAILABLE).
	FailureMode string `yaml:"failure_mode"`
}

// RedisTLS are the TLS files of the connection to Redis.
type RedisTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func (t RedisTLS) enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Addresses is one address or a list of them.
type Addresses []string

// UnmarshalYAML takes a string or a list of strings.
func (a *Addresses) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*a = Addresses{s}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return fmt.Errorf("address: want host:port or a list of them: %w", err)
	}
	*a = list
	return nil
}

// Defaults of rate_limit.redis.
const (
	DefaultKeyPrefix    = "portico:rl:"
	DefaultRedisTimeout = 50 * time.Millisecond
)

// Failure modes.
const (
	FailLocal = "local"
	FailAllow = "allow"
	FailDeny  = "deny"
)

// store is the Redis side of mode redis: one GCRA bucket per method and
// caller in Redis, decided by redis_rate's script in one atomic round trip
// (EVALSHA; EVAL once after a Redis restart flushed the script), with
// Redis's clock, so every replica sees one bucket.
type store struct {
	client    redis.UniversalClient
	rate      *redis_rate.Limiter
	tls       *tlsconfig.Source // nil without TLS
	prefix    string
	timeout   time.Duration
	failure   string
	addresses []string
	metrics   *storeMetrics // nil: not exported

	probe chan struct{} // capacity 1: "Redis failed, probe until it answers"

	// state is read on every decision without a lock; mu guards its
	// changes and the rest.
	state atomic.Int32 // stateUnknown until the first answer, then stateUp or stateDown
	mu    sync.Mutex
	// gen counts failures (written under mu). A round trip that began
	// before the latest one (a probe, or a decision in flight when Redis
	// failed) proves nothing about Redis now, so it cannot turn the store
	// up.
	gen        atomic.Uint64
	since      time.Time
	errors     uint64
	outages    uint64
	lastErr    string
	failedKey  string // a key Redis refused (WRONGTYPE, MOVED): probed until it passes
	downAt     time.Time
	fallbacks0 uint64 // l.fallbacks when the outage began, for the log
}

// newStore checks cfg and builds the client. It reads the TLS and password
// files once, so a missing file fails the gateway's start; it opens no
// connection (go-redis dials on first use).
func newStore(cfg RedisConfig, logger *slog.Logger) (*store, error) {
	if len(cfg.Address) == 0 {
		return nil, errors.New("rate_limit.redis.address is required in mode redis")
	}
	for _, a := range cfg.Address {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("rate_limit.redis.address %q: want host:port", a)
		}
	}
	s := &store{prefix: cfg.KeyPrefix, timeout: cfg.Timeout, failure: cfg.FailureMode,
		addresses: cfg.Address, probe: make(chan struct{}, 1)}
	if s.prefix == "" {
		s.prefix = DefaultKeyPrefix
	}
	if s.timeout <= 0 {
		s.timeout = DefaultRedisTimeout
	}
	switch s.failure {
	case "":
		s.failure = FailLocal
	case FailLocal, FailAllow, FailDeny:
	default:
		return nil, fmt.Errorf("rate_limit.redis.failure_mode %q: want local, allow or deny", cfg.FailureMode)
	}
	opts := &redis.UniversalOptions{
		// Two addresses or more are the seed nodes of a Redis Cluster.
		Addrs:    cfg.Address,
		Username: cfg.Username,
		// The decision's own deadline (timeout) bounds every round trip
		// and probe; these bound what runs outside one (the pool's dials).
		DialTimeout: max(s.timeout, 250*time.Millisecond), ReadTimeout: s.timeout, WriteTimeout: s.timeout,
		ContextTimeoutEnabled: true,
		// A dead Redis is not retried inside a decision: the failure mode
		// answers at once and the prober finds Redis back.
		MaxRetries: -1, DialerRetries: 1,
		// A plain Redis 7 has no maintenance notifications to offer.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if cfg.PasswordFile != "" {
		if _, err := readPassword(cfg.PasswordFile); err != nil {
			return nil, fmt.Errorf("rate_limit.redis.password_file: %w", err)
		}
		user, file := cfg.Username, cfg.PasswordFile
		opts.CredentialsProviderContext = func(context.Context) (string, string, error) {
			pw, err := readPassword(file)
			return user, pw, err
		}
	}
	if cfg.TLS.enabled() {
		src, err := tlsconfig.New("redis", tlsconfig.Files{Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile, CA: cfg.TLS.CAFile},
			tlsconfig.WithLogger(logger))
		if err != nil {
			return nil, fmt.Errorf("rate_limit.redis.tls: %w", err)
		}
		// Every node is verified for the first address's host name.
		host, _, _ := net.SplitHostPort(cfg.Address[0])
		s.tls, opts.TLSConfig = src, src.ClientConfig(host)
	}
	s.client = redis.NewUniversalClient(opts)
	s.rate = redis_rate.NewLimiter(unprefixed{s.client})
	return s, nil
}

func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// unprefixed hands redis_rate's script calls to the client without the
// "rate:" that redis_rate puts before every key, so that keys begin with
// key_prefix exactly, as ACL key patterns (~portico:rl:*) need.
type unprefixed struct{ redis.UniversalClient }

func strip(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, "rate:")
	}
	return out
}

func (u unprefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.Eval(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalSha(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalRO(ctx, script, strip(keys), args...)
}

func (u unprefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return u.UniversalClient.EvalShaRO(ctx, sha1, strip(keys), args...)
}

func (u unprefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return u.UniversalClient.Del(ctx, strip(keys)...)
}

// key is a caller's bucket of a method in Redis:
// <prefix><full method>:c:<consumer> or <prefix><full method>:ip:<address>.
func (s *store) key(fullMethod string, consumer bool, id string) string {
	kind := ":ip:"
	if consumer {
		kind = ":c:"
	}
	return s.prefix + fullMethod + kind + id
}

// allow spends one call of lim from key's bucket in Redis within the
// decision timeout, and times it.
func (s *store) allow(ctx context.Context, key string, r *rate) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	d, err := s.read(ctx, key, r, 1)
	s.metrics.observe(time.Since(start), err)
	return d, err
}

// read runs redis_rate's script on key at cost (0 only reads the bucket)
// under ctx's deadline.
func (s *store) read(ctx context.Context, key string, r *rate, cost int) (Decision, error) {
	res, err := s.rate.AllowN(ctx, key, redis_rate.Limit{Rate: int(r.limit.Requests), Burst: int(r.limit.Burst), Period: r.limit.Period}, cost)
	if err != nil {
		return Decision{}, err
	}
	// redis_rate computes in float seconds and rounds Remaining down, so
	// 0.99/0.01 tokens came back as 98 of 100. Redis's times are exact to
	// its clock's microsecond: the numbers are local mode's, from them.
	reset := max(res.ResetAfter.Round(time.Microsecond), 0)
	d := r.decision(res.Allowed > 0 || cost == 0, int64(reset), 0)
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter.Round(time.Microsecond), time.Microsecond)
	}
	return d, nil
}

const (
	stateUnknown int32 = iota
	stateUp
	stateDown
)

var stateNames = [...]string{stateUnknown: "unknown", stateUp: "up", stateDown: "down"}

func (s *store) status() admin.StoreStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := admin.StoreStatus{Kind: "redis", Addresses: s.addresses, State: stateNames[s.state.Load()], Since: s.since, Errors: s.errors,
		Outages: s.outages, FailureMode: s.failure}
	if s.state.Load() == stateDown {
		st.LastError = s.lastErr
	}
	return st
}

// isDown reports whether decisions skip Redis for now: after a failure,
// until the prober hears from it again.
func (s *store) isDown() bool { return s.state.Load() == stateDown }

// failed records a failed round trip on key ("" for a probe); the first of
// an outage logs, turns the store down and wakes the prober. An outage
// lasts until a probe passes: as long as Redis refuses (NOPERM, READONLY,
// OOM, WRONGTYPE) the probe fails as the decisions did, so the store stays
// down with one log line.
func (s *store) failed(l *Limiter, err error, key string) {
	reason := errorReason(err)
	s.metrics.failed(reason)
	s.mu.Lock()
	s.errors++
	s.gen.Add(1)
	s.lastErr = err.Error()
	if key != "" && reason == "error" {
		// A refusal of this key (WRONGTYPE, MOVED) may not meet the probe's
		// own key: the probe reads this one too until it passes.
		s.failedKey = key
	}
	if s.state.Load() == stateDown {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	s.state.Store(stateDown)
	s.since, s.downAt = now, now
	s.outages++
	s.fallbacks0 = l.fallbacks.Load()
	s.mu.Unlock()
	s.metrics.setUp(false)
	msg := "rate limit store unreachable: limits follow rate_limit.redis.failure_mode until it answers"
	if reason == "error" {
		msg = "rate limit store refuses decisions: limits follow rate_limit.redis.failure_mode until it accepts them"
	}
	l.opts.logger.Error(msg, "store", "redis", "addresses", strings.Join(s.addresses, ","), "failure_mode", s.failure,
		"reason", reason, "error", err)
	select {
	case s.probe <- struct{}{}:
	default:
	}
}

// answered records that a round trip begun at generation gen succeeded;
// the first answer after an outage logs. A round trip that began before
// the latest failure changes nothing.
func (s *store) answered(l *Limiter, gen uint64) {
	if s.state.Load() == stateUp {
		return
	}
	s.mu.Lock()
	prev := s.state.Load()
	if prev == stateUp || s.gen.Load() != gen {
		s.mu.Unlock()
		return
	}
	s.failedKey = ""
	now := time.Now()
	s.state.Store(stateUp)
	s.since = now
	downFor, fell := now.Sub(s.downAt), l.fallbacks.Load()-s.fallbacks0
	s.mu.Unlock()
	s.metrics.setUp(true)
	if prev == stateDown {
		l.opts.logger.Info("rate limit store reachable again: limits are global again",
			"store", "redis", "addresses", strings.Join(s.addresses, ","), "down_for", downFor.Round(time.Millisecond),
			"calls_decided_by_failure_mode", fell)
	}
}

func errorReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.As(err, &ne), errors.Is(err, redis.ErrClosed):
		return "unreachable"
	default:
		return "error"
	}
}

// probeLimit is the probe's own limit: one nobody shares, that the probe
// never exhausts.
var probeLimit = newRate(policy.RateLimit{Requests: 1000, Period: time.Second, Burst: 1000})

// probe is a decision as the callers' are, within the decision timeout: a
// PING passes where decisions fail (an ACL without the script or the keys,
// a read-only replica, OOM, a key of the wrong type). It spends one call of
// probeLimit on <key_prefix>probe rather than reading at cost 0, because at
// cost 0 the script writes nothing, and Redis 7 refuses a script without
// flags for READONLY or OOM only when it writes. The key expires within a
// second. A key Redis refused is read too, at cost 0.
func (s *store) probeOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.read(ctx, s.prefix+"probe", probeLimit, 1); err != nil {
		return err
	}
	s.mu.Lock()
	key := s.failedKey
	s.mu.Unlock()
	if key == "" {
		return nil
	}
	_, err := s.read(ctx, key, probeLimit, 0)
	return err
}

// run probes Redis: once at start, then, after each failure, with capped
// and jittered backoff until a probe passes.
func (s *store) run(ctx context.Context, l *Limiter) {
	if s.tls != nil {
		_ = s.tls.Start(ctx)
		defer s.tls.Close()
	}
	const first, most = 50 * time.Millisecond, time.Second
	wait := time.Duration(0)
	for {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait/2 + rand.N(wait/2+1)):
			}
		}
		gen := s.gen.Load()
		err := s.probeOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.failed(l, err, "")
			wait = min(max(2*wait, first), most)
			continue
		}
		s.answered(l, gen)
		wait = 0
		select {
		case <-ctx.Done():
			return
		case <-s.probe:
			wait = first
		}
	}
}

func (s *store) close() error { return s.client.Close() }

// storeMetrics are mode redis's metrics.
type storeMetrics struct {
	errors    *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	up        prometheus.Gauge
	fallbacks *prometheus.CounterVec

	// The children every decision touches, bound once.
	latencyOK, latencyErr prometheus.Observer
	fellBack              prometheus.Counter // of the store's failure mode
}

// newStoreMetrics registers the metrics of a store whose failure mode is
// failureMode.
func newStoreMetrics(reg prometheus.Registerer, failureMode string) (*storeMetrics, error) {
	m := &storeMetrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_ratelimit_store_errors_total",
			Help: "Round trips to the rate-limit store (Redis) that failed, by reason: timeout, unreachable, error.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portico_ratelimit_store_decision_seconds",
			Help:    "Time a rate-limit decision took in the store (Redis), one round trip, by result: ok or error.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"result"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_ratelimit_store_up",
			Help: "1 while the rate-limit store (Redis) answers, 0 while limits follow the failure mode.",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_ratelimit_store_fallbacks_total",
			Help: "Calls decided by rate_limit.redis.failure_mode because the store did not answer, by failure mode.",
		}, []string{"failure_mode"}),
	}
	for _, c := range []prometheus.Collector{m.errors, m.latency, m.up, m.fallbacks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.latencyOK, m.latencyErr = m.latency.WithLabelValues("ok"), m.latency.WithLabelValues("error")
	m.fellBack = m.fallbacks.WithLabelValues(failureMode)
	return m, nil
}

func (m *storeMetrics) observe(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.latencyErr.Observe(d.Seconds())
		return
	}
	m.latencyOK.Observe(d.Seconds())
}

func (m *storeMetrics) failed(reason string) {
	if m != nil {
		m.errors.WithLabelValues(reason).Inc()
	}
}

func (m *storeMetrics) setUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}

// fallback counts a call decided by the failure mode.
func (m *storeMetrics) fallback() {
	if m != nil {
		m.fellBack.Inc()
	}
}
