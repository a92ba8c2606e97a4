package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gen/registry"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	p := writeConfig(t, `
http_addr: 127.0.0.1:18080
consul:
  address: 127.0.0.1:18500
default_timeout: 3s
services:
  catalog.v1.CatalogService:
    backend: catalog-blue
    tag: blue
    timeout: 750ms
`)
	cfg, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:18080" || cfg.Consul.Address != "127.0.0.1:18500" || cfg.DefaultTimeout != 3*time.Second {
		t.Errorf("cfg = %+v", cfg)
	}
	gw, err := gateway.New(cfg, registry.Services())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range gw.Routes() {
		switch r.Service {
		case "catalog.v1.CatalogService":
			if r.Backend != "catalog-blue" || r.Tag != "blue" || r.Timeout != 750*time.Millisecond {
				t.Errorf("catalog route %s: backend=%s tag=%s timeout=%v", r.Method, r.Backend, r.Tag, r.Timeout)
			}
		case "orders.v1.OrderService":
			// Declared in proto: backend orders, 10s; streams have no default.
			want := 10 * time.Second
			if r.ServerStreams {
				want = 0
			}
			if r.Backend != "orders" || r.Timeout != want {
				t.Errorf("orders route %s: backend=%s timeout=%v", r.Method, r.Backend, r.Timeout)
			}
		}
	}
}

func TestConfigErrorsNameTheCulprit(t *testing.T) {
	if _, err := gateway.LoadConfig(writeConfig(t, "http_adr: 127.0.0.1:1\n")); err == nil || !strings.Contains(err.Error(), "http_adr") {
		t.Errorf("typo in key: err = %v, want it named", err)
	}
	p := writeConfig(t, "services:\n  catalog.v1.Catalog:\n    backend: x\n")
	cfg, err := gateway.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = gateway.New(cfg, registry.Services())
	if err == nil || !strings.Contains(err.Error(), "catalog.v1.Catalog:") || !strings.Contains(err.Error(), p) {
		t.Errorf("unknown service: err = %v, want the service and the file named", err)
	}
}

func TestPrintRoutes(t *testing.T) {
	gw, err := gateway.New(gateway.Config{}, registry.Services())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := route.Print(&b, gw.Routes()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"GET /v1/products/{id}", "/catalog.v1.CatalogService/GetProduct",
		"PATCH /v1/products/{product.id}", "GET /v1/orders/{id}:watch", "server-stream",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("route table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPolicyContradictionsStopTheStart(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"scope on a public method": {
			"services:\n  catalog.v1.CatalogService:\n    methods:\n      GetProduct:\n        scopes: [catalog.read]\n",
			"catalog.v1.CatalogService/GetProduct",
		},
		"public override of a method with declared scopes": {
			"services:\n  catalog.v1.CatalogService:\n    methods:\n      CreateProduct:\n        access: public\n",
			"catalog.v1.CatalogService/CreateProduct",
		},
		"unknown method": {
			"services:\n  catalog.v1.CatalogService:\n    methods:\n      GetProducts:\n        access: public\n",
			"GetProducts",
		},
		"unknown access word": {
			"default_access: everyone\n",
			"everyone",
		},
	} {
		p := writeConfig(t, tc.yaml)
		cfg, err := gateway.LoadConfig(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = gateway.New(cfg, registry.Services())
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want it to name %q and %s", name, err, tc.want, p)
		}
	}
	// Service-wide scopes do not bind a public method: not a contradiction.
	cfg, _ := gateway.LoadConfig(writeConfig(t, "services:\n  catalog.v1.CatalogService:\n    scopes: [catalog.any]\n"))
	gw, err := gateway.New(cfg, registry.Services())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range gw.Routes() {
		if r.Method == "GetProduct" && len(r.Policy.Scopes) != 0 {
			t.Errorf("public GetProduct got scopes %v", r.Policy.Scopes)
		}
		if r.Method == "DeleteProduct" && strings.Join(r.Policy.Scopes, ",") != "catalog.write" {
			t.Errorf("DeleteProduct scopes = %v, want its own catalog.write", r.Policy.Scopes)
		}
	}
}
