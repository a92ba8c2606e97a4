package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testredis"
	"github.com/portico-gw/portico/internal/testutil"
)

// The admin page of a gateway in rate_limit mode redis shows the store's
// state as it changes (up, down while Redis is stopped, up again) and a
// consumer's remaining quota, read from Redis.
func TestAdminPageShowsRedisStoreAndQuota(t *testing.T) {
	bin := chromium(t)
	agent := testconsul.New(t)
	redis := testredis.New(t)
	dir := build(t)
	config := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(config, []byte("rate_limit:\n  mode: redis\n  redis: {address: "+redis.Addr+", failure_mode: allow}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	gw := start(t, filepath.Join(dir, "gateway"), "-config="+config, "-consul-addr="+agent.Addr,
		"-http-addr="+httpAddr, "-grpc-addr="+grpcAddr, "-admin-addr="+adminAddr)
	testutil.Eventually(t, 30*time.Second, "gateway ready", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err == nil && code == 200
	})

	ctx := browser(t, bin)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+adminAddr+"/")); err != nil {
		t.Fatalf("open the admin page: %v", err)
	}
	const store = `document.querySelector('#ratelimits .pill.store')`
	waitPage(t, ctx, "the store up", store+` && `+store+`.textContent.startsWith("up")`)
	if got := js[string](t, ctx, `document.getElementById('ratelimit-store').textContent`); !strings.Contains(got, redis.Addr) || !strings.Contains(got, "failure mode allow") {
		t.Errorf("store line %q, want the address and the failure mode", got)
	}

	// A consumer's quota: GetProduct declares 50/s, burst 100.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#quota-consumer", "shop"), chromedp.Click("#quota-form button")); err != nil {
		t.Fatal(err)
	}
	const row = `[...document.querySelectorAll('#quota-table tbody tr')].find((tr) => tr.innerText.includes('/catalog.v1.CatalogService/GetProduct'))`
	waitPage(t, ctx, "GetProduct's quota", row)
	if got := js[string](t, ctx, row+`.innerText`); !strings.Contains(got, "100") || !strings.Contains(got, "redis") {
		t.Errorf("GetProduct quota row %q, want 100 remaining from redis", got)
	}

	// Redis stops: the next decision finds it gone, and the page says so.
	redis.Stop()
	_, _, _ = get("http://" + httpAddr + "/v1/products/prd-000001") // no catalog runs: 503, after the limit
	waitPage(t, ctx, "the store down", store+`.textContent.startsWith("down")`)
	redis.Start(t)
	waitPage(t, ctx, "the store up again", store+`.textContent.startsWith("up")`)
	gw.stop(t)
}
