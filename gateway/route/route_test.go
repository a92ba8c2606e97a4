package route_test

import (
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func services() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		catalogv1.File_catalog_v1_catalog_proto.Services().ByName("CatalogService"),
		ordersv1.File_orders_v1_orders_proto.Services().ByName("OrderService"),
	}
}

func build(t *testing.T, cfg route.Config) *route.Table {
	t.Helper()
	tbl, err := route.Build(services(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func lookup(t *testing.T, tbl *route.Table, method string) *route.Route {
	t.Helper()
	r, ok := tbl.Lookup(method)
	if !ok {
		t.Fatalf("no route %s", method)
	}
	return r
}

func TestBuildFromProtoOptions(t *testing.T) {
	tbl := build(t, route.Config{DefaultTimeout: 10 * time.Second})
	get := lookup(t, tbl, "/catalog.v1.CatalogService/GetProduct")
	if get.Backend != "catalog" || get.Timeout != 5*time.Second || get.Policy.Access != policy.Public || get.Kind() != "unary" {
		t.Errorf("GetProduct = %+v", get)
	}
	if got := strings.Join(get.HTTP, ","); got != "GET /v1/products/{id}" {
		t.Errorf("GetProduct HTTP = %s", got)
	}
	if get.Input.Descriptor().FullName() != "catalog.v1.GetProductRequest" || get.Output.Descriptor().FullName() != "catalog.v1.GetProductResponse" {
		t.Errorf("GetProduct types %s %s", get.Input.Descriptor().FullName(), get.Output.Descriptor().FullName())
	}
	create := lookup(t, tbl, "/catalog.v1.CatalogService/CreateProduct")
	if create.Policy.Access != policy.Authenticated || strings.Join(create.Policy.Scopes, ",") != "catalog.write" || !create.Policy.RateLimit.Enabled() {
		t.Errorf("CreateProduct policy = %+v", create.Policy)
	}
	for _, r := range tbl.All() {
		if r.Streams() && r.Timeout != 0 {
			t.Errorf("stream %s has default timeout %v; streams have none unless configured", r.FullMethod, r.Timeout)
		}
	}
	if got := strings.Join(tbl.Services(), ","); got != "catalog.v1.CatalogService,orders.v1.OrderService" {
		t.Errorf("Services() = %s", got)
	}
	if !tbl.Known("catalog.v1.CatalogService", "") || !tbl.Known("catalog.v1.CatalogService", "GetProduct") ||
		tbl.Known("catalog.v1.CatalogService", "GetProducts") || tbl.Known("catalog.v1.Catalog", "") {
		t.Error("Known answers wrong")
	}
	if _, ok := tbl.Lookup("/catalog.v1.CatalogService/Nope"); ok {
		t.Error("Lookup found a method that does not exist")
	}
}

// The merge order, weakest first: defaults, service proto, service config,
// method proto, method config.
func TestMergeOrder(t *testing.T) {
	limit := policy.RateLimit{Requests: 7, Period: time.Second}
	tbl := build(t, route.Config{
		DefaultTimeout:   time.Second,
		DefaultAccess:    "public",
		DefaultRateLimit: policy.RateLimit{Requests: 1, Period: time.Minute},
		Services: map[string]route.ServiceConfig{
			"catalog.v1.CatalogService": {
				Backend: "catalog-blue", Tag: "blue", Datacenter: "dc2", Timeout: 750 * time.Millisecond,
				PolicyConfig: route.PolicyConfig{RateLimit: &limit},
				Methods: map[string]route.MethodConfig{
					"DeleteProduct": {Timeout: 2 * time.Second, PolicyConfig: route.PolicyConfig{Scopes: []string{"catalog.admin"}}},
				},
			},
			"orders.v1.OrderService": {StreamTimeout: time.Minute},
		},
	})
	del := lookup(t, tbl, "/catalog.v1.CatalogService/DeleteProduct")
	if del.Target() != "consul:///catalog-blue?tag=blue&dc=dc2" {
		t.Errorf("target = %s", del.Target())
	}
	if del.Timeout != 2*time.Second || strings.Join(del.Policy.Scopes, ",") != "catalog.admin" {
		t.Errorf("DeleteProduct: timeout %v scopes %v: the method's config wins", del.Timeout, del.Policy.Scopes)
	}
	// The service's proto declares authenticated, over the default public.
	if del.Policy.Access != policy.Authenticated {
		t.Errorf("DeleteProduct access %v", del.Policy.Access)
	}
	// The service's config limit beats its proto limit; burst defaults to requests.
	if got := lookup(t, tbl, "/catalog.v1.CatalogService/ListProducts").Policy.RateLimit; got != (policy.RateLimit{Requests: 7, Period: time.Second, Burst: 7}) {
		t.Errorf("ListProducts limit = %v", got)
	}
	// CreateProduct declares its own limit in proto, which beats the service's config.
	if got := lookup(t, tbl, "/catalog.v1.CatalogService/CreateProduct").Policy.RateLimit; got == limit || !got.Enabled() {
		t.Errorf("CreateProduct limit = %v, want its proto's", got)
	}
	if got := lookup(t, tbl, "/catalog.v1.CatalogService/GetProduct").Timeout; got != 750*time.Millisecond {
		t.Errorf("GetProduct timeout = %v, want the service config's", got)
	}
	for _, r := range tbl.All() {
		if r.Service == "orders.v1.OrderService" && r.Streams() && r.Timeout != time.Minute {
			t.Errorf("%s stream timeout = %v", r.FullMethod, r.Timeout)
		}
	}
}

func TestBuildRefusesContradictions(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  route.Config
		want string
	}{
		"scope on a public method": {route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {
			Methods: map[string]route.MethodConfig{"GetProduct": {PolicyConfig: route.PolicyConfig{Scopes: []string{"x"}}}}}}},
			"catalog.v1.CatalogService/GetProduct"},
		"public override of declared scopes": {route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {
			Methods: map[string]route.MethodConfig{"CreateProduct": {PolicyConfig: route.PolicyConfig{Access: "public"}}}}}},
			"catalog.v1.CatalogService/CreateProduct"},
		"unknown method":  {route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {Methods: map[string]route.MethodConfig{"GetProducts": {}}}}}, "GetProducts"},
		"unknown service": {route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.Catalog": {}}}, "catalog.v1.Catalog:"},
		"unknown access":  {route.Config{DefaultAccess: "everyone"}, "everyone"},
		"zero period": {route.Config{Services: map[string]route.ServiceConfig{"catalog.v1.CatalogService": {
			PolicyConfig: route.PolicyConfig{RateLimit: &policy.RateLimit{Requests: 3}}}}}, "period must be positive"},
	} {
		name, tc := name, tc
		tc.cfg.Source = "/etc/portico.yaml"
		_, err := route.Build(services(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to name %q", name, err, tc.want)
		}
		if err != nil && name != "unknown access" && !strings.Contains(err.Error(), "/etc/portico.yaml") {
			t.Errorf("%s: err = %v, want the file named", name, err)
		}
	}
	if _, err := route.Build(append(services(), services()[0]), route.Config{}); err == nil {
		t.Error("a service registered twice was accepted")
	}
}

func TestPrint(t *testing.T) {
	var b strings.Builder
	if err := route.Print(&b, build(t, route.Config{}).All()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GET /v1/products/{id}", "/catalog.v1.CatalogService/GetProduct", "PATCH /v1/products/{product.id}", "server-stream", "catalog.write"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("route table lacks %q:\n%s", want, b.String())
		}
	}
}
