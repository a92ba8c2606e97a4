package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/stats"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"google.golang.org/grpc/codes"
)

// fakeLive is a Live source with fixed numbers.
type fakeLive struct {
	traffic  stats.Traffic
	backends []stats.Backend
	consul   stats.ConsulStatus
}

func (f fakeLive) Traffic() stats.Traffic     { return f.traffic }
func (f fakeLive) Backends() []stats.Backend  { return f.backends }
func (f fakeLive) Consul() stats.ConsulStatus { return f.consul }

var testRoutes = []*adminv1.Route{
	{Method: "/catalog.v1.CatalogService/GetProduct", Service: "catalog.v1.CatalogService", Backend: "catalog",
		Policy: &adminv1.Policy{Access: "public", RateLimit: &adminv1.RateLimit{Requests: 5, Burst: 5}}},
	{Method: "/catalog.v1.CatalogService/ListProducts", Service: "catalog.v1.CatalogService", Backend: "catalog",
		Policy: &adminv1.Policy{Access: "public"}},
}

func serve(t *testing.T, live admin.Live, opts ...admin.Option) string {
	t.Helper()
	srv, err := admin.New(testRoutes, live, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, e := range srv.AdminEndpoints() {
		mux.Handle(e.Pattern, e.Handler)
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s: %v\n%s", url, err, body)
	}
}

func TestRESTViews(t *testing.T) {
	ok := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	url := serve(t, fakeLive{
		traffic: stats.Traffic{Window: 10 * time.Second, ErrorWindow: time.Minute, Routes: []stats.RouteTraffic{{
			FullMethod: "/catalog.v1.CatalogService/GetProduct", Requests: 40, Errors: 4, RequestsPerSecond: 2.5, ErrorRatio: 0.1,
			P50: 1500 * time.Microsecond, P99: 20 * time.Millisecond, RecentErrors: []stats.CodeCount{{Code: codes.Unavailable, Count: 3}},
		}}},
		backends: []stats.Backend{{Name: "catalog", Resolved: true, LastWatchOK: ok,
			Instances: []stats.Instance{{ID: "catalog-1", Addr: "10.0.0.1:7000", Calls: 9, Errors: 1}}}},
		consul: stats.ConsulStatus{Since: ok, Unreachable: 90 * time.Second, Outages: 2, LastError: "connection refused"},
	}, admin.WithRateLimitMode(func() (string, uint32) { return "cluster", 3 }))

	var traffic struct {
		Window string
		Routes []struct {
			Requests     string
			P50Seconds   float64
			RecentErrors []struct{ Code, Count string }
		}
	}
	getJSON(t, url+"/admin/v1/traffic", &traffic)
	r := traffic.Routes[0]
	if traffic.Window != "10s" || r.Requests != "40" || r.P50Seconds != 0.0015 || r.RecentErrors[0].Code != "Unavailable" {
		t.Errorf("traffic = %+v", traffic)
	}

	var backends struct {
		Backends []struct {
			Name, LastWatchOk string
			Services          []string
			Instances         []struct{ ID, Address, Calls string }
		}
		Consul struct {
			Reachable                              bool
			Since, Unreachable, Outages, LastError string
		}
	}
	getJSON(t, url+"/admin/v1/backends", &backends)
	b := backends.Backends[0]
	if b.Name != "catalog" || b.LastWatchOk != "2026-01-02T03:04:05Z" || len(b.Services) != 1 || b.Instances[0].Calls != "9" {
		t.Errorf("backends = %+v", backends)
	}
	if c := backends.Consul; c.Reachable || c.Since != "2026-01-02T03:04:05Z" || c.Unreachable != "90s" || c.Outages != "2" || c.LastError != "connection refused" {
		t.Errorf("consul = %+v", c)
	}

	var limits struct {
		Mode     string
		Replicas int
		Methods  []struct{ Method string }
	}
	getJSON(t, url+"/admin/v1/rate-limits", &limits)
	if limits.Mode != "cluster" || limits.Replicas != 3 || len(limits.Methods) != 1 || limits.Methods[0].Method != testRoutes[0].Method {
		t.Errorf("rate limits = %+v; only GetProduct declares one", limits)
	}
}

func TestPageIsSelfContained(t *testing.T) {
	url := serve(t, fakeLive{})
	for _, path := range []string{"/", "/ui/app.js", "/ui/style.css"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		// Works offline: nothing is loaded from another origin.
		for _, external := range []string{"http://", "https://", "//cdn"} {
			if strings.Contains(string(body), external) {
				t.Errorf("%s refers to %s", path, external)
			}
		}
	}
	if resp, _ := http.Get(url + "/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nope = %d: the page must not answer every path", resp.StatusCode)
	}
}

// The gRPC side needs HTTP/2; over HTTP/1.1 it refuses rather than hangs.
func TestGRPCNeedsHTTP2(t *testing.T) {
	url := serve(t, fakeLive{})
	req, _ := http.NewRequestWithContext(context.Background(), "POST", url+"/portico.admin.v1.AdminService/ListRoutes", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Errorf("gRPC over HTTP/1.1 answered 200")
	}
}
