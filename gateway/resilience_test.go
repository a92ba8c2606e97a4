package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The resilience tests run three catalog instances, one of them faulty,
// behind a gateway, and measure from clients of both doors.

// startFaultyCatalog starts a catalog instance with faults.
func (w *world) startFaultyCatalog(f host.Faults) *host.Host {
	w.t.Helper()
	srv := catalog.NewServer()
	return w.startHostWith(host.Config{Name: w.catalog, Faults: f,
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, srv) }})
}

// withCatalog sets the catalog service's resilience config and a rate
// limit that these tests' loads never reach.
func withCatalog(c backend.Config, timeout time.Duration) worldOpt {
	return func(cfg *gateway.Config) {
		sc := cfg.Services["catalog.v1.CatalogService"]
		sc.Config, sc.Timeout = c, timeout
		sc.RateLimit = &policy.RateLimit{Requests: 1_000_000, Period: time.Second, Burst: 1_000_000}
		cfg.Services["catalog.v1.CatalogService"] = sc
	}
}

// resilienceView is GET /admin/v1/resilience.
type resilienceView struct {
	Backends []struct {
		Name     string
		InFlight int64
		Ejected  []struct{ ID, Reason string }
	}
	Routes []struct{ Method, Retry string }
}

func (w *world) resilience() resilienceView {
	w.t.Helper()
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/resilience")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v resilienceView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		w.t.Fatal(err)
	}
	return v
}

// ejected lists the catalog's ejected instance IDs.
func (w *world) ejected() []string {
	w.t.Helper()
	ids, err := w.ejectedNow()
	if err != nil {
		w.t.Fatal(err)
	}
	return ids
}

// ejectedNow is ejected for a goroutine other than the test's: it returns
// its error.
func (w *world) ejectedNow() ([]string, error) {
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/resilience")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v resilienceView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	var ids []string
	for _, b := range v.Backends {
		if b.Name == w.catalog {
			for _, e := range b.Ejected {
				ids = append(ids, e.ID)
			}
		}
	}
	return ids, nil
}

// getProducts makes n GetProduct calls over door ("grpc" or "rest") from
// workers goroutines and returns how many succeeded and each call's
// latency.
func (w *world) getProducts(door string, n, workers int) (ok int, latencies []time.Duration) {
	w.t.Helper()
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
		errs = map[string]int{}
	)
	c := w.catalogClient()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				start := time.Now()
				var err error
				if door == "grpc" {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err = c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
					cancel()
				} else {
					err = restGet(w.base + "/v1/products/prd-000001")
				}
				d := time.Since(start)
				mu.Lock()
				latencies = append(latencies, d)
				if err == nil {
					ok++
				} else {
					errs[err.Error()]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		w.t.Logf("%s: failures: %v", door, errs)
	}
	return ok, latencies
}

func restGet(url string) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, body)
	}
	return nil
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100]
}

func TestFailingInstanceIsRetriedAroundThenEjectedAndReturns(t *testing.T) {
	od := &backend.Outlier{ConsecutiveFailures: 5, Interval: 100 * time.Millisecond, BaseEjectionTime: 3 * time.Second}
	var logs testutil.LockedBuffer
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(stats.WithAccessLog(slog.New(slog.NewJSONHandler(&logs, nil))))},
		withCatalog(backend.Config{OutlierDetection: od}, 0))
	w.startCatalog()
	w.startCatalog()
	bad := w.startFaultyCatalog(host.Faults{FailRate: 1})

	start := time.Now()
	var ejectedAfter time.Duration
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // notes when the faulty instance leaves rotation
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if ids, err := w.ejectedNow(); err == nil && slices.Contains(ids, bad.ID()) {
				ejectedAfter = time.Since(start)
				return
			}
		}
	}()
	for _, door := range []string{"grpc", "rest"} {
		ok, _ := w.getProducts(door, 1000, 4)
		t.Logf("%s: %d of 1000 GetProduct calls succeeded with one of three instances at -fail-rate 1.0", door, ok)
		if ok < 999 {
			t.Errorf("%s: %d of 1000 succeeded, want at least 999", door, ok)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the failing instance to be ejected", func() bool { return slices.Contains(w.ejected(), bad.ID()) })
	close(stop)
	<-watched
	t.Logf("ejected %v after the first call", ejectedAfter)
	if ejectedAfter == 0 || ejectedAfter > 2*time.Second {
		t.Errorf("ejected after %v, want within 2s", ejectedAfter)
	}
	v := w.resilience()
	for _, b := range v.Backends {
		if b.Name == w.catalog && (len(b.Ejected) != 1 || !strings.Contains(b.Ejected[0].Reason, "5 consecutive failures")) {
			t.Errorf("ejections = %+v, want the faulty one with its reason", b.Ejected)
		}
	}

	// Retried calls are logged once each, with their attempts, and counted.
	retried := strings.Count(logs.String(), `"attempts":2`)
	if retried == 0 {
		t.Error("no access log line has attempts 2")
	}
	calls := strings.Count(logs.String(), `"method":"/catalog.v1.CatalogService/GetProduct"`)
	if calls != 2000 {
		t.Errorf("%d access log lines for 2000 calls: a retried call must be logged once", calls)
	}
	if n := metricValue(t, w, `portico_backend_retries_total{backend="`+w.catalog+`"}`); n < float64(retried) {
		t.Errorf("portico_backend_retries_total = %v, want at least the %d retried calls", n, retried)
	}

	// Healed, it comes back after its ejection time and serves again.
	if err := bad.SetFaults(host.Faults{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the healed instance to return to rotation", func() bool { return len(w.ejected()) == 0 })
	before := bad.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
	if ok, _ := w.getProducts("grpc", 30, 1); ok != 30 {
		t.Errorf("%d of 30 calls succeeded after the return", ok)
	}
	if got := bad.Received(catalogv1.CatalogService_GetProduct_FullMethodName) - before; got == 0 {
		t.Error("the returned instance got none of 30 calls")
	}
}

func TestHalfFailingInstanceIsRetriedAround(t *testing.T) {
	w := newWorld(t, false, withCatalog(backend.Config{}, 0))
	w.startCatalog()
	w.startCatalog()
	w.startFaultyCatalog(host.Faults{FailRate: 0.5})
	for _, door := range []string{"grpc", "rest"} {
		ok, _ := w.getProducts(door, 1000, 4)
		t.Logf("%s: %d of 1000 GetProduct calls succeeded (%.2f%%) with one of three instances at -fail-rate 0.5", door, ok, float64(ok)/10)
		if ok < 999 {
			t.Errorf("%s: %d of 1000 succeeded, want at least 99.9%%", door, ok)
		}
	}
}

func TestHangingInstanceIsBoundedByTheTimeoutThenEjected(t *testing.T) {
	const timeout = 400 * time.Millisecond
	od := &backend.Outlier{ConsecutiveFailures: 3, Interval: 100 * time.Millisecond, BaseEjectionTime: time.Minute}
	w := newWorld(t, false, withCatalog(backend.Config{OutlierDetection: od}, timeout))
	w.startCatalog()
	w.startCatalog()
	_, healthy := w.getProducts("grpc", 500, 1)
	hung := w.startFaultyCatalog(host.Faults{HangRate: 1})

	// Until the hung instance is out, calls that meet it end at the route
	// timeout, and none takes longer.
	var slowest time.Duration
	for round := 0; !slices.Contains(w.ejected(), hung.ID()); round++ {
		if round == 50 {
			t.Fatal("the hung instance was not ejected within 50 rounds of calls")
		}
		for _, door := range []string{"grpc", "rest"} {
			_, lat := w.getProducts(door, 8, 4)
			slowest = max(slowest, slices.Max(lat))
		}
	}
	t.Logf("slowest call while the hung instance was in rotation: %v (route timeout %v)", slowest, timeout)
	// A little over the timeout for the gateway's and the client's own work.
	if slowest > timeout+300*time.Millisecond {
		t.Errorf("a call took %v, over the route timeout %v", slowest, timeout)
	}
	// After ejection no call meets the hung instance, and the tail is back.
	// Shared machines are noisy: up to five rounds of 500 calls, each
	// against the healthy p99.
	base := p99(healthy)
	for round := 1; ; round++ {
		before := hung.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
		ok, after := w.getProducts("grpc", 500, 1)
		met := hung.Received(catalogv1.CatalogService_GetProduct_FullMethodName) - before
		t.Logf("round %d: p99 %v after ejection vs %v healthy (%.2fx), %d of 500 ok, %d sent to the hung instance",
			round, p99(after), base, float64(p99(after))/float64(base), ok, met)
		if ok != 500 || met != 0 {
			t.Fatalf("after ejection: %d of 500 ok, %d sent to the hung instance", ok, met)
		}
		if p99(after) <= 2*base {
			break
		}
		if round == 5 {
			t.Fatalf("p99 after ejection %v, want within 2x the healthy %v", p99(after), base)
		}
	}
}

func TestNonIdempotentCallIsNeverSentTwice(t *testing.T) {
	// Ejection off: the faulty instance keeps getting a third of the calls.
	w := newWorld(t, false, withCatalog(backend.Config{OutlierDetection: &backend.Outlier{ConsecutiveFailures: 0}}, 0), func(c *gateway.Config) {
		sc := c.Services["catalog.v1.CatalogService"]
		sc.Methods = map[string]gateway.MethodConfig{"CreateProduct": {PolicyConfig: gateway.PolicyConfig{
			RateLimit: &policy.RateLimit{Requests: 1000, Period: time.Second, Burst: 1000}}}}
		c.Services["catalog.v1.CatalogService"] = sc
	})
	hosts := []*host.Host{w.startCatalog(), w.startCatalog(), w.startFaultyCatalog(host.Faults{FailRate: 1})}
	received := func(method string) (n int64) {
		for _, h := range hosts {
			n += h.Received(method)
		}
		return n
	}
	const calls = 150
	failed := 0
	for i := range calls {
		sku := fmt.Sprintf("RES-%d", i)
		var err error
		if i%2 == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = w.catalogClient().CreateProduct(ctx, validProduct(sku))
			cancel()
		} else if r := w.rest("POST", "/v1/products", validProduct(sku).Product); r.Status != http.StatusOK {
			err = fmt.Errorf("HTTP %d %s", r.Status, r.Raw)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "injected fault") {
				t.Fatalf("CreateProduct %d: %v, want success or the injected fault", i, err)
			}
			failed++
		}
	}
	got := received(catalogv1.CatalogService_CreateProduct_FullMethodName)
	t.Logf("CreateProduct: %d calls, %d failed at the faulty instance, %d received by the backends", calls, failed, got)
	if got != calls {
		t.Errorf("backends received %d CreateProduct calls for %d sent: a call that is not idempotent was sent twice", got, calls)
	}
	if failed == 0 {
		t.Error("no CreateProduct met the faulty instance: the test proves nothing")
	}
	// Reads, by contrast, are retried: the backends see more than were sent.
	ok, _ := w.getProducts("grpc", 60, 1)
	if r := received(catalogv1.CatalogService_GetProduct_FullMethodName); ok != 60 || r <= 60 {
		t.Errorf("GetProduct: %d of 60 ok, %d received; want all ok and retries seen", ok, r)
	}
}

func TestCircuitBreakerRefusesOverTheLimitAtOnce(t *testing.T) {
	w := newWorld(t, false, withCatalog(backend.Config{MaxConcurrentRequests: 10}, 0))
	w.startFaultyCatalog(host.Faults{Delay: time.Second})
	for _, door := range []string{"grpc", "rest"} {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var (
			wg                  sync.WaitGroup
			ok, overloaded, bad atomic.Int64
			slowestRefusal      atomic.Int64
			start               = make(chan struct{})
		)
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				t0 := time.Now()
				reason, retryAfter := "", ""
				if door == "grpc" {
					var h metadata.MD
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&h))
					cancel()
					if err == nil {
						ok.Add(1)
						return
					}
					for _, d := range status.Convert(err).Details() {
						if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && status.Code(err) == codes.Unavailable {
							reason = info.GetReason()
						}
					}
					if v := h.Get("retry-after"); len(v) > 0 {
						retryAfter = v[0]
					}
				} else {
					r := w.rest("GET", "/v1/products/prd-000001", nil)
					if r.Status == http.StatusOK {
						ok.Add(1)
						return
					}
					if r.Status == http.StatusServiceUnavailable {
						reason, _ = errorInfo(r.Body)
					}
					retryAfter = r.Header.Get("Retry-After")
				}
				if reason != backend.ReasonOverloaded || retryAfter == "" {
					bad.Add(1)
					return
				}
				overloaded.Add(1)
				if d := int64(time.Since(t0)); d > slowestRefusal.Load() {
					slowestRefusal.Store(d)
				}
			}()
		}
		close(start)
		// While the ten run (a second), ten are in flight to the backend,
		// never more.
		peak := int64(0)
		inFlight := func() int64 {
			for _, b := range w.resilience().Backends {
				if b.Name == w.catalog {
					peak = max(peak, b.InFlight)
					return b.InFlight
				}
			}
			return 0
		}
		testutil.Eventually(t, 900*time.Millisecond, "ten calls in flight to the backend", func() bool { return inFlight() == 10 })
		for range 5 {
			inFlight()
		}
		wg.Wait()
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		growth := int64(after.HeapInuse) - int64(before.HeapInuse)
		t.Logf("%s: 100 parallel calls at max_concurrent_requests 10, backend -delay 1s: %d ok, %d BACKEND_OVERLOADED (slowest refusal %v), %d other; peak in flight %d; heap in use %+d KiB",
			door, ok.Load(), overloaded.Load(), time.Duration(slowestRefusal.Load()), bad.Load(), peak, growth/1024)
		if ok.Load() != 10 || overloaded.Load() != 90 {
			t.Errorf("%s: %d ok and %d overloaded, want 10 and 90", door, ok.Load(), overloaded.Load())
		}
		if time.Duration(slowestRefusal.Load()) > 500*time.Millisecond {
			t.Errorf("%s: a refusal took %v: refusals must not wait for the backend", door, time.Duration(slowestRefusal.Load()))
		}
		if peak > 10 {
			t.Errorf("%s: %d calls in flight, over the limit of 10", door, peak)
		}
		if growth > 8<<20 {
			t.Errorf("%s: heap in use grew %d KiB over 100 calls", door, growth/1024)
		}
	}
}

func TestLeastRequestAvoidsASlowInstanceAndRingHashSticks(t *testing.T) {
	// Two gateways over the same two instances, one slow.
	rr := newWorld(t, false, withCatalog(backend.Config{}, 0))
	lr := newWorld(t, false, withCatalog(backend.Config{LoadBalancing: backend.LeastRequest}, 0))
	fast := rr.startCatalog()
	slow := rr.startFaultyCatalog(host.Faults{Delay: 100 * time.Millisecond})
	lr.waitRouted(rr.catalog, fast.ID())
	lr.waitRouted(rr.catalog, slow.ID())
	share := func(w *world) float64 {
		s0, f0 := slow.Received(catalogv1.CatalogService_GetProduct_FullMethodName), fast.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
		if ok, _ := w.getProducts("grpc", 200, 8); ok != 200 {
			t.Fatalf("%d of 200 ok", ok)
		}
		s := slow.Received(catalogv1.CatalogService_GetProduct_FullMethodName) - s0
		f := fast.Received(catalogv1.CatalogService_GetProduct_FullMethodName) - f0
		return float64(s) / float64(s+f)
	}
	rrShare, lrShare := share(rr), share(lr)
	t.Logf("share of 200 calls (8 in flight) sent to the instance with -delay 100ms: round_robin %.1f%%, least_request %.1f%%", rrShare*100, lrShare*100)
	if lrShare >= rrShare {
		t.Errorf("least_request sent %.1f%% to the slow instance, round_robin %.1f%%: want fewer", lrShare*100, rrShare*100)
	}

	rh := newWorld(t, false, withCatalog(backend.Config{LoadBalancing: backend.RingHash, HashHeader: "x-user-id"}, 0))
	third := rr.startCatalog()
	rh.waitRouted(rr.catalog, fast.ID())
	rh.waitRouted(rr.catalog, slow.ID())
	rh.waitRouted(rr.catalog, third.ID())
	used := map[string]bool{}
	for u := range 20 {
		user := fmt.Sprintf("user-%d", u)
		var first string
		for range 5 {
			var h metadata.MD
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user-id", user)
			if _, err := rh.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&h)); err != nil {
				t.Fatal(err)
			}
			got := h.Get("x-instance-id")[0]
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("ring_hash: %s went to %s, then to %s", user, first, got)
			}
		}
		used[first] = true
	}
	t.Logf("ring_hash on x-user-id: 20 users, 5 calls each, each user always on one instance; %d instances used", len(used))
	if len(used) < 2 {
		t.Errorf("20 users all hashed to one instance")
	}
}

func TestInstanceForAnEmptyBackendServesTheFirstCall(t *testing.T) {
	w := newWorld(t, false, withCatalog(backend.Config{}, 0))
	for round := range 3 {
		h := w.startCatalog() // returns once the gateway's resolver has it
		if _, err := instanceOf(context.Background(), w.catalogClient()); err != nil {
			t.Fatalf("round %d: first gRPC call: %v", round, err)
		}
		h.Kill()
		w.waitHealthy(w.catalog)
		w.waitRoutedExactly(w.catalog)
		h = w.startCatalog()
		if r := w.rest("GET", "/v1/products/prd-000001", nil); r.Status != http.StatusOK {
			t.Fatalf("round %d: first REST call: %d %s", round, r.Status, r.Raw)
		}
		h.Kill()
		w.waitHealthy(w.catalog)
		w.waitRoutedExactly(w.catalog)
	}
}

func TestResilienceShownInRoutesAndAdmin(t *testing.T) {
	w := newWorld(t, false)
	v := w.resilience()
	retries := map[string]string{}
	for _, r := range v.Routes {
		retries[r.Method] = r.Retry
	}
	if !strings.HasPrefix(retries["/catalog.v1.CatalogService/GetProduct"], "3 attempts") ||
		retries["/catalog.v1.CatalogService/CreateProduct"] != "transparent only" {
		t.Errorf("retries = %v", retries)
	}
	var names []string
	for _, b := range v.Backends {
		names = append(names, b.Name)
	}
	if !slices.Contains(names, w.catalog) {
		t.Errorf("backends %v lack %s", names, w.catalog)
	}
}

// metricValue reads one sample, by its exact name and labels, from the
// gateway's /metrics; 0 when absent.
func metricValue(t *testing.T, w *world, series string) float64 {
	t.Helper()
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func TestHealthCheckStopsRoutingToANotServingInstance(t *testing.T) {
	on := true
	plain := newWorld(t, false, withCatalog(backend.Config{}, 0))
	checked := newWorld(t, false, withCatalog(backend.Config{HealthCheck: &on}, 0))
	// Consul keeps both instances passing whatever they say (a TTL check
	// the test holds), so only the gateway's own health checking can tell.
	var hosts []*host.Host
	for range 2 {
		h, err := host.Start(context.Background(), host.Config{Name: plain.catalog,
			Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer()) }}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Kill)
		addr, port := splitHostPort(t, h.Addr())
		if err := plain.consul.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: h.ID(), Name: plain.catalog, Address: addr, Port: port,
			Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = plain.consul.Agent().ServiceDeregister(h.ID()) })
		hosts = append(hosts, h)
	}
	for _, w := range []*world{plain, checked} {
		for _, h := range hosts {
			w.waitRouted(plain.catalog, h.ID())
		}
	}
	sick := hosts[1]
	sick.SetServing(false)
	testutil.Eventually(t, 5*time.Second, "the health-checking gateway to stop routing to the NOT_SERVING instance", func() bool {
		before := sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
		checked.getProducts("grpc", 10, 1)
		return sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName) == before
	})
	before := sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
	okChecked, _ := checked.getProducts("rest", 20, 1)
	afterChecked := sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
	okPlain, _ := plain.getProducts("grpc", 20, 1)
	afterPlain := sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
	t.Logf("instance NOT_SERVING, still passing in Consul: health_check on sent it %d of 20 calls, off sent it %d of 20",
		afterChecked-before, afterPlain-afterChecked)
	if okChecked != 20 || afterChecked != before {
		t.Errorf("health_check on: %d of 20 ok, %d sent to the NOT_SERVING instance; want 20 and 0", okChecked, afterChecked-before)
	}
	if okPlain != 20 || afterPlain == afterChecked {
		t.Errorf("health_check off: %d ok, %d to the NOT_SERVING instance; want it still routed (Consul's word only)", okPlain, afterPlain-afterChecked)
	}
	sick.SetServing(true)
	testutil.Eventually(t, 5*time.Second, "the instance to return once SERVING", func() bool {
		before := sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
		checked.getProducts("grpc", 10, 1)
		return sick.Received(catalogv1.CatalogService_GetProduct_FullMethodName) > before
	})
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, port
}

func TestRetriesCannotMultiplyAnOutage(t *testing.T) {
	// Ejection off and a lone instance: every call fails, and retry
	// throttling must keep the backend's load near one attempt a call.
	w := newWorld(t, false, withCatalog(backend.Config{OutlierDetection: &backend.Outlier{ConsecutiveFailures: 0}}, 0))
	down := w.startFaultyCatalog(host.Faults{FailRate: 1})
	const calls = 400
	ok, _ := w.getProducts("grpc", calls, 4)
	got := down.Received(catalogv1.CatalogService_GetProduct_FullMethodName)
	t.Logf("backend failing every call: %d calls, %d ok, %d attempts reached it (%.2f a call; 3 without throttling)", calls, ok, got, float64(got)/calls)
	// The bucket allows about max_tokens/2 retries, then none.
	if limit := calls + backend.DefaultThrottling.MaxTokens/2 + 10; ok != 0 || got > int64(limit) || got <= calls {
		t.Errorf("%d attempts for %d calls, want more (some retries) but at most %d: retries multiplied the outage", got, calls, limit)
	}
}

func TestEjectionNeverTakesMoreThanMaxPercent(t *testing.T) {
	od := &backend.Outlier{ConsecutiveFailures: 3, Interval: 100 * time.Millisecond, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}
	w := newWorld(t, false, withCatalog(backend.Config{OutlierDetection: od}, 0))
	w.startCatalog()
	w.startFaultyCatalog(host.Faults{FailRate: 1})
	w.startFaultyCatalog(host.Faults{FailRate: 1})
	testutil.Eventually(t, 10*time.Second, "one failing instance ejected", func() bool {
		w.getProducts("grpc", 20, 2)
		return len(w.ejected()) >= 1
	})
	// Keep failing: the second failing instance stays, as 2 of 3 is over 50%.
	w.getProducts("grpc", 200, 2)
	got := w.ejected()
	t.Logf("three instances, two failing every call, max_ejection_percent 50: %d ejected", len(got))
	if len(got) != 1 {
		t.Errorf("ejected %v, want exactly one (50%% of 3, rounded down)", got)
	}
}
