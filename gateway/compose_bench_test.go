package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	"google.golang.org/grpc"
)

// BenchmarkFanOut is the fan-out workload of make bench: GetOrderDetails
// for an order of 10 items, each product taking the catalog 20 ms
// (-delay), against a client that makes the same 11 calls itself over
// REST, one after the other and with the 10 product calls in parallel. The
// three run in turn, iteration by iteration, so noise hits them alike. It
// reports each one's mean latency, how many times faster the composite is
// than each, and each one's success rate. Target: at least 3x the
// sequential client and no slower than the parallel one.
func BenchmarkFanOut(b *testing.B) {
	const items, delay = 10, 20 * time.Millisecond
	w := newWorld(b, false, func(c *gateway.Config) {
		// The fan-out's latency, not the limits' verdicts.
		c.DefaultRateLimit = policy.RateLimit{}
		for _, name := range []string{"catalog.v1.CatalogService", "orders.v1.OrderService", "storefront.v1.StorefrontService"} {
			sc := c.Services[name]
			sc.RateLimit = &policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30}
			c.Services[name] = sc
		}
	})
	srv := catalog.NewServer()
	w.startHostWith(host.Config{Name: w.catalog, Faults: host.Faults{Delay: delay},
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, srv) }})
	w.startOrders()
	// An order takes each product once: the six seeded products and four more.
	var products []string
	for i := range items {
		if i >= 6 {
			p, err := srv.CreateProduct(context.Background(), &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
				Sku: fmt.Sprintf("BENCH-%d", i), Name: "bench", Price: 100, Currency: "EUR", Stock: 1000, Category: "bench"}})
			if err != nil {
				b.Fatal(err)
			}
			products = append(products, p.GetProduct().GetId())
			continue
		}
		products = append(products, fmt.Sprintf("prd-%06d", i+1))
	}
	id := w.placeOrder(products...)

	get := func(path string) bool {
		r, _ := http.NewRequest("GET", w.base+path, nil)
		r.Header.Set("X-Api-Key", testAPIKey)
		resp, err := httpClient.Do(r)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && resp.Header.Get(partialHeader) == ""
	}
	composite := func() bool { return get("/v1/orders/" + id + "/details") }
	sequential := func() bool {
		ok := get("/v1/orders/" + id)
		for _, p := range products {
			ok = get("/v1/products/"+p) && ok
		}
		return ok
	}
	parallel := func() bool {
		ok := get("/v1/orders/" + id)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range products {
			wg.Go(func() {
				if !get("/v1/products/" + p) {
					mu.Lock()
					ok = false
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return ok
	}
	paths := []struct {
		name string
		call func() bool
	}{{"composite", composite}, {"sequential", sequential}, {"parallel", parallel}}
	for range 3 { // warm connections
		for _, p := range paths {
			p.call()
		}
	}
	var took [3]time.Duration
	var okCalls [3]int
	b.ResetTimer()
	for range b.N {
		for i, p := range paths {
			t0 := time.Now()
			if p.call() {
				okCalls[i]++
			}
			took[i] += time.Since(t0)
		}
	}
	for i, p := range paths {
		b.ReportMetric(float64(took[i].Microseconds())/1000/float64(b.N), p.name+"-ms")
		b.ReportMetric(float64(okCalls[i])/float64(b.N), p.name+"-ok")
	}
	b.ReportMetric(float64(took[1])/float64(took[0]), "x-vs-sequential")
	b.ReportMetric(float64(took[2])/float64(took[0]), "x-vs-parallel")
}
