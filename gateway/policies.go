package gateway

import (
	"fmt"

	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/portico-gw/portico/gateway/validate"
)

// policies builds the policies of the chain from their configs, in the
// chain's order:
//
//	stats -> auth -> rate limit -> validation
//
// Stats comes first so it also counts what later policies reject; auth
// precedes rate limiting (limits are per consumer) and validation (an
// anonymous caller learns nothing about a protected request's shape). A
// policy that is off is left out. Adding a policy is a line here and its
// Config in Config; the chain and the rest of the gateway find what else
// it offers (admin endpoints, readiness, background work) by interface.
func policies(cfg Config, routes *route.Table, env policy.Env, o options) ([]chain.Policy, error) {
	if o.noPolicies {
		return nil, nil
	}
	var out []chain.Policy
	add := func(p chain.Policy, on bool, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.where(), err)
		}
		if on {
			out = append(out, p)
		}
		return nil
	}
	st, err := stats.FromConfig(cfg.Stats, routes.All(), env, o.statsOpts...)
	if err := add(st, st != nil, err); err != nil {
		return nil, err
	}
	// Auth is always on: a method that is not public needs credentials even
	// when none are configured (every such call is then refused, which is
	// the safe reading of an empty config).
	au, err := auth.New(cfg.Auth, auth.WithConsul(env.Consul), auth.WithLogger(env.Logger), auth.WithWatchOptions(env.Watch...))
	if err := add(au, au != nil, err); err != nil {
		return nil, err
	}
	rl, err := ratelimit.FromConfig(cfg.RateLimit, routes, env)
	if err := add(rl, rl != nil, err); err != nil {
		return nil, err
	}
	va, err := validate.FromConfig(cfg.Validation, routes.All())
	if err := add(va, va != nil, err); err != nil {
		return nil, err
	}
	return out, nil
}
