package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	got = visit(other.URL)
	if !strings.HasPrefix(got.Product, "blocked") || !strings.HasPrefix(got.Order, "blocked") || got.Event != "blocked" {
		t.Errorf("from another origin %s: %+v, want every call blocked", other.URL, got)
	}
	t.Logf("from %s (not allowed): %+v", other.URL, got)

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
