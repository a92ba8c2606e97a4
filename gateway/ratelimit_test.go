package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/gen/registry"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const catalogService = "catalog.v1.CatalogService"

// limitMethod overrides one catalog method's rate limit in config.
func limitMethod(method string, lim policy.RateLimit) worldOpt {
	return func(c *gateway.Config) {
		sc := c.Services[catalogService]
		if sc.Methods == nil {
			sc.Methods = map[string]gateway.MethodConfig{}
		}
		sc.Methods[method] = gateway.MethodConfig{PolicyConfig: gateway.PolicyConfig{RateLimit: &lim}}
		c.Services[catalogService] = sc
	}
}

// trustLoopback believes X-Forwarded-For from loopback, so one test can be
// many client addresses.
func trustLoopback(c *gateway.Config) { c.TrustedProxies = []string{"127.0.0.1"} }

// grpcNumbers puts the rate limit's numbers on admitted native gRPC calls
// (rate_limit.headers.grpc: true; the default leaves them off).
func grpcNumbers(c *gateway.Config) { on := true; c.RateLimit.Headers.GRPC = &on }

// restFrom is a REST call made by a client at ip, behind a trusted proxy.
func (w *world) restFrom(ip, method, path string) restResponse {
	w.t.Helper()
	req, err := http.NewRequest(method, w.base+path, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", ip)
	if w.key != "" {
		req.Header.Set("X-Api-Key", w.key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := restResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

// detail returns the first detail of a Status body with the given type.
func detail(body map[string]any, typ string) map[string]any {
	details, _ := body["details"].([]any)
	for _, d := range details {
		if m, _ := d.(map[string]any); m["@type"] == "type.googleapis.com/"+typ {
			return m
		}
	}
	return nil
}

func TestRateLimitPerIPOverREST(t *testing.T) {
	w := newWorld(t, false, trustLoopback, limitMethod("GetProduct", policy.RateLimit{Requests: 3, Period: time.Hour, Burst: 3})).anon()
	w.startCatalog()
	const ip = "198.51.100.10"
	for i, remaining := range []string{"2", "1", "0"} {
		r := w.restFrom(ip, "GET", "/v1/products/prd-000001")
		if r.Status != 200 {
			t.Fatalf("call %d: %d %s", i, r.Status, r.Raw)
		}
		for h, want := range map[string]string{"RateLimit-Limit": "3", "RateLimit-Remaining": remaining, "RateLimit-Policy": "3;w=3600;burst=3"} {
			if got := r.Header.Values(h); len(got) != 1 || got[0] != want {
				t.Errorf("call %d: %s = %v, want [%s]", i, h, got, want)
			}
		}
		if reset, _ := strconv.Atoi(r.Header.Get("RateLimit-Reset")); reset <= 0 || reset > 3600 {
			t.Errorf("call %d: RateLimit-Reset = %q", i, r.Header.Get("RateLimit-Reset"))
		}
		// The numbers go out in one write with the backend's own headers.
		if got := r.Header.Values("X-Instance-Id"); len(got) != 1 || got[0] == "" {
			t.Errorf("call %d: the backend's X-Instance-Id = %v beside the rate limit's headers", i, got)
		}
	}

	r := w.restFrom(ip, "GET", "/v1/products/prd-000001")
	if r.Status != http.StatusTooManyRequests || r.Body["code"] != float64(codes.ResourceExhausted) {
		t.Fatalf("fourth call: %d %s, want 429 RESOURCE_EXHAUSTED", r.Status, r.Raw)
	}
	if got := r.Header.Values("Retry-After"); len(got) != 1 || got[0] == "0" {
		t.Errorf("Retry-After = %v, want one positive value", got)
	}
	for h, want := range map[string]string{"RateLimit-Limit": "3", "RateLimit-Remaining": "0", "X-Portico-Error-Source": "gateway"} {
		if got := r.Header.Values(h); len(got) != 1 || got[0] != want {
			t.Errorf("rejection: %s = %v, want [%s]", h, got, want)
		}
	}
	if reason, domain := errorInfo(r.Body); reason != ratelimit.Reason || domain != policy.ErrorDomain {
		t.Errorf("ErrorInfo %s/%s, want %s in %s", reason, domain, ratelimit.Reason, policy.ErrorDomain)
	}
	if d := detail(r.Body, "google.rpc.RetryInfo"); d == nil || d["retryDelay"] == nil {
		t.Errorf("no RetryInfo in %s", r.Raw)
	}
	if msg, _ := r.Body["message"].(string); !strings.Contains(msg, "for client "+ip) {
		t.Errorf("message %q should name the client address", msg)
	}

	// Another address, and another method, have budgets of their own.
	if r := w.restFrom("198.51.100.11", "GET", "/v1/products/prd-000001"); r.Status != 200 {
		t.Errorf("another address: %d %s", r.Status, r.Raw)
	}
	if r := w.restFrom(ip, "GET", "/v1/products"); r.Status != 200 || r.Header.Get("RateLimit-Limit") != "100" {
		t.Errorf("ListProducts (declared 50/s burst 100): %d, RateLimit-Limit %q", r.Status, r.Header.Get("RateLimit-Limit"))
	}
}

func TestRateLimitPerIPOverGRPC(t *testing.T) {
	w := newWorld(t, false, trustLoopback, grpcNumbers, limitMethod("GetProduct", policy.RateLimit{Requests: 2, Period: time.Hour, Burst: 2})).anon()
	w.startCatalog()
	c := w.catalogClient()
	from := func(ip string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", ip)
	}
	for i := range 2 {
		var h metadata.MD
		if _, err := c.GetProduct(from("203.0.113.20"), &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&h)); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := h.Get("ratelimit-remaining"); len(got) != 1 || got[0] != strconv.Itoa(1-i) {
			t.Errorf("call %d: ratelimit-remaining = %v", i, got)
		}
		if got := h.Get("x-instance-id"); len(got) != 1 || got[0] == "" {
			t.Errorf("call %d: the backend's x-instance-id = %v beside the rate limit's headers", i, got)
		}
	}
	var trailer metadata.MD
	_, err := c.GetProduct(from("203.0.113.20"), &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("third call: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if d := retry.GetRetryDelay().AsDuration(); d <= 0 || d > 30*time.Minute {
		t.Errorf("RetryInfo delay %v, want (0, 30m]", d)
	}
	if policyName, reason := policy.Rejection(err); policyName != ratelimit.Name || reason != ratelimit.Reason {
		t.Errorf("Rejection = %s/%s", policyName, reason)
	}
	for k, want := range map[string]string{"ratelimit-limit": "2", "ratelimit-remaining": "0", policy.ErrorSourceKey: "gateway"} {
		if got := trailer.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("trailer %s = %v, want %s", k, got, want)
		}
	}
	if len(trailer.Get("retry-after")) != 1 {
		t.Errorf("trailer lacks retry-after: %v", trailer)
	}
	if _, err := c.GetProduct(from("203.0.113.21"), &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Errorf("another address: %v", err)
	}
}

// The catalog declares CreateProduct at 10 per minute, burst 10, per
// consumer: one consumer spending it leaves another's alone.
func TestRateLimitPerConsumer(t *testing.T) {
	const otherKey = "pk_test_other_9d8c7b6a5f4e3d2c1b0a"
	w := newWorld(t, false, func(c *gateway.Config) {
		c.Auth.APIKeys = append(c.Auth.APIKeys, auth.APIKeyConfig{Consumer: "other", SHA256: auth.HashAPIKey(otherKey), Scopes: []string{"catalog.write"}})
	})
	w.startCatalog()
	create := func(w *world, i int) restResponse {
		return w.rest("POST", "/v1/products", map[string]any{"sku": "RL-" + strconv.Itoa(1000+i), "name": "Limited", "price": 100, "currency": "EUR", "stock": 1})
	}
	for i := range 10 {
		if r := create(w, i); r.Status != 200 {
			t.Fatalf("create %d: %d %s", i, r.Status, r.Raw)
		}
	}
	r := create(w, 10)
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("11th create in a minute: %d %s, want 429", r.Status, r.Raw)
	}
	if msg, _ := r.Body["message"].(string); !strings.Contains(msg, "rate limit of 10 per 1m0s exceeded for consumer "+testConsumer) {
		t.Errorf("message %q should name the limit and the consumer", msg)
	}
	if strings.Contains(string(r.Raw), testAPIKey) {
		t.Error("the rejection leaks the API key")
	}
	other := *w
	other.key = otherKey
	if r := create(&other, 11); r.Status != 200 || r.Header.Get("RateLimit-Remaining") != "9" {
		t.Errorf("other consumer: %d remaining %q %s; want its own full budget", r.Status, r.Header.Get("RateLimit-Remaining"), r.Raw)
	}
}

func TestRateLimitFollowsConsulKV(t *testing.T) {
	prefix := "portico-test/" + strings.ToLower(t.Name()) + "/ratelimit"
	w := newWorld(t, false, trustLoopback, func(c *gateway.Config) { c.RateLimit.KVPrefix = prefix }).anon()
	w.startCatalog()
	kv := w.consul.KV()
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: prefix + "/" + key, Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	limitOf := func(path string) string { // a fresh address each time, so polling spends nobody's budget
		n++
		return w.restFrom("192.0.2."+strconv.Itoa(n%250+1), "GET", path).Header.Get("RateLimit-Limit")
	}
	if got := limitOf("/v1/products/prd-000001"); got != "100" {
		t.Fatalf("declared limit: RateLimit-Limit %q, want 100", got)
	}
	put(catalogService+"/GetProduct", `{"requests": 2, "period": "1h"}`)
	waitFor(t, "the KV limit on GetProduct", func() bool { return limitOf("/v1/products/prd-000001") == "2" })

	// A bad value is ignored; a later good key shows the watcher has seen it.
	put(catalogService+"/GetProduct", `{"requests": "many"}`)
	put(catalogService, `{"requests": 7, "period": "1s"}`)
	waitFor(t, "the service-wide KV limit on ListProducts", func() bool { return limitOf("/v1/products") == "7" })
	if got := limitOf("/v1/products/prd-000001"); got != "2" {
		t.Errorf("after a bad value GetProduct's limit is %q, want the last good 2", got)
	}
	// The admin API shows what is in force now, and where it came from.
	limits := adminRateLimits(t, w)
	if got := limits["/"+catalogService+"/GetProduct"]; got.FromKv != true || got.RateLimit.Requests != 2 || got.Declared.Requests != 50 {
		t.Errorf("admin rate-limits for GetProduct = %+v, want 2 from KV over the declared 50", got)
	}
	if got := limits["/"+catalogService+"/ListProducts"]; got.FromKv != true || got.RateLimit.Requests != 7 {
		t.Errorf("admin rate-limits for ListProducts = %+v, want the service-wide 7 from KV", got)
	}

	if _, err := kv.DeleteTree(prefix, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the declared limits back", func() bool {
		return limitOf("/v1/products/prd-000001") == "100" && limitOf("/v1/products") == "100"
	})
	if got := adminRateLimits(t, w)["/"+catalogService+"/GetProduct"]; got.FromKv || got.RateLimit.Requests != 50 {
		t.Errorf("admin rate-limits for GetProduct after the KV keys went = %+v, want the declared 50", got)
	}
}

type adminLimit struct {
	FromKv    bool
	RateLimit struct{ Requests uint32 }
	Declared  struct{ Requests uint32 }
}

// adminRateLimits reads GET /admin/v1/rate-limits by method.
func adminRateLimits(t *testing.T, w *world) map[string]adminLimit {
	t.Helper()
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/rate-limits")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Methods []struct {
			Method string
			adminLimit
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	out := map[string]adminLimit{}
	for _, m := range body.Methods {
		out[m.Method] = m.adminLimit
	}
	return out
}

// Two replicas registered in one Consul split each limit in two; when one
// stops, the other takes the whole limit again.
func TestRateLimitClusterSplit(t *testing.T) {
	var cfg *gateway.Config
	w := newWorld(t, true, trustLoopback, limitMethod("GetProduct", policy.RateLimit{Requests: 4, Period: time.Hour, Burst: 4}),
		func(c *gateway.Config) {
			c.Register = gateway.RegisterConfig{Enabled: true, CheckInterval: 200 * time.Millisecond}
			c.RateLimit.Mode = "cluster"
			cfg = c
		}).anon()
	w.startCatalog()

	second, err := gateway.New(*cfg, registry.Services(), gateway.WithLogger(slog.New(slog.DiscardHandler)),
		gateway.WithResolverOptions(discovery.WithBackoff(50*time.Millisecond, 500*time.Millisecond), discovery.WithWaitTime(5*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = second.Shutdown(context.Background())
		}
	})

	replicas := func(gw *gateway.Gateway) int {
		resp, err := httpClient.Get("http://" + gw.AdminAddr() + "/ratelimit")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var st ratelimit.Stats
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st.Replicas
	}
	waitFor(t, "both replicas to count two", func() bool { return replicas(w.gw) == 2 && replicas(second) == 2 })
	entries, _, err := w.consul.Health().Service(gateway.DefaultRegisterService, "", true, nil)
	if err != nil || len(entries) != 2 {
		t.Fatalf("consul lists %d passing portico replicas (%v), want 2", len(entries), err)
	}
	for _, c := range entries[0].Checks {
		if c.ServiceID != "" && c.Type != "http" {
			t.Errorf("replica check %s is %q, want an http check on /readyz", c.CheckID, c.Type)
		}
	}

	admitted := func(base, ip string) (n int, limit string) {
		w := *w
		w.base = base
		for range 10 {
			r := w.restFrom(ip, "GET", "/v1/products/prd-000001")
			if r.Status != 200 {
				return n, r.Header.Get("RateLimit-Limit")
			}
			n++
		}
		return n, ""
	}
	if n, limit := admitted(w.base, "203.0.113.30"); n != 2 || limit != "2" {
		t.Errorf("first replica admitted %d (limit %s), want its half: 2", n, limit)
	}
	if n, _ := admitted("http://"+second.HTTPAddr(), "203.0.113.30"); n != 2 {
		t.Errorf("second replica admitted %d, want its half: 2", n)
	}

	stopped = true
	if err := second.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the survivor to count one replica", func() bool { return replicas(w.gw) == 1 })
	if n, limit := admitted(w.base, "203.0.113.31"); n != 4 || limit != "4" {
		t.Errorf("alone, the replica admitted %d (limit %s), want the whole 4", n, limit)
	}
}

// The configuration documented in docs/rate-limiting.md parses and means what it says.
func TestRateLimitConfig(t *testing.T) {
	cfg, err := gateway.ParseConfig(strings.NewReader(`
default_rate_limit: {requests: 100, period: 1s, burst: 200}
trusted_proxies: [10.0.0.0/8, 192.168.1.7]
services:
  catalog.v1.CatalogService:
    rate_limit: {requests: 200, period: 1s, burst: 400}
    methods:
      CreateProduct: {rate_limit: {requests: 30, period: 1m}}
      ListProducts: {rate_limit: {requests: 0}}
rate_limit:
  mode: local
  max_keys: 100000
  idle_timeout: 1m
  kv_prefix: portico/settings/ratelimit
register:
  enabled: false
  service: portico
  address: ""
  tags: []
  check_interval: 2s
  deregister_after: 1m
`))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, registry.Services())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]policy.RateLimit{
		"/catalog.v1.CatalogService/GetProduct":    {Requests: 200, Period: time.Second, Burst: 400},
		"/catalog.v1.CatalogService/CreateProduct": {Requests: 30, Period: time.Minute, Burst: 30},
		"/catalog.v1.CatalogService/ListProducts":  {},
		"/orders.v1.OrderService/ListOrders":       {Requests: 20, Period: time.Second, Burst: 40}, // declared in proto
	}
	for _, r := range gw.Routes() {
		if w, ok := want[r.FullMethod]; ok && r.Policy.RateLimit != w {
			t.Errorf("%s: rate limit %v, want %v", r.FullMethod, r.Policy.RateLimit, w)
		}
	}

	for _, bad := range []struct {
		cfg  gateway.Config
		want string
	}{
		{gateway.Config{RateLimit: ratelimit.Config{Mode: "global"}}, `rate_limit.mode "global"`},
		{gateway.Config{RateLimit: ratelimit.Config{Mode: "cluster"}}, "needs register.enabled"},
	} {
		if _, err := gateway.New(bad.cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("New(%+v) = %v, want an error saying %q", bad.cfg.RateLimit, err, bad.want)
		}
	}
}

// A stream is counted when it is opened, and a rejected one says why over
// both transports, headers included.
func TestRateLimitStreams(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		sc := c.Services["orders.v1.OrderService"]
		lim := policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}
		sc.Methods = map[string]gateway.MethodConfig{"WatchOrder": {PolicyConfig: gateway.PolicyConfig{RateLimit: &lim}}}
		c.Services["orders.v1.OrderService"] = sc
	})
	// No orders backend: an admitted stream fails with 503, a rejected one with 429.
	if r := w.rest("GET", "/v1/orders/ord-000001:watch", nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("first stream: %d %s, want 503 from the missing backend", r.Status, r.Raw)
	}
	r := w.rest("GET", "/v1/orders/ord-000001:watch", nil)
	if r.Status != http.StatusTooManyRequests || !strings.Contains(string(r.Raw), ratelimit.Reason) {
		t.Fatalf("second stream: %d %s, want 429 %s", r.Status, r.Raw, ratelimit.Reason)
	}
	for _, h := range []string{"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"} {
		if got := r.Header.Values(h); len(got) != 1 {
			t.Errorf("rejected REST stream: %s = %v, want one value", h, got)
		}
	}

	stream, err := w.ordersClient().WatchOrder(context.Background(), &ordersv1.WatchOrderRequest{Id: "ord-000001"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gRPC stream: %v, want RESOURCE_EXHAUSTED", err)
	}
	if tr := stream.Trailer(); len(tr.Get("retry-after")) != 1 || len(tr.Get("ratelimit-limit")) != 1 {
		t.Errorf("rejected gRPC stream trailer = %v", tr)
	}
}

// An admitted REST call that a later policy refuses still carries the
// rate limit's numbers, as over gRPC: the REST door's outer half admits it,
// and the inner half's refusal never reaches the proxy that sends them with
// the backend's headers.
func TestRateLimitHeadersOnALaterRefusal(t *testing.T) {
	w := newWorld(t, false, trustLoopback, grpcNumbers, limitMethod("GetProduct", policy.RateLimit{Requests: 3, Period: time.Hour, Burst: 3})).anon()
	w.startCatalog()
	invalid := strings.Repeat("x", 65) // over GetProductRequest.id's maximum length
	r := w.restFrom("198.51.100.10", "GET", "/v1/products/"+invalid)
	if r.Status != http.StatusBadRequest {
		t.Fatalf("REST: %d %s, want 400", r.Status, r.Raw)
	}
	for h, want := range map[string]string{"RateLimit-Limit": "3", "RateLimit-Remaining": "2"} {
		if got := r.Header.Values(h); len(got) != 1 || got[0] != want {
			t.Errorf("REST refusal by validation: %s = %v, want [%s]", h, got, want)
		}
	}
	var h metadata.MD
	_, err := w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: invalid}, grpc.Header(&h))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("gRPC: %v, want INVALID_ARGUMENT", err)
	}
	if got := h.Get("ratelimit-limit"); len(got) != 1 || got[0] != "3" {
		t.Errorf("gRPC refusal by validation: ratelimit-limit = %v, want [3]", got)
	}
}
