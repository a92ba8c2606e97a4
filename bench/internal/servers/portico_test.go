package servers

import (
	"io"
	"testing"

	"github.com/portico-gw/portico/gateway/backend"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
)

// The feature options reach the gateway's routes: the benchmark's
// feature paths measure what they say they turn off.
func TestFeatureOptions(t *testing.T) {
	getProduct := catalogv1.CatalogService_GetProduct_FullMethodName
	for _, c := range []struct {
		name     string
		opts     []Option
		attempts int // GetProduct's, an idempotent method
		limit    int // max_concurrent_requests
	}{
		{"default", nil, backend.DefaultRetry.MaxAttempts, backend.DefaultMaxConcurrentRequests},
		{"retries off", []Option{WithoutRetries()}, 1, backend.DefaultMaxConcurrentRequests},
		{"circuit breaker off", []Option{WithoutCircuitBreaker()}, backend.DefaultRetry.MaxAttempts, -1},
		{"all three off", []Option{WithLooseLimits(), WithoutRetries(), WithoutCircuitBreaker()}, 1, -1},
	} {
		gw, err := NewPortico("127.0.0.1:1", true, io.Discard, c.opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		found := false
		for _, r := range gw.Routes() {
			if r.FullMethod != getProduct {
				continue
			}
			found = true
			if r.Retry == nil || r.Retry.MaxAttempts != c.attempts || r.Resilience.MaxConcurrentRequests != c.limit {
				t.Errorf("%s: GetProduct retry %v, max_concurrent_requests %d; want %d attempts, %d",
					c.name, r.Retry, r.Resilience.MaxConcurrentRequests, c.attempts, c.limit)
			}
		}
		if !found {
			t.Fatalf("%s: no route for %s", c.name, getProduct)
		}
	}
}
