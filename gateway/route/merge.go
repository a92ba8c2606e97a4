package route

import (
	"fmt"

	"github.com/portico-gw/portico/gateway/policy"
	optionsv1 "github.com/portico-gw/portico/gen/portico/options/v1"
)

// effectivePolicy merges, from weakest to strongest: the gateway defaults,
// the service's proto options, the service's config, the method's proto
// options, the method's config. A method declared public may not require
// scopes: that contradiction stops the gateway at start.
func effectivePolicy(cfg Config, so *optionsv1.ServiceOptions, sc ServiceConfig, mo *optionsv1.MethodOptions, mc MethodConfig) (*policy.Policy, error) {
	p := &policy.Policy{Access: policy.Authenticated, RateLimit: cfg.DefaultRateLimit}
	if cfg.DefaultAccess != "" {
		a, err := policy.ParseAccess(cfg.DefaultAccess)
		if err != nil {
			return nil, fmt.Errorf("default_access: %w", err)
		}
		p.Access = a
	}
	var scopes []string
	var scopesAtMethod bool
	apply := func(access optionsv1.Access, sco []string, rl *optionsv1.RateLimit, method bool) {
		switch access {
		case optionsv1.Access_ACCESS_PUBLIC:
			p.Access = policy.Public
		case optionsv1.Access_ACCESS_AUTHENTICATED:
			p.Access = policy.Authenticated
		}
		if len(sco) > 0 {
			scopes, scopesAtMethod = sco, method
		}
		if rl.GetRequests() > 0 {
			p.RateLimit = policy.RateLimit{Requests: rl.GetRequests(), Period: rl.GetPeriod().AsDuration(), Burst: rl.GetBurst()}
		}
	}
	override := func(pc PolicyConfig, method bool) error {
		if pc.Access != "" {
			a, err := policy.ParseAccess(pc.Access)
			if err != nil {
				return err
			}
			p.Access = a
		}
		if pc.Scopes != nil {
			scopes, scopesAtMethod = pc.Scopes, method
		}
		if pc.RateLimit != nil {
			p.RateLimit = *pc.RateLimit
		}
		return nil
	}
	apply(so.GetAccess(), so.GetScopes(), so.GetRateLimit(), false)
	if err := override(sc.PolicyConfig, false); err != nil {
		return nil, err
	}
	apply(mo.GetAccess(), mo.GetScopes(), mo.GetRateLimit(), true)
	if err := override(mc.PolicyConfig, true); err != nil {
		return nil, err
	}
	if p.Access == policy.Public && len(scopes) > 0 {
		if scopesAtMethod {
			return nil, fmt.Errorf("public but requires scopes %v: a public method cannot require scopes", scopes)
		}
		scopes = nil // service-wide scopes bind only its authenticated methods
	}
	p.Scopes = scopes
	if rl := p.RateLimit; rl.Requests > 0 {
		if rl.Period <= 0 {
			return nil, fmt.Errorf("rate limit %d per %v: the period must be positive", rl.Requests, rl.Period)
		}
		if p.RateLimit.Burst == 0 {
			p.RateLimit.Burst = rl.Requests
		}
	}
	return p, nil
}
