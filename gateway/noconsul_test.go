package gateway_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gen/registry"
)

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Without Consul the gateway still starts, says it is not ready, and fails
// calls at once instead of hanging until their deadline.
func TestConsulUnreachableAtStart(t *testing.T) {
	gw, err := gateway.New(gateway.Config{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Consul:         discovery.ConsulConfig{Address: deadAddr(t)},
		DefaultTimeout: time.Minute,
	}, registry.Services(), gateway.WithResolverOptions(discovery.WithBackoff(50*time.Millisecond, 200*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + gw.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body["reason"].(string), "consul") {
		t.Errorf("/readyz = %d %v, want 503 naming consul", resp.StatusCode, body)
	}
	if gw.Ready() {
		t.Error("Ready() = true without Consul")
	}
	resp, err = client.Get("http://" + gw.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz = %d, want 200 while the process runs", resp.StatusCode)
	}

	// The client gives up after 10s; the route's timeout is a minute. A 503
	// must come from the resolver's error, long before either.
	resp, err = client.Get("http://" + gw.HTTPAddr() + "/v1/products")
	if err != nil {
		t.Fatalf("REST call hung: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Portico-Error-Source") != "gateway" {
		t.Errorf("REST call = %d (%s), want 503 from the gateway", resp.StatusCode, resp.Header.Get("X-Portico-Error-Source"))
	}
}
