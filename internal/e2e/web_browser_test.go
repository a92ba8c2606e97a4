package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
)

// corsPage is a page of another origin that calls the gateway's REST API
// with fetch (a simple GET, and a POST with JSON that needs a preflight)
// and reads WatchOrder with EventSource, leaving what happened in
// window.out.
const corsPage = `<!DOCTYPE html><html><body><script>
const q = new URLSearchParams(location.search), gw = q.get('gw');
window.out = {};
fetch(gw + '/v1/products/prd-000001').then(r => r.json())
  .then(j => out.product = j.product.id, e => out.product = 'blocked: ' + e);
fetch(gw + '/v1/orders', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({items: [{productId: 'prd-000001', quantity: 1}]})})
  .then(r => r.json()).then(j => out.order = j.order.status, e => out.order = 'blocked: ' + e);
const es = new EventSource(gw + '/v1/orders/' + q.get('id') + ':watch');
es.onmessage = e => { out.event = JSON.parse(e.data).result.order.status; es.close(); };
es.onerror = () => { out.event = out.event || 'blocked'; es.close(); };
</script></body></html>`

// TestBrowserClients opens, in headless Chromium, a page served from
// another origin that calls the gateway with fetch and EventSource: allowed
// when the cors block lists its origin, blocked by the browser when it does
// not. Then /docs renders the catalog's operations with Redoc.
func TestBrowserClients(t *testing.T) {
	bin := chromium(t)
	agent := testconsul.New(t)
	dir := build(t)
	startServices(t, dir, agent.Addr)

	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, corsPage)
	})
	allowed, other := httptest.NewServer(pages), httptest.NewServer(pages)
	t.Cleanup(allowed.Close)
	t.Cleanup(other.Close)

	httpAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	gwURL := "http://" + httpAddr
	config := filepath.Join(t.TempDir(), "portico.yaml")
	// Orders are public here: EventSource sends no headers, so an order
	// created anonymously is watched anonymously.
	err := os.WriteFile(config, []byte(fmt.Sprintf(`
http_addr: %s
grpc_addr: %s
admin_addr: %s
consul: {address: %s}
cors:
  allowed_origins: [%q]
  allowed_headers: [content-type, x-api-key]
services:
  orders.v1.OrderService:
    access: public
`, httpAddr, grpcAddr, adminAddr, agent.Addr, allowed.URL)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	start(t, filepath.Join(dir, "gateway"), "-config="+config)
	testutil.Eventually(t, 30*time.Second, "gateway ready", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err == nil && code == 200
	})
	resp, err := http.Post(gwURL+"/v1/orders", "application/json", bytes.NewReader([]byte(`{"items":[{"productId":"prd-000001","quantity":1}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Order struct{ ID string } }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if created.Order.ID == "" {
		t.Fatalf("create order: %d", resp.StatusCode)
	}

	ctx := browser(t, bin)
	type outcome struct{ Product, Order, Event string }
	visit := func(page string) outcome {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(page+"/?gw="+gwURL+"&id="+created.Order.ID)); err != nil {
			t.Fatalf("open %s: %v", page, err)
		}
		waitPage(t, ctx, "the calls' outcomes", `window.out && out.product && out.order && out.event`)
		var out outcome
		b := js[string](t, ctx, `JSON.stringify(window.out)`)
		if err := json.Unmarshal([]byte(b), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := visit(allowed.URL)
	if got.Product != "prd-000001" || got.Order != "ORDER_STATUS_PENDING" || got.Event != "ORDER_STATUS_PENDING" {
		t.Errorf("from the allowed origin %s: %+v, want the product, a new order and a stream event", allowed.URL, got)
	}
	t.Logf("from %s (allowed): %+v", allowed.URL, got)
	before := metrics(t, adminAddr)
	got = visit(other.URL)
	if !strings.HasPrefix(got.Product, "blocked") || !strings.HasPrefix(got.Order, "blocked") || got.Event != "blocked" {
		t.Errorf("from another origin %s: %+v, want every call blocked", other.URL, got)
	}
	t.Logf("from %s (not allowed): %+v", other.URL, got)
	// Blocked for the right reason, not for any failure: the gateway
	// refused the POST's preflight (and the POST never reached it), and the
	// GET and the stream reached it and were answered, without
	// Access-Control-Allow-Origin for that origin.
	calls := func(m map[string]float64, method string) float64 {
		return sum(m, "portico_requests_total{", `method="`+method+`"`, `transport="rest"`)
	}
	var after map[string]float64
	testutil.Eventually(t, 10*time.Second, "the blocked page's calls counted", func() bool {
		after = metrics(t, adminAddr)
		return calls(after, "WatchOrder") > calls(before, "WatchOrder")
	})
	const refused, allowedPreflights = `portico_cors_preflight_total{result="refused"}`, `portico_cors_preflight_total{result="allowed"}`
	if d := after[refused] - before[refused]; d != 1 || after[allowedPreflights] != before[allowedPreflights] {
		t.Errorf("preflights from %s: %v refused, %v allowed, want the POST's refused", other.URL, d, after[allowedPreflights]-before[allowedPreflights])
	}
	for method, want := range map[string]float64{"GetProduct": 1, "WatchOrder": 1, "CreateOrder": 0} {
		if d := calls(after, method) - calls(before, method); d != want {
			t.Errorf("%s from %s: the gateway saw %v calls, want %v", method, other.URL, d, want)
		}
	}
	for _, path := range []string{"/v1/products/prd-000001", "/v1/orders/" + created.Order.ID + ":watch"} {
		for origin, want := range map[string]string{other.URL: "", allowed.URL: allowed.URL} {
			if got := allowOrigin(t, gwURL+path, origin); got != want {
				t.Errorf("GET %s from %s: Access-Control-Allow-Origin %q, want %q", path, origin, got, want)
			}
		}
	}
	t.Logf("from %s: preflights refused %v; the gateway answered GetProduct %v and WatchOrder %v times without Access-Control-Allow-Origin",
		other.URL, after[refused]-before[refused], calls(after, "GetProduct")-calls(before, "GetProduct"), calls(after, "WatchOrder")-calls(before, "WatchOrder"))

	// The docs page renders the document with Redoc, embedded in the binary.
	if err := chromedp.Do(ctx, chromedp.Navigate(gwURL+"/docs")); err != nil {
		t.Fatalf("open /docs: %v", err)
	}
	waitPage(t, ctx, "the catalog's operations", `document.body.innerText.includes('CatalogService') && document.body.innerText.includes('GetProduct')`)
	text := js[string](t, ctx, `document.body.innerText`)
	for _, want := range []string{"ListProducts", "CreateProduct", "UpdateProduct", "DeleteProduct", "/v1/products/{id}"} {
		if !strings.Contains(text, want) {
			t.Errorf("/docs does not show %q", want)
		}
	}
	if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(80)); err == nil {
		_ = os.WriteFile(filepath.Join(t.ArtifactDir(), "docs.png"), shot, 0o644)
	}
}

// metrics scrapes the gateway's /metrics: each series' value by its name
// and labels.
func metrics(t *testing.T, adminAddr string) map[string]float64 {
	t.Helper()
	code, body, err := get("http://" + adminAddr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sum adds the series that start with prefix and contain every label.
func sum(m map[string]float64, prefix string, labels ...string) (n float64) {
next:
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(k, l) {
				continue next
			}
		}
		n += v
	}
	return n
}

// allowOrigin is the Access-Control-Allow-Origin the gateway answers a GET
// from origin with; a stream is closed once its headers are in.
func allowOrigin(t *testing.T, url, origin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET %s from %s: %d", url, origin, resp.StatusCode)
	}
	return resp.Header.Get("Access-Control-Allow-Origin")
}
