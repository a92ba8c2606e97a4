package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/gateway/stats"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/testredis"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// redisCluster is a test's gateway replicas in rate_limit mode redis,
// registered in one private Consul, sharing one Redis, in front of one
// catalog instance.
type redisCluster struct {
	t     *testing.T
	w     *world // Consul and the catalog; its own gateway runs no policies
	redis *testredis.Server
	cfg   gateway.Config
	reps  []*replica
}

// replica is one gateway of the cluster.
type replica struct {
	gw      *gateway.Gateway
	conn    *grpc.ClientConn // sends testAPIKey: consumer "tester"
	logs    *testutil.LockedBuffer
	stopped bool
}

// newRedisCluster starts Consul, a catalog instance and Redis, and n
// gateway replicas; failureModes[i], when given, is replica i's
// rate_limit.redis.failure_mode. GetProduct and ListProducts are limited
// to lim.
func newRedisCluster(t *testing.T, n int, lim policy.RateLimit, failureModes ...string) *redisCluster {
	t.Helper()
	var cfg gateway.Config
	w := newWorldWith(t, true, []gateway.Option{gateway.WithoutPolicies()}, limitMethod("GetProduct", lim), limitMethod("ListProducts", lim),
		func(c *gateway.Config) { cfg = *c })
	h := w.startCatalog()
	rc := &redisCluster{t: t, w: w, redis: testredis.New(t), cfg: cfg}
	rc.cfg.Register = gateway.RegisterConfig{Enabled: true, CheckInterval: 200 * time.Millisecond}
	rc.cfg.RateLimit = ratelimit.Config{Mode: "redis", Redis: ratelimit.RedisConfig{Address: ratelimit.Addresses{rc.redis.Addr}, Timeout: 2 * time.Second}}
	grpcNumbers(&rc.cfg)
	for i := range n {
		mode := ""
		if i < len(failureModes) {
			mode = failureModes[i]
		}
		rc.reps = append(rc.reps, rc.start(mode))
	}
	for _, r := range rc.reps {
		v := *w
		v.gw = r.gw
		v.waitRouted(w.catalog, h.ID())
	}
	rc.waitReplicas(n)
	return rc
}

// start starts one replica with the given failure mode.
func (rc *redisCluster) start(failureMode string) *replica {
	rc.t.Helper()
	cfg := rc.cfg
	cfg.RateLimit.Redis.FailureMode = failureMode
	r := &replica{logs: &testutil.LockedBuffer{}}
	gw, err := gateway.New(cfg, registry.Services(), gateway.WithLogger(slog.New(slog.NewTextHandler(r.logs, nil))),
		gateway.WithStatsOptions(stats.WithAccessLog(slog.New(slog.DiscardHandler))),
		gateway.WithResolverOptions(discovery.WithBackoff(50*time.Millisecond, 500*time.Millisecond), discovery.WithWaitTime(5*time.Second)))
	if err != nil {
		rc.t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		rc.t.Fatal(err)
	}
	r.gw = gw
	r.conn = dial(rc.t, gw.GRPCAddr(), testAPIKey)
	rc.t.Cleanup(func() {
		r.stop(rc.t)
		if rc.t.Failed() {
			rc.t.Logf("replica %s log:\n%s", gw.GRPCAddr(), r.logs)
		}
	})
	return r
}

func (r *replica) stop(t *testing.T) {
	if r.stopped {
		return
	}
	r.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.gw.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// waitReplicas waits until every running replica counts n replicas in
// Consul (what failure_mode local divides by).
func (rc *redisCluster) waitReplicas(n int) {
	rc.t.Helper()
	testutil.Eventually(rc.t, 20*time.Second, fmt.Sprintf("every replica to count %d replicas", n), func() bool {
		for _, r := range rc.reps {
			if r.stopped {
				continue
			}
			if l := r.rateLimits(rc.t); l.Replicas != n || l.Mode != "redis" {
				return false
			}
		}
		return true
	})
}

// adminRateLimitsView is GET /admin/v1/rate-limits, the parts read here.
type adminRateLimitsView struct {
	Mode     string
	Replicas int
	Store    struct {
		Kind, State, FailureMode, LastError string
		Outages, Errors                     string // uint64 as a JSON string
	}
}

func (r *replica) rateLimits(t *testing.T) adminRateLimitsView {
	t.Helper()
	var v adminRateLimitsView
	getJSON(t, "http://"+r.gw.AdminAddr()+"/admin/v1/rate-limits", &v)
	return v
}

func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

// calls makes n GetProduct calls on conn from four goroutines and counts
// them by code. Anything but OK, RESOURCE_EXHAUSTED and UNAVAILABLE fails
// the test.
func calls(t *testing.T, conn *grpc.ClientConn, n int) map[codes.Code]int {
	t.Helper()
	c := catalogv1.NewCatalogServiceClient(conn)
	return callsOf(t, n, func(ctx context.Context) error {
		_, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
		return err
	})
}

// listCalls is calls of ListProducts.
func listCalls(t *testing.T, conn *grpc.ClientConn, n int) map[codes.Code]int {
	t.Helper()
	c := catalogv1.NewCatalogServiceClient(conn)
	return callsOf(t, n, func(ctx context.Context) error {
		_, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{})
		return err
	})
}

func callsOf(t *testing.T, n int, call func(context.Context) error) map[codes.Code]int {
	t.Helper()
	var mu sync.Mutex
	out := map[codes.Code]int{}
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := call(ctx)
				cancel()
				mu.Lock()
				out[status.Code(err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for code, k := range out {
		if code != codes.OK && code != codes.ResourceExhausted && code != codes.Unavailable {
			t.Errorf("%d calls ended with %v", k, code)
		}
	}
	return out
}

// within reports whether got is within 1% of want.
func within(got, want int) bool {
	d := got - want
	return d*100 <= want && -d*100 <= want
}

// Behind three replicas, a gRPC client on one connection to one replica
// gets its whole limit, not a third; two clients of one consumer on two
// replicas share one limit. The answers carry the numbers from Redis,
// headers as in local mode.
func TestRedisRateLimitAcrossReplicas(t *testing.T) {
	lim := policy.RateLimit{Requests: 600, Period: time.Hour, Burst: 600}
	rc := newRedisCluster(t, 3, lim)
	a, b := rc.reps[0], rc.reps[1]

	var header metadata.MD
	if _, err := catalogv1.NewCatalogServiceClient(a.conn).GetProduct(context.Background(),
		&catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"ratelimit-limit": "600", "ratelimit-remaining": "599", "ratelimit-policy": "600;w=3600;burst=600"} {
		if got := header.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("first call: %s = %v, want %s", k, got, want)
		}
	}
	got := calls(t, a.conn, 800)
	admitted := got[codes.OK] + 1
	t.Logf("one connection to one of 3 replicas, limit 600/h: %d admitted (%.2f of the limit; cluster mode would give 200), %d refused",
		admitted, float64(admitted)/600, got[codes.ResourceExhausted])
	if !within(admitted, 600) {
		t.Errorf("one connection admitted %d, want 600 within 1%%", admitted)
	}

	// The rejection over REST, through the third replica: 429 with the
	// numbers of the shared bucket.
	v := *rc.w
	v.base = "http://" + rc.reps[2].gw.HTTPAddr()
	r := v.rest("GET", "/v1/products/prd-000001", nil)
	if r.Status != http.StatusTooManyRequests || r.Header.Get("RateLimit-Limit") != "600" || r.Header.Get("RateLimit-Remaining") != "0" ||
		r.Header.Get("Retry-After") == "" || detail(r.Body, "google.rpc.RetryInfo") == nil {
		t.Errorf("REST on the third replica: %d %v %s, want 429 with RateLimit-*, Retry-After and RetryInfo", r.Status, r.Header, r.Raw)
	}
	var quota struct {
		Quotas []struct {
			Method, Source string
			Remaining      int
		}
	}
	getJSON(t, "http://"+b.gw.AdminAddr()+"/admin/v1/quota?consumer="+testConsumer+"&method=/"+catalogService+"/GetProduct", &quota)
	if len(quota.Quotas) != 1 || quota.Quotas[0].Source != "redis" || quota.Quotas[0].Remaining > 1 {
		t.Errorf("admin quota of %s on another replica = %+v, want the spent bucket from redis", testConsumer, quota)
	}

	// Two clients of one consumer on two replicas, calling ListProducts
	// (limited alike, a bucket of its own): one limit between them.
	var ga, gb map[codes.Code]int
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ga = listCalls(t, a.conn, 500) }()
	go func() { defer wg.Done(); gb = listCalls(t, b.conn, 500) }()
	wg.Wait()
	total := ga[codes.OK] + gb[codes.OK]
	t.Logf("two connections of one consumer on 2 of 3 replicas, limit 600/h: %d + %d = %d admitted (%.3f of the limit)",
		ga[codes.OK], gb[codes.OK], total, float64(total)/600)
	if !within(total, 600) || ga[codes.Unavailable]+gb[codes.Unavailable] > 0 {
		t.Errorf("two replicas admitted %d together (%v, %v), want 600 within 1%%", total, ga, gb)
	}
}

// A 24h quota is kept in Redis: restarting every replica keeps what was
// spent.
func TestRedisQuotaSurvivesRestartOfEveryReplica(t *testing.T) {
	lim := policy.RateLimit{Requests: 2000, Period: 24 * time.Hour, Burst: 2000}
	rc := newRedisCluster(t, 3, lim)
	spent := 0
	for _, r := range rc.reps {
		spent += calls(t, r.conn, 400)[codes.OK]
	}
	if spent != 1200 {
		t.Fatalf("spent %d of the first 1200 calls, want all", spent)
	}
	for _, r := range rc.reps {
		r.stop(t)
	}
	var fresh []*replica
	for range 3 {
		fresh = append(fresh, rc.start(""))
	}
	rc.reps = fresh
	for _, r := range fresh {
		v := *rc.w
		v.gw = r.gw
		entries, _, err := rc.w.consul.Health().Service(rc.w.catalog, "", true, nil)
		if err != nil || len(entries) == 0 {
			t.Fatalf("catalog in consul: %v %v", entries, err)
		}
		v.waitRouted(rc.w.catalog, entries[0].Service.ID)
	}
	rc.waitReplicas(3)
	var quota struct{ Quotas []struct{ Remaining int } }
	getJSON(t, "http://"+fresh[0].gw.AdminAddr()+"/admin/v1/quota?consumer="+testConsumer+"&method=/"+catalogService+"/GetProduct", &quota)
	admitted := 0
	for _, r := range fresh {
		admitted += calls(t, r.conn, 400)[codes.OK]
	}
	t.Logf("2000/24h quota: 1200 spent, every replica restarted, admin quota then %v remaining, %d of 1200 more calls admitted", quota.Quotas, admitted)
	if len(quota.Quotas) != 1 || !within(quota.Quotas[0].Remaining, 800) {
		t.Errorf("admin quota after the restart = %+v, want 800 remaining", quota)
	}
	if !within(admitted, 800) {
		t.Errorf("after restarting every replica %d calls admitted, want the 800 left of the quota", admitted)
	}
}

// With Redis stopped, each failure mode does what docs/rate-limiting.md
// says: local enforces this replica's share (a third behind three
// replicas), allow lets every call through, deny refuses limited calls
// with UNAVAILABLE. Calls keep flowing under local and allow. Redis back,
// every replica finds it without a restart and the exact limit resumes.
func TestRedisFailureModesAcrossReplicas(t *testing.T) {
	lim := policy.RateLimit{Requests: 30, Period: time.Hour, Burst: 30}
	rc := newRedisCluster(t, 3, lim, "local", "allow", "deny")
	local, allow, deny := rc.reps[0], rc.reps[1], rc.reps[2]
	for _, r := range rc.reps {
		if got := calls(t, r.conn, 1)[codes.OK]; got != 1 {
			t.Fatal("a call before redis stopped was refused")
		}
	}

	rc.redis.Stop()
	gl, ga, gd := calls(t, local.conn, 40), calls(t, allow.conn, 40), calls(t, deny.conn, 40)
	t.Logf("redis stopped, 40 calls each: local admitted %d (refused %d), allow admitted %d, deny admitted %d (unavailable %d)",
		gl[codes.OK], gl[codes.ResourceExhausted], ga[codes.OK], gd[codes.OK], gd[codes.Unavailable])
	if gl[codes.OK] != 10 || gl[codes.ResourceExhausted] != 30 {
		t.Errorf("failure_mode local: %v, want 10 admitted (30 over 3 replicas), the rest RESOURCE_EXHAUSTED", gl)
	}
	if ga[codes.OK] != 40 {
		t.Errorf("failure_mode allow: %v, want all 40 admitted", ga)
	}
	if gd[codes.Unavailable] != 40 {
		t.Errorf("failure_mode deny: %v, want all 40 UNAVAILABLE", gd)
	}
	v := *rc.w
	v.base = "http://" + deny.gw.HTTPAddr()
	r := v.rest("GET", "/v1/products/prd-000001", nil)
	if reason, _ := errorInfo(r.Body); r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") != "1" || reason != ratelimit.ReasonStoreUnavailable {
		t.Errorf("failure_mode deny over REST: %d Retry-After %q %s, want 503, 1 and %s", r.Status, r.Header.Get("Retry-After"), r.Raw, ratelimit.ReasonStoreUnavailable)
	}
	for _, r := range rc.reps {
		st := r.rateLimits(t).Store
		if st.State != "down" || st.LastError == "" || st.Outages != "1" {
			t.Errorf("admin store while redis is stopped: %+v, want down with the error", st)
		}
		if !strings.Contains(r.logs.String(), "rate limit store unreachable") {
			t.Errorf("no log line when redis went away")
		}
	}

	rc.redis.Start(t)
	for _, r := range rc.reps {
		testutil.Eventually(t, 15*time.Second, "every replica to find redis back", func() bool { return r.rateLimits(t).Store.State == "up" })
		if !strings.Contains(r.logs.String(), "rate limit store reachable again") {
			t.Errorf("no log line when redis came back")
		}
	}
	// Redis came back empty: the three replicas share one full bucket.
	total := 0
	for _, r := range rc.reps {
		total += calls(t, r.conn, 20)[codes.OK]
	}
	t.Logf("redis restarted: %d of 60 calls over the 3 replicas admitted, limit 30", total)
	if total != 30 {
		t.Errorf("redis back: %d admitted over three replicas, want exactly the limit, 30", total)
	}
}

// BenchmarkChainRateLimitRedis is the price of exactness across replicas:
// the same call through a gateway with its full chain in rate_limit mode
// local and in mode redis (a redis-server on loopback), alternating call by
// call. It reports both latencies, the calls per second each makes on one
// connection, and their ratio (redis/local). Redis gets a decision timeout
// of 1s, so a loaded machine cannot turn the redis side into the failure
// mode's; a run that met any store error fails rather than report it.
func BenchmarkChainRateLimitRedis(b *testing.B) {
	big := policy.RateLimit{Requests: 1 << 30, Period: time.Second, Burst: 1 << 30} // never refuses
	local := newWorld(b, false, limitMethod("GetProduct", big))
	local.startCatalog()
	srv := testredis.New(b)
	redis := newWorld(b, false, limitMethod("GetProduct", big), func(c *gateway.Config) {
		c.RateLimit = ratelimit.Config{Mode: "redis", Redis: ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: time.Second}}
	})
	req := &catalogv1.GetProductRequest{Id: "prd-000001"}
	cl, cr := local.catalogClient(), redis.catalogClient()
	var tl, tr time.Duration
	call := func(c catalogv1.CatalogServiceClient, into *time.Duration) {
		t0 := time.Now()
		if _, err := c.GetProduct(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		*into += time.Since(t0)
	}
	for range 20 { // warm connections and caches
		call(cl, &tl)
		call(cr, &tr)
	}
	tl, tr = 0, 0
	b.ResetTimer()
	for range b.N {
		call(cl, &tl)
		call(cr, &tr)
	}
	b.StopTimer()
	var v adminRateLimitsView
	getJSON(b, "http://"+redis.gw.AdminAddr()+"/admin/v1/rate-limits", &v)
	if v.Mode != "redis" || v.Store.State != "up" || v.Store.Errors != "0" {
		b.Fatalf("rate-limit store %+v in mode %s: the redis side met errors and measured the failure mode", v.Store, v.Mode)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tl.Nanoseconds())/n, "local-ns/call")
	b.ReportMetric(float64(tr.Nanoseconds())/n, "redis-ns/call")
	b.ReportMetric(n/tl.Seconds(), "local-calls/s")
	b.ReportMetric(n/tr.Seconds(), "redis-calls/s")
	b.ReportMetric(float64(tr)/float64(tl), "redis/local")
}
