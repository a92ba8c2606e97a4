package gateway

import (
	"fmt"
	"net/http"
	"time"

	"github.com/portico-gw/portico/gateway/ratelimit"
)

// RateLimitConfig configures the rate-limit policy. The limits themselves
// are declared per method or service in proto and overridden under
// services (rate_limit) and default_rate_limit; these settings say how they
// are enforced.
type RateLimitConfig struct {
	// Mode is "local" (the default: each replica enforces the full
	// limits), "cluster" (each replica enforces 1/n of them, n being the
	// healthy replicas registered in Consul; needs register.enabled) or
	// "off".
	Mode string `yaml:"mode"`
	// MaxKeys caps how many callers (per method) are tracked at once.
	// Default 100000.
	MaxKeys int `yaml:"max_keys"`
	// IdleTimeout is how long a caller's bucket is kept once full. Default 1m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// KVPrefix is the Consul KV prefix watched for live limit changes.
	// Default portico/settings/ratelimit; "off" stops the watch.
	KVPrefix string `yaml:"kv_prefix"`
}

var (
	_ Policy  = (*ratelimit.Limiter)(nil)
	_ starter = (*ratelimit.Limiter)(nil)
	_ closer  = (*ratelimit.Limiter)(nil)
)

// setupRateLimit builds the rate-limit policy: on by default, so limits
// declared in proto are enforced without any config.
func (g *Gateway) setupRateLimit() error {
	rc := g.cfg.RateLimit
	switch rc.Mode {
	case "", "local", "cluster":
	case "off":
		return nil
	default:
		return fmt.Errorf("%s: rate_limit.mode %q: want local, cluster or off", g.cfg.where(), rc.Mode)
	}
	opts := []ratelimit.Option{
		ratelimit.WithLogger(g.opts.logger),
		ratelimit.WithMaxKeys(rc.MaxKeys),
		ratelimit.WithIdleTimeout(rc.IdleTimeout),
		ratelimit.WithKnownMethods(g.knownMethod),
	}
	if rc.Mode == "cluster" {
		if g.self == nil {
			return fmt.Errorf("%s: rate_limit.mode cluster needs register.enabled: replicas count each other in Consul", g.cfg.where())
		}
		opts = append(opts, ratelimit.WithCluster(g.consul, g.self.cfg.Service, g.self.id, g.opts.resolverOpts...))
	}
	switch rc.KVPrefix {
	case "off":
	case "":
		opts = append(opts, ratelimit.WithSettings(g.consul, ratelimit.DefaultSettingsPrefix, g.opts.resolverOpts...))
	default:
		opts = append(opts, ratelimit.WithSettings(g.consul, rc.KVPrefix, g.opts.resolverOpts...))
	}
	l := ratelimit.New(opts...)
	g.policies.ratelimit = l
	g.adminRoutes = append(g.adminRoutes, adminRoute{"GET /ratelimit", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, l.Stats())
	})})
	return nil
}

// knownMethod reports whether the gateway serves a service (method "") or
// one of its methods; the limiter uses it to reject misspelt KV keys.
func (g *Gateway) knownMethod(service, method string) bool {
	if method != "" {
		_, ok := g.byMethod["/"+service+"/"+method]
		return ok
	}
	for _, r := range g.routes {
		if r.Service == service {
			return true
		}
	}
	return false
}
