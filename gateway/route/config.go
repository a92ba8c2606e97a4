package route

import (
	"time"

	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// Config is what the route table takes from the gateway's config file.
type Config struct {
	// DefaultTimeout is the deadline of a unary call whose service and
	// method declare none.
	DefaultTimeout time.Duration
	// DefaultAccess applies to methods whose proto declares no access.
	DefaultAccess string
	// DefaultRateLimit applies to methods that declare no rate limit.
	DefaultRateLimit policy.RateLimit
	// Services overrides the proto options of a service, by full name.
	Services map[string]ServiceConfig
	// Source names the config file, for error messages.
	Source string
}

func (c Config) where() string {
	if c.Source == "" {
		return "config"
	}
	return c.Source
}

// ServiceConfig overrides what a service's proto options declare.
type ServiceConfig struct {
	// Backend is the Consul service name.
	Backend string `yaml:"backend"`
	// Tag keeps only instances that carry this Consul tag.
	Tag string `yaml:"tag"`
	// Datacenter queries another Consul datacenter.
	Datacenter string `yaml:"datacenter"`
	// Timeout is the default deadline of unary calls.
	Timeout time.Duration `yaml:"timeout"`
	// StreamTimeout is the default deadline of streaming calls; 0 means none
	// (a stream lives until the client or the backend ends it).
	StreamTimeout time.Duration `yaml:"stream_timeout"`
	// MaxTimeout is the longest deadline a caller may ask for on a unary
	// call; default the timeout.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// StreamMaxTimeout is the longest deadline a caller may ask for on a
	// stream; 0 means no maximum.
	StreamMaxTimeout time.Duration `yaml:"stream_max_timeout"`
	// MaxBodyBytes is the largest REST body of the service's methods.
	// Default 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// TLS is the TLS of connections to the service's backend; it replaces
	// backend_tls.
	TLS *tlsconfig.BackendConfig `yaml:"tls"`
	// CORS replaces the global cors block for the service (package web).
	CORS *policy.CORS `yaml:"cors"`

	// Access, Scopes and RateLimit override the service's proto options.
	PolicyConfig `yaml:",inline"`
	// Retries, outlier detection, the circuit breaker and load balancing
	// (retry, retry_throttling, outlier_detection, max_concurrent_requests,
	// load_balancing, hash_header, health_check).
	backend.Config `yaml:",inline"`
	// Methods overrides single methods, keyed by method name (GetProduct).
	Methods map[string]MethodConfig `yaml:"methods"`
}

// PolicyConfig overrides declared policy; unset fields keep the proto's.
type PolicyConfig struct {
	// Access is "public" or "authenticated".
	Access string `yaml:"access"`
	// Scopes replaces the declared scopes when present (even if empty).
	Scopes []string `yaml:"scopes"`
	// RateLimit replaces the declared rate limit.
	RateLimit *policy.RateLimit `yaml:"rate_limit"`
}

// MethodConfig overrides what one method declares.
type MethodConfig struct {
	PolicyConfig `yaml:",inline"`
	// Timeout is the default deadline of the method.
	Timeout time.Duration `yaml:"timeout"`
	// MaxTimeout is the longest deadline a caller may ask for.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// MaxBodyBytes is the largest REST body the method takes.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Retry tunes the method's retries; unset fields take the service's.
	// Only an idempotent method may be retried.
	Retry *backend.Retry `yaml:"retry"`
}
