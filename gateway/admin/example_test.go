package admin_test

import (
	"fmt"
	"net/http"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/stats"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
)

// still is a Live source with no traffic, enough to mount the endpoints.
type still struct{}

func (still) Traffic() stats.Traffic     { return stats.Traffic{} }
func (still) Backends() []stats.Backend  { return nil }
func (still) Consul() stats.ConsulStatus { return stats.ConsulStatus{} }

// The gateway mounts the endpoints on its admin listener, next to /metrics,
// /healthz and /readyz.
func ExampleServer_AdminEndpoints() {
	srv, err := admin.New([]*adminv1.Route{{Method: "/catalog.v1.CatalogService/GetProduct", Backend: "catalog"}}, still{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	mux := http.NewServeMux()
	for _, e := range srv.AdminEndpoints() {
		mux.Handle(e.Pattern, e.Handler)
		fmt.Println(e.Pattern)
	}
	// Output:
	// GET /{$}
	// GET /ui/
	// /admin/v1/
	// POST /portico.admin.v1.AdminService/
	// POST /grpc.reflection.v1.ServerReflection/
	// POST /grpc.reflection.v1alpha.ServerReflection/
}
