package ratelimit

import (
	"fmt"
	"net/http"
	"time"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the rate-limit policy. The limits themselves are
// declared per method or service in proto and overridden under services
// (rate_limit) and default_rate_limit; these settings say how they are
// enforced.
type Config struct {
	// Mode is "local" (the default: each replica enforces the full
	// limits), "cluster" (each replica enforces 1/n of them, n being the
	// healthy replicas registered in Consul; needs register.enabled),
	// "redis" (the replicas share each caller's bucket in Redis) or "off".
	Mode string `yaml:"mode"`
	// Redis is where mode redis keeps its counts.
	Redis RedisConfig `yaml:"redis"`
	// MaxKeys caps how many callers (per method) are tracked at once.
	// Default 100000.
	MaxKeys int `yaml:"max_keys"`
	// IdleTimeout is how long a caller's bucket is kept once full. Default 1m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// KVPrefix is the Consul KV prefix watched for live limit changes.
	// Default portico/settings/ratelimit; "off" stops the watch.
	KVPrefix string `yaml:"kv_prefix"`
	// Headers says which admitted calls carry the RateLimit-* headers; a
	// refused call always carries them and Retry-After.
	Headers HeadersConfig `yaml:"headers"`
}

// HeadersConfig turns the RateLimit-* headers of admitted calls on or off
// per kind of call; a key left out keeps its default (DefaultHeaders).
type HeadersConfig struct {
	// REST: on every admitted REST call. Default true.
	REST *bool `yaml:"rest"`
	// GRPC: on every admitted native gRPC call. Default false, as Envoy
	// does: true restores the numbers on every call, at the headers' cost.
	GRPC *bool `yaml:"grpc"`
	// Web: on every admitted gRPC-Web and Connect call (browsers read
	// them). Default true.
	Web *bool `yaml:"web"`
}

// headers is the config over the defaults.
func (h HeadersConfig) headers() Headers {
	out := DefaultHeaders()
	set := func(to, from *bool) {
		if from != nil {
			*to = *from
		}
	}
	set(&out.REST, h.REST)
	set(&out.GRPC, h.GRPC)
	set(&out.Web, h.Web)
	return out
}

// FromConfig builds the policy the config describes: on by default, so
// limits declared in proto are enforced without any config; nil when the
// mode is off.
func FromConfig(cfg Config, routes *route.Table, env policy.Env) (*Limiter, error) {
	switch cfg.Mode {
	case "", "local", "cluster", "redis":
	case "off":
		return nil, nil
	default:
		return nil, fmt.Errorf("rate_limit.mode %q: want local, cluster, redis or off", cfg.Mode)
	}
	opts := []Option{
		WithLogger(env.Logger),
		WithMaxKeys(cfg.MaxKeys),
		WithIdleTimeout(cfg.IdleTimeout),
		WithAdmittedHeaders(cfg.Headers.headers()),
		WithKnownMethods(routes.Known),
		WithDeclaredLimits(func(fullMethod string) (string, string, policy.RateLimit, bool) {
			r, ok := routes.Lookup(fullMethod)
			if !ok {
				return "", "", policy.RateLimit{}, false
			}
			return r.Service, r.Method, r.Policy.RateLimit, true
		}),
	}
	switch {
	case cfg.Mode == "cluster" && env.Self.ID == "":
		return nil, fmt.Errorf("rate_limit.mode cluster needs register.enabled: replicas count each other in Consul")
	case cfg.Mode == "cluster", cfg.Mode == "redis" && env.Self.ID != "":
		// Mode redis counts the replicas too, for failure_mode local.
		opts = append(opts, WithCluster(env.Consul, env.Self.Service, env.Self.ID, env.Watch...))
	}
	switch cfg.KVPrefix {
	case "off":
	case "":
		opts = append(opts, WithSettings(env.Consul, DefaultSettingsPrefix, env.Watch...))
	default:
		opts = append(opts, WithSettings(env.Consul, cfg.KVPrefix, env.Watch...))
	}
	if cfg.Mode == "redis" {
		return NewRedis(cfg.Redis, env.Registry, opts...)
	}
	l := New(opts...)
	l.mode = "local"
	if cfg.Mode == "cluster" {
		l.mode = "cluster"
	}
	return l, nil
}

// NewRedis returns a Limiter in mode redis: callers' buckets live in the
// Redis that cfg names, shared by every replica configured alike. Its
// metrics go to reg (none when nil). Like New, it opens no connection and
// starts nothing: Start does.
func NewRedis(cfg RedisConfig, reg prometheus.Registerer, opts ...Option) (*Limiter, error) {
	l := New(opts...)
	s, err := newStore(cfg, l.opts.logger)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if s.metrics, err = newStoreMetrics(reg, s.failure); err != nil {
			return nil, err
		}
	}
	l.mode, l.store = "redis", s
	return l, nil
}

// Mode is how limits are enforced ("local", "cluster" or "redis") and by
// how many replicas, for the admin API.
func (l *Limiter) Mode() (string, int) {
	mode := l.mode
	if mode == "" {
		mode = "local"
	}
	return mode, max(l.Stats().Replicas, 1)
}

// AdminEndpoints serves the limiter's numbers on the admin listener.
func (l *Limiter) AdminEndpoints() []admin.Endpoint {
	return []admin.Endpoint{{Pattern: "GET /ratelimit", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, l.Stats())
	})}}
}

var _ admin.RateLimits = (*Limiter)(nil)
