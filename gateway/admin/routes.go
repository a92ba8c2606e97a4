package admin

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RateLimits is what the API asks the rate limiter on each request: how
// limits are enforced, and the Consul KV limit in force for a method.
// *ratelimit.Limiter has it.
type RateLimits interface {
	Mode() (mode string, replicas int)
	Override(service, method string) (policy.RateLimit, bool)
}

// WithRateLimits reports the mode and the live overrides of rl, and, when
// rl has them, its store (RateLimitStore) and consumers' quotas
// (RateLimitQuotas).
func WithRateLimits(rl RateLimits) Option {
	return func(s *Server) {
		s.rateLimitStore, _ = rl.(RateLimitStore)
		s.quotas, _ = rl.(RateLimitQuotas)
		s.rateLimitMode = func() (string, uint32) {
			mode, n := rl.Mode()
			return mode, uint32(n)
		}
		s.rateLimitOverride = func(service, method string) (*adminv1.RateLimit, bool) {
			o, ok := rl.Override(service, method)
			if !ok {
				return nil, false
			}
			return RateLimit(o), true
		}
	}
}

// CredentialKinds is what the API asks the auth policy once: the kinds of
// credentials the gateway accepts. *auth.Policy has it.
type CredentialKinds interface {
	CredentialKinds() []string
}

var _ CredentialKinds = (*auth.Policy)(nil)

// WithCredentialKinds reports, for each authenticated route, the kinds of
// credentials that authenticate its calls (a public route needs none).
func WithCredentialKinds(kinds []string) Option {
	return func(s *Server) { s.credentials = kinds }
}

// withCredentials returns the routes with their credentials filled in from
// kinds, copies where they change.
func withCredentials(routes []*adminv1.Route, kinds []string) []*adminv1.Route {
	out := make([]*adminv1.Route, len(routes))
	for i, r := range routes {
		if r.GetPolicy().GetAccess() != policy.Public.String() && len(kinds) > 0 {
			r = proto.CloneOf(r)
			r.Credentials = slices.Clone(kinds)
		}
		out[i] = r
	}
	return out
}

// Routes describes the route table for the API.
func Routes(routes []*route.Route) []*adminv1.Route {
	out := make([]*adminv1.Route, len(routes))
	for i, r := range routes {
		ar := &adminv1.Route{
			Method: r.FullMethod, Service: r.Service, Http: r.HTTP, Backend: r.Backend,
			Tag: r.Tag, Datacenter: r.Datacenter, Kind: r.Kind(),
			Policy: &adminv1.Policy{Access: r.Policy.Access.String(), Scopes: r.Policy.Scopes, RateLimit: RateLimit(r.Policy.RateLimit)},
		}
		if r.Timeout > 0 {
			ar.Timeout = durationpb.New(r.Timeout)
		}
		for _, s := range r.Steps {
			ar.Steps = append(ar.Steps, &adminv1.Step{Name: s.Name, Method: s.Method, ForEach: s.ForEach, Optional: s.Optional})
		}
		out[i] = ar
	}
	return out
}

// RateLimit is a limit as the API shows it; nil for none.
func RateLimit(rl policy.RateLimit) *adminv1.RateLimit {
	if !rl.Enabled() {
		return nil
	}
	return &adminv1.RateLimit{Requests: rl.Requests, Period: durationpb.New(rl.Period), Burst: rl.Burst}
}

// WriteJSON answers with v as JSON: the admin listener's plain endpoints.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
