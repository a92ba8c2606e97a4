package web

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"
	"google.golang.org/grpc/codes"
)

// ReasonCORSRefused: a CORS preflight from an origin, or asking for a
// method or headers, that the cors block does not allow.
const ReasonCORSRefused = "CORS_NOT_ALLOWED"

// corsPolicy applies the cors blocks with rs/cors: the global one, or a
// service's own where it has one. A preflight is answered here, before the
// chain: 204 with the CORS headers, or 403 with none when the origin,
// method or headers are not allowed. Other requests get the headers when
// their origin is allowed and go on.
type corsPolicy struct {
	global    *cors.Cors
	byService map[string]*cors.Cors // services with their own block
	paths     []pathRule            // to find a REST request's service
	preflight *prometheus.CounterVec
}

func newCORS(global *policy.CORS, services map[string]route.ServiceConfig, routes []*route.Route, reg prometheus.Registerer) (*corsPolicy, error) {
	if err := global.Validate(); err != nil {
		return nil, err
	}
	p := &corsPolicy{global: newCORSHandler(global), byService: map[string]*cors.Cors{}}
	for name, sc := range services {
		if sc.CORS == nil {
			continue
		}
		if err := sc.CORS.Validate(); err != nil {
			return nil, fmt.Errorf("services.%s.%w", name, err)
		}
		p.byService[name] = newCORSHandler(sc.CORS)
	}
	if len(p.byService) > 0 {
		p.paths = pathRules(routes)
	}
	p.preflight = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portico_cors_preflight_total",
		Help: "CORS preflight requests answered by the gateway, by result: allowed or refused.",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(p.preflight); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newCORSHandler(c *policy.CORS) *cors.Cors {
	if c == nil {
		return nil
	}
	return cors.New(cors.Options{
		AllowedOrigins: c.AllowedOrigins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
			http.MethodPatch, http.MethodDelete},
		AllowedHeaders:   c.AllowedHeaders,
		ExposedHeaders:   c.ExposedHeaders,
		AllowCredentials: c.AllowCredentials,
		MaxAge:           int(c.MaxAge.Seconds()),
		// The answer to a preflight is the gateway's: allowed or 403.
		OptionsPassthrough: true,
	})
}

// forRequest is the CORS handler of the service r calls; nil: CORS is off
// for it.
func (p *corsPolicy) forRequest(r *http.Request) *cors.Cors {
	if len(p.byService) == 0 {
		return p.global
	}
	method := r.Method
	if isPreflight(r) {
		method = r.Header.Get("Access-Control-Request-Method")
	}
	if c, ok := p.byService[serviceOf(p.paths, method, r.URL.Path)]; ok {
		return c
	}
	return p.global
}

func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

func (p *corsPolicy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := p.forRequest(r)
		if c == nil || isPreflight(r) && r.Header.Get("Origin") == "" {
			// CORS off, or an OPTIONS request no browser sent.
			next.ServeHTTP(w, r)
			return
		}
		if !isPreflight(r) {
			// rs/cors adds Vary: Origin to every answer, so that a cache
			// does not give one origin's answer to another.
			c.ServeHTTP(w, r, next.ServeHTTP)
			return
		}
		c.ServeHTTP(w, r, func(w http.ResponseWriter, r *http.Request) {
			if w.Header().Get("Access-Control-Allow-Origin") != "" {
				p.preflight.WithLabelValues("allowed").Inc()
				w.WriteHeader(http.StatusNoContent)
				return
			}
			p.preflight.WithLabelValues("refused").Inc()
			rest.WriteError(w, http.StatusForbidden, policy.Error(codes.PermissionDenied, ReasonCORSRefused,
				fmt.Sprintf("CORS preflight refused: origin %q may not call %s %s with these headers",
					r.Header.Get("Origin"), r.Header.Get("Access-Control-Request-Method"), r.URL.Path), nil))
		})
	})
}

// pathRule is one REST binding, to find which service a path belongs to.
type pathRule struct {
	verb     string
	segments []string
	service  string
}

func pathRules(routes []*route.Route) []pathRule {
	var out []pathRule
	for _, rt := range routes {
		for _, h := range rt.HTTP {
			verb, tmpl, _ := strings.Cut(h, " ")
			out = append(out, pathRule{verb: verb, segments: strings.Split(strings.TrimPrefix(tmpl, "/"), "/"), service: rt.Service})
		}
	}
	return out
}

// serviceOf is the service a request goes to: the first segment of a
// gRPC-Web or Connect path (/pkg.Service/Method), or the service of the
// REST binding its path matches; "" for none. It reads the path's
// segments in place: this runs on every request when a service has a cors
// block of its own.
func serviceOf(rules []pathRule, method, path string) string {
	p := strings.TrimPrefix(path, "/")
	if svc, m, ok := strings.Cut(p, "/"); ok && !strings.Contains(m, "/") && strings.Contains(svc, ".") {
		return svc
	}
	for _, r := range rules {
		if r.verb == method && matchTemplate(r.segments, p) {
			return r.service
		}
	}
	return ""
}

// matchTemplate matches a path (without its leading slash) against a
// google.api.http template's segments: a variable ({id}, {name=*}) takes
// one segment, {name=**} the rest, and a custom verb (":watch") must end
// the last segment.
func matchTemplate(tmpl []string, path string) bool {
	rest, done := path, false
	for i, t := range tmpl {
		if strings.Contains(t, "**") {
			return true
		}
		if done {
			return false
		}
		s, r, more := strings.Cut(rest, "/")
		rest, done = r, !more
		if strings.HasPrefix(t, "{") {
			if end := strings.LastIndex(t, "}"); end >= 0 && end < len(t)-1 {
				verb := t[end+1:]
				if !strings.HasSuffix(s, verb) || len(s) == len(verb) {
					return false
				}
			} else if s == "" || strings.Contains(s, ":") && i == len(tmpl)-1 {
				return false
			}
			continue
		}
		if t != s {
			return false
		}
	}
	return done
}
