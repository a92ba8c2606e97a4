package rest

import (
	"context"
	"testing"

	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// catalogDoor is a door over the catalog's REST routes, what the door's
// tests serve: mk makes each route's method proxy, and configure, when not
// nil, completes the door's config (chain, refusals) with the routes.
func catalogDoor(tb testing.TB, mk func(*route.Route) *proxy.Method, configure func(*Config, *route.Table)) *Door {
	tb.Helper()
	sd := catalogv1.File_catalog_v1_catalog_proto.Services().ByName("CatalogService")
	tbl, err := route.Build([]protoreflect.ServiceDescriptor{sd}, route.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{Methods: map[string]*proxy.Method{}}
	for _, r := range tbl.All() {
		cfg.Methods[r.FullMethod] = mk(r)
	}
	if configure != nil {
		configure(&cfg, tbl)
	}
	d := New(cfg)
	if err := catalogv1.RegisterCatalogServiceHandlerClient(context.Background(), d.Mux(), catalogv1.NewCatalogServiceClient(d.Conn())); err != nil {
		tb.Fatal(err)
	}
	return d
}

// CatalogDoor is catalogDoor for the package's external tests.
var CatalogDoor = catalogDoor
