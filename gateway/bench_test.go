package gateway_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc/metadata"
)

// BenchmarkChain measures what the policy chain costs per call: the same
// request to a gateway with auth (API key) and validation on, and to one with
// the chain off, alternating call by call so machine noise hits both alike.
// It reports both latencies and their ratio (on/off); only the ratio is
// meaningful on a shared machine.
func BenchmarkChain(b *testing.B) {
	on := newWorld(b, false, func(c *gateway.Config) {
		// The chain's cost, not its verdicts: a limit too high to reject.
		sc := c.Services["catalog.v1.CatalogService"]
		sc.RateLimit = &policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30}
		c.Services["catalog.v1.CatalogService"] = sc
	})
	on.startCatalog()
	// Same benchmark, same Consul names: both reach the same catalog.
	off := newWorldWith(b, false, []gateway.Option{gateway.WithoutPolicies()})

	b.Run("grpc", func(b *testing.B) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", testAPIKey)
		req := &catalogv1.GetProductRequest{Id: "prd-000001"}
		cOn, cOff := catalogv1.NewCatalogServiceClient(on.anon().conn), catalogv1.NewCatalogServiceClient(off.anon().conn)
		alternate(b, func() error { _, err := cOn.GetProduct(ctx, req); return err },
			func() error { _, err := cOff.GetProduct(ctx, req); return err })
	})
	b.Run("rest", func(b *testing.B) {
		get := func(base string) func() error {
			return func() error {
				r, _ := http.NewRequest("GET", base+"/v1/products/prd-000001", nil)
				r.Header.Set("X-Api-Key", testAPIKey)
				resp, err := httpClient.Do(r)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return nil
			}
		}
		alternate(b, get(on.base), get(off.base))
	})
}

// alternate runs a and b in turn b.N times and reports their mean latency
// and the ratio a/b.
func alternate(bm *testing.B, a, b func() error) {
	for range 20 { // warm connections and caches
		if err := a(); err != nil {
			bm.Fatal(err)
		}
		if err := b(); err != nil {
			bm.Fatal(err)
		}
	}
	var ta, tb time.Duration
	bm.ResetTimer()
	for range bm.N {
		t0 := time.Now()
		if err := a(); err != nil {
			bm.Fatal(err)
		}
		t1 := time.Now()
		if err := b(); err != nil {
			bm.Fatal(err)
		}
		ta += t1.Sub(t0)
		tb += time.Since(t1)
	}
	bm.ReportMetric(float64(ta.Nanoseconds())/float64(bm.N), "on-ns/call")
	bm.ReportMetric(float64(tb.Nanoseconds())/float64(bm.N), "off-ns/call")
	bm.ReportMetric(float64(ta)/float64(tb), "on/off")
}
