package backend

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// View serves the effective resilience settings of every backend
// connection, what each has in flight and the instances outlier detection
// has out, as JSON: GET /admin/v1/resilience, which the admin page reads.
type View struct {
	conns  map[string]*Conn // by backend name
	routes []RouteRetry
}

// RouteRetry is one route's retry policy as the view shows it.
type RouteRetry struct {
	Method string `json:"method"`
	Retry  string `json:"retry"`
}

// NewView shows conns (by backend name) and the routes' retries.
func NewView(conns map[string]*Conn, routes []RouteRetry) *View {
	return &View{conns: conns, routes: routes}
}

type viewBackend struct {
	Name                  string         `json:"name"`
	LoadBalancing         string         `json:"loadBalancing"`
	HashHeader            string         `json:"hashHeader,omitempty"`
	HealthCheck           bool           `json:"healthCheck"`
	MaxConcurrentRequests int            `json:"maxConcurrentRequests"`
	InFlight              int64          `json:"inFlight"`
	OutlierDetection      viewOutlier    `json:"outlierDetection"`
	RetryThrottling       Throttling     `json:"retryThrottling"`
	Ejected               []viewEjection `json:"ejected"`
}

type viewOutlier struct {
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	Interval            string `json:"interval"`
	BaseEjectionTime    string `json:"baseEjectionTime"`
	MaxEjectionTime     string `json:"maxEjectionTime"`
	MaxEjectionPercent  int    `json:"maxEjectionPercent"`
}

type viewEjection struct {
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason"`
	Times   int       `json:"times"`
}

// ServeHTTP writes the view.
func (v *View) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	out := struct {
		Backends []viewBackend `json:"backends"`
		Routes   []RouteRetry  `json:"routes"`
	}{Backends: []viewBackend{}, Routes: v.routes}
	for name, c := range v.conns {
		cfg, o := c.cfg, c.cfg.OutlierDetection
		b := viewBackend{
			Name: name, LoadBalancing: cfg.LoadBalancing, HashHeader: cfg.HashHeader, HealthCheck: *cfg.HealthCheck,
			MaxConcurrentRequests: cfg.MaxConcurrentRequests, InFlight: c.InFlight(), RetryThrottling: *cfg.RetryThrottling,
			OutlierDetection: viewOutlier{ConsecutiveFailures: o.ConsecutiveFailures, Interval: o.Interval.String(),
				BaseEjectionTime: o.BaseEjectionTime.String(), MaxEjectionTime: o.MaxEjectionTime.String(), MaxEjectionPercent: o.MaxEjectionPercent},
			Ejected: []viewEjection{},
		}
		for _, e := range c.Ejections() {
			b.Ejected = append(b.Ejected, viewEjection{ID: e.ID, Address: e.Addr, Since: e.Since, Until: e.Until, Reason: e.Reason, Times: e.Times})
		}
		out.Backends = append(out.Backends, b)
	}
	slices.SortFunc(out.Backends, func(a, b viewBackend) int { return strings.Compare(a.Name, b.Name) })
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}
