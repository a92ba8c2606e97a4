package route_test

import (
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/route"
)

func TestRetriesOnlyForIdempotentMethods(t *testing.T) {
	tbl := build(t, route.Config{})
	for method, retried := range map[string]bool{
		"/catalog.v1.CatalogService/GetProduct":    true,  // idempotency_level = NO_SIDE_EFFECTS
		"/catalog.v1.CatalogService/ListProducts":  true,  // NO_SIDE_EFFECTS
		"/catalog.v1.CatalogService/DeleteProduct": true,  // IDEMPOTENT
		"/orders.v1.OrderService/WatchOrder":       true,  // a stream, NO_SIDE_EFFECTS
		"/catalog.v1.CatalogService/CreateProduct": false, // not declared
		"/catalog.v1.CatalogService/UpdateProduct": false,
		"/orders.v1.OrderService/CreateOrder":      false,
	} {
		r := lookup(t, tbl, method)
		if got := r.Retry != nil; got != retried {
			t.Errorf("%s: retried = %v, want %v", method, got, retried)
		}
		if retried && (r.Retry.MaxAttempts != 3 || r.Retry.InitialBackoff != 50*time.Millisecond) {
			t.Errorf("%s: retry = %+v, want the defaults", method, *r.Retry)
		}
	}
	r := lookup(t, tbl, "/catalog.v1.CatalogService/GetProduct")
	if c := r.Resilience; c.LoadBalancing != backend.RoundRobin || c.OutlierDetection.ConsecutiveFailures != 5 ||
		c.MaxConcurrentRequests != backend.DefaultMaxConcurrentRequests {
		t.Errorf("defaults = %+v", c)
	}
}

func TestRetryOverridesPerServiceAndMethod(t *testing.T) {
	tbl := build(t, route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {
		Config: backend.Config{
			Retry:                 &backend.Retry{MaxAttempts: 4, Codes: []string{"unavailable"}},
			MaxConcurrentRequests: 10, LoadBalancing: backend.RingHash, HashHeader: "X-User-Id",
		},
		Methods: map[string]route.MethodConfig{"DeleteProduct": {Retry: &backend.Retry{MaxAttempts: 1}}},
	}}})
	get := lookup(t, tbl, "/catalog.v1.CatalogService/GetProduct")
	if get.Retry.MaxAttempts != 4 || get.Retry.Codes[0] != "unavailable" || get.Retry.MaxBackoff != 500*time.Millisecond {
		t.Errorf("GetProduct retry = %+v", *get.Retry)
	}
	if get.Resilience.HashHeader != "x-user-id" || get.Resilience.MaxConcurrentRequests != 10 {
		t.Errorf("resilience = %+v", get.Resilience)
	}
	if del := lookup(t, tbl, "/catalog.v1.CatalogService/DeleteProduct"); del.Retry.MaxAttempts != 1 || del.Retry.Codes[0] != "unavailable" {
		t.Errorf("DeleteProduct retry = %+v, want 1 attempt, the rest from the service", *del.Retry)
	}
	var b strings.Builder
	if err := route.Print(&b, tbl.All()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RETRIES", "4 attempts on unavailable", "transparent only", "ring_hash on x-user-id", "after 5 failures"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("route table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestResilienceConfigErrors(t *testing.T) {
	svc := func(c backend.Config, m map[string]route.MethodConfig) route.Config {
		return route.Config{Source: "/etc/portico.yaml", Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {Config: c, Methods: m}}}
	}
	for name, tc := range map[string]struct {
		cfg  route.Config
		want string
	}{
		"retry on a method that is not idempotent": {svc(backend.Config{}, map[string]route.MethodConfig{"CreateProduct": {Retry: &backend.Retry{MaxAttempts: 2}}}), "not idempotent"},
		"too many attempts":                        {svc(backend.Config{Retry: &backend.Retry{MaxAttempts: 9}}, nil), "max_attempts"},
		"unknown code":                             {svc(backend.Config{Retry: &backend.Retry{Codes: []string{"SOMETIMES"}}}, nil), "SOMETIMES"},
		"ring_hash without hash":                   {svc(backend.Config{LoadBalancing: backend.RingHash}, nil), "hash_header"},
		"unknown balancing":                        {svc(backend.Config{LoadBalancing: "random"}, nil), "random"},
		"hash on round_robin":                      {svc(backend.Config{HashHeader: "x-user-id"}, nil), "only ring_hash"},
		"ejection percent":                         {svc(backend.Config{OutlierDetection: &backend.Outlier{MaxEjectionPercent: 150}}, nil), "max_ejection_percent"},
		"negative limit":                           {svc(backend.Config{MaxConcurrentRequests: -5}, nil), "max_concurrent_requests"},
	} {
		_, err := route.Build(services(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/portico.yaml") {
			t.Errorf("%s: err = %v, want it to name %q and the file", name, err, tc.want)
		}
	}
}
