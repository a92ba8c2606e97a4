package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/web"
	"github.com/portico-gw/portico/gen/registry"
)

type corsReply struct {
	status                          int
	allowOrigin, allowHeaders, vary string
	maxAge, expose                  string
	reason                          string
}

func corsDo(t *testing.T, w *world, method, path, origin string, header map[string]string) corsReply {
	t.Helper()
	resp := corsSend(t, w, method, path, origin, header)
	defer resp.Body.Close()
	out := corsReply{status: resp.StatusCode, allowOrigin: resp.Header.Get("Access-Control-Allow-Origin"),
		allowHeaders: resp.Header.Get("Access-Control-Allow-Headers"), vary: resp.Header.Get("Vary"),
		maxAge: resp.Header.Get("Access-Control-Max-Age"), expose: resp.Header.Get("Access-Control-Expose-Headers")}
	if resp.StatusCode >= 400 {
		var st struct {
			Details []struct{ Reason string } `json:"details"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		if len(st.Details) > 0 {
			out.reason = st.Details[0].Reason
		}
	}
	return out
}

func preflight(t *testing.T, w *world, path, origin, method string) corsReply {
	t.Helper()
	return corsDo(t, w, "OPTIONS", path, origin, map[string]string{
		"Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type,x-api-key"})
}

// TestCORS: the global cors block and a service's own, preflights answered
// before the chain and counted, a disallowed origin without CORS headers
// (its preflight 403), and no CORS at all when the config has none.
func TestCORS(t *testing.T) {
	const shop, admin, evil = "https://shop.example.com", "https://admin.example.com", "https://evil.example.com"
	w := newWorld(t, false, func(c *gateway.Config) {
		c.CORS = &policy.CORS{AllowedOrigins: []string{shop}, AllowedHeaders: []string{"x-api-key", "content-type"},
			ExposedHeaders: []string{"ratelimit-limit", "x-portico-error-source"}, MaxAge: 10 * time.Minute}
		sc := c.Services["orders.v1.OrderService"]
		sc.CORS = &policy.CORS{AllowedOrigins: []string{admin}, AllowedHeaders: []string{"x-api-key", "content-type"}}
		c.Services["orders.v1.OrderService"] = sc
	})
	w.startCatalog()
	before, _ := scrape(t, w)

	for _, tc := range []struct {
		name, path, origin, method string
		allowed                    bool
	}{
		{"catalog from the shop", "/v1/products/prd-000001", shop, "GET", true},
		{"catalog write from the shop", "/v1/products", shop, "POST", true},
		{"catalog from elsewhere", "/v1/products/prd-000001", evil, "GET", false},
		{"orders from the shop (the service's own block)", "/v1/orders", shop, "POST", false},
		{"orders from admin", "/v1/orders/ord-1:watch", admin, "GET", true},
		{"orders over Connect from admin", "/orders.v1.OrderService/CreateOrder", admin, "POST", true},
		{"catalog from admin", "/v1/products", admin, "GET", false},
		{"a method nobody allows", "/v1/products", shop, "TRACE", false},
	} {
		got := preflight(t, w, tc.path, tc.origin, tc.method)
		switch {
		case tc.allowed && (got.status != 204 || got.allowOrigin != tc.origin || !strings.Contains(got.allowHeaders, "x-api-key")):
			t.Errorf("%s: %+v, want 204 allowing %s", tc.name, got, tc.origin)
		case !tc.allowed && (got.status != 403 || got.allowOrigin != "" || got.reason != web.ReasonCORSRefused):
			t.Errorf("%s: %+v, want 403 %s without CORS headers", tc.name, got, web.ReasonCORSRefused)
		}
	}
	if got := preflight(t, w, "/v1/products", shop, "GET"); got.maxAge != "600" {
		t.Errorf("max_age: Access-Control-Max-Age %q, want 600", got.maxAge)
	}

	// Actual requests: the headers for an allowed origin, none for another.
	got := corsDo(t, w, "GET", "/v1/products/prd-000001", shop, nil)
	if got.status != 200 || got.allowOrigin != shop || !strings.Contains(strings.ToLower(got.expose), "ratelimit-limit") {
		t.Errorf("GET from the shop: %+v", got)
	}
	if got := corsDo(t, w, "GET", "/v1/products/prd-000001", evil, nil); got.status != 200 || got.allowOrigin != "" || got.expose != "" {
		t.Errorf("GET from elsewhere: %+v, want 200 without CORS headers", got)
	}
	if got := corsDo(t, w, "GET", "/v1/products/prd-000001", "", nil); got.status != 200 || got.allowOrigin != "" || !strings.Contains(got.vary, "Origin") {
		t.Errorf("GET without an Origin: %+v, want Vary: Origin for caches", got)
	}

	after, _ := scrape(t, w)
	if a, r := after[`portico_cors_preflight_total{result="allowed"}`], after[`portico_cors_preflight_total{result="refused"}`]; a != 5 || r != 4 {
		t.Errorf("portico_cors_preflight_total: allowed %v refused %v, want 5 and 4", a, r)
	}
	calls := func(m map[string]float64) (n float64) {
		for k, v := range m {
			if strings.HasPrefix(k, "portico_requests_total{") || strings.HasPrefix(k, "portico_rejections_total{") {
				n += v
			}
		}
		return n
	}
	if d := calls(after) - calls(before); d != 3 {
		t.Errorf("the chain saw %v calls, want the 3 GETs: preflights never reach it", d)
	}
	t.Logf("preflights: allowed %v, refused %v; calls the chain saw: %v",
		after[`portico_cors_preflight_total{result="allowed"}`], after[`portico_cors_preflight_total{result="refused"}`], calls(after)-calls(before))

	// Without a cors block: no CORS headers, and a preflight is no route.
	plain := newWorld(t, false)
	if got := preflight(t, plain, "/v1/products", shop, "GET"); got.allowOrigin != "" || got.status < 400 {
		t.Errorf("preflight without cors: %+v, want no CORS headers", got)
	}
	if got := corsDo(t, plain, "GET", "/v1/products/prd-000001", shop, nil); got.allowOrigin != "" {
		t.Errorf("GET without cors: %+v, want no CORS headers", got)
	}
}

// TestCORSCredentials: allow_credentials sends
// Access-Control-Allow-Credentials to an allowed origin, on the preflight
// and on the call.
func TestCORSCredentials(t *testing.T) {
	const shop = "https://shop.example.com"
	w := newWorld(t, false, func(c *gateway.Config) {
		c.CORS = &policy.CORS{AllowedOrigins: []string{shop}, AllowedHeaders: []string{"x-api-key", "content-type"}, AllowCredentials: true}
	})
	w.startCatalog()
	for name, do := range map[string]func() *http.Response{
		"preflight": func() *http.Response {
			return corsResponse(t, w, "OPTIONS", shop, map[string]string{"Access-Control-Request-Method": "GET"})
		},
		"GET": func() *http.Response { return corsResponse(t, w, "GET", shop, nil) },
	} {
		resp := do()
		if resp.Header.Get("Access-Control-Allow-Origin") != shop || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("%s: %d %v, want the shop's origin with credentials", name, resp.StatusCode, resp.Header)
		}
	}
	// Another origin gets neither.
	if resp := corsResponse(t, w, "GET", "https://evil.example.com", nil); resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("GET from elsewhere: %v, want no credentials header", resp.Header)
	}
}

// corsResponse is the response, body closed, to a CORS request for a
// product.
func corsResponse(t *testing.T, w *world, method, origin string, header map[string]string) *http.Response {
	t.Helper()
	resp := corsSend(t, w, method, "/v1/products/prd-000001", origin, header)
	resp.Body.Close()
	return resp
}

// corsSend sends a request with origin (none when empty) and header.
func corsSend(t *testing.T, w *world, method, path, origin string, header map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, w.base+path, nil)
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestCORSOriginsRefused: an allowed origin that is not exactly an origin
// (a wildcard pattern, a path), or "*" with credentials, stops New with
// the key named.
func TestCORSOriginsRefused(t *testing.T) {
	for _, tc := range []struct {
		global, service *policy.CORS
		err             string
	}{
		{global: &policy.CORS{AllowedOrigins: []string{"https://*.example.com"}, AllowCredentials: true},
			err: `cors: allowed_origins "https://*.example.com" is not an origin`},
		{global: &policy.CORS{AllowedOrigins: []string{"https://shop.example.com/app"}},
			err: `cors: allowed_origins "https://shop.example.com/app" is not an origin`},
		{global: &policy.CORS{AllowedOrigins: []string{"*"}, AllowCredentials: true},
			err: `cors: allowed_origins "*" cannot be combined with allow_credentials`},
		{service: &policy.CORS{AllowedOrigins: []string{"https://*.example.com"}},
			err: `services.orders.v1.OrderService.cors: allowed_origins "https://*.example.com" is not an origin`},
	} {
		cfg := gateway.Config{CORS: tc.global, Services: map[string]gateway.ServiceConfig{}}
		if tc.service != nil {
			cfg.Services["orders.v1.OrderService"] = gateway.ServiceConfig{CORS: tc.service}
		}
		cfg.Consul.Address = "127.0.0.1:1"
		if _, err := gateway.New(cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: %v, want an error with %q", tc.err, err, tc.err)
		}
	}
}
