package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
)

// chromium finds a headless-capable Chromium: $PORTICO_CHROMIUM, else
// chromium on PATH (Debian's package). Without one the test is skipped, or
// fails when PORTICO_REQUIRE_BROWSER=1 (make test sets it).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PORTICO_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const hint = "no chromium found: apt-get install -y chromium, or set PORTICO_CHROMIUM"
	if os.Getenv("PORTICO_REQUIRE_BROWSER") == "1" {
		t.Fatalf("a browser is required (PORTICO_REQUIRE_BROWSER=1): %s", hint)
	}
	t.Skip("skipping browser test: " + hint)
	return ""
}

// browser starts headless Chromium with everything that would reach for
// the network switched off: on a closed network it hangs otherwise.
func browser(t *testing.T, bin string) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1100))
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// js evaluates an expression in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitPage waits until expr holds in the page; the page polls every two
// seconds, so this is a few polls at most.
func waitPage(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !js[bool](t, ctx, "Boolean("+expr+")") {
		if time.Now().After(deadline) {
			t.Fatalf("the admin page never showed %s; page text:\n%s", what, js[string](t, ctx, "document.body.innerText"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// passingIDs lists the Consul service IDs of a service's passing instances.
func passingIDs(t *testing.T, consulAddr, service string) []string {
	t.Helper()
	resp, err := http.Get("http://" + consulAddr + "/v1/health/service/" + service + "?passing=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entries []struct{ Service struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

// TestAdminPageInBrowser runs what `make run` runs (Consul, catalog, orders
// and the gateway binaries), opens the admin page in headless Chromium and
// checks that it shows the routes and the healthy instances, and that its
// request counters move after traffic. The screenshot is saved in the test's
// artifact directory (go test -artifacts) and, when PORTICO_SCREENSHOT names
// a file (docs/admin.png), there too.
func TestAdminPageInBrowser(t *testing.T) {
	bin := chromium(t)
	agent := testconsul.New(t) // a private agent: the services keep their make-run names
	dir := build(t)
	catalog, orders := startServices(t, dir, agent.Addr)
	httpAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	gw := start(t, filepath.Join(dir, "gateway"), "-consul-addr="+agent.Addr, "-http-addr="+httpAddr, "-grpc-addr="+grpcAddr, "-admin-addr="+adminAddr)
	testutil.Eventually(t, 30*time.Second, "gateway ready", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err == nil && code == 200
	})

	ctx := browser(t, bin)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+adminAddr+"/")); err != nil {
		t.Fatalf("open the admin page: %v", err)
	}
	const getProduct = `document.querySelector('#routes tr[data-method="/catalog.v1.CatalogService/GetProduct"]')`
	const catalogInstance = `document.querySelector('[data-backend="catalog"] tr[data-instance]')`
	waitPage(t, ctx, "the route table", getProduct)
	waitPage(t, ctx, "a catalog instance", catalogInstance)

	routes := js[string](t, ctx, `document.querySelector('#routes').innerText`)
	for _, want := range []string{"GET /v1/products/{id}", "/catalog.v1.CatalogService/GetProduct", "POST /v1/orders", "/orders.v1.OrderService/WatchOrder"} {
		if !strings.Contains(routes, want) {
			t.Errorf("route table lacks %q:\n%s", want, routes)
		}
	}
	ids := passingIDs(t, agent.Addr, "catalog")
	if got := js[string](t, ctx, catalogInstance+`.dataset.instance`); len(ids) != 1 || got != ids[0] {
		t.Errorf("page shows catalog instance %q, Consul lists %v", got, ids)
	}
	if got := js[string](t, ctx, `document.querySelector('[data-backend="catalog"] .healthy').textContent`); got != "1 healthy" {
		t.Errorf("catalog health = %q, want \"1 healthy\"", got)
	}
	if got := js[string](t, ctx, `document.getElementById('ready').textContent`); got != "ready" {
		t.Errorf("readiness shown as %q", got)
	}
	waitPage(t, ctx, "Consul shown as reachable", `document.getElementById('consul').textContent.startsWith("Consul reachable")`)

	requests := getProduct + `.querySelector('td.requests').textContent`
	before := js[float64](t, ctx, "Number("+requests+")")
	const calls = 12
	for i := range calls {
		if code, body, err := get(fmt.Sprintf("http://%s/v1/products/prd-%06d", httpAddr, 1+i%3)); err != nil || code != 200 {
			t.Fatalf("GET product through the gateway: %d %s %v", code, body, err)
		}
	}
	waitPage(t, ctx, fmt.Sprintf("GetProduct requests rise by %d from %v", calls, before), fmt.Sprintf("Number(%s) >= %v", requests, before+calls))
	waitPage(t, ctx, "a request rate", "Number("+getProduct+`.querySelector('td.rps').textContent) > 0`)
	waitPage(t, ctx, "the calls on the instance", "Number("+catalogInstance+`.querySelector('td.calls').textContent) >= `+fmt.Sprint(calls))

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.ArtifactDir(), "admin.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	if docs := os.Getenv("PORTICO_SCREENSHOT"); docs != "" {
		if err := os.WriteFile(docs, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A second catalog that fails every call while its health check
	// passes: reads still succeed (retried), and the page shows it ejected
	// with the reason.
	faulty := start(t, filepath.Join(dir, "catalog"), "-consul-addr="+agent.Addr, "-fail-rate=1.0")
	testutil.Eventually(t, 30*time.Second, "two catalog instances passing", func() bool { return instances(t, agent.Addr, "catalog") == 2 })
	const ejected = `document.querySelector('[data-backend="catalog"] li.ejected')`
	for i := 0; i < 100 && !js[bool](t, ctx, ejected+" !== null"); i++ {
		if code, body, err := get("http://" + httpAddr + "/v1/products/prd-000001"); err != nil || code != 200 {
			t.Fatalf("GET product with a failing instance: %d %s %v", code, body, err)
		}
	}
	waitPage(t, ctx, "the failing instance shown as ejected", ejected)
	if got := js[string](t, ctx, ejected+".textContent"); !strings.Contains(got, "consecutive failures") || !strings.Contains(got, "UNAVAILABLE") {
		t.Errorf("ejection shown as %q, want its reason", got)
	}
	if got := js[string](t, ctx, `document.querySelector('[data-backend="catalog"] .resilience').textContent`); !strings.Contains(got, "round_robin") {
		t.Errorf("resilience line = %q", got)
	}

	gw.stop(t)
	faulty.stop(t)
	catalog.stop(t)
	orders.stop(t)
}
