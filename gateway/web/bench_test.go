package web_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/web"
	"github.com/portico-gw/portico/gen/openapi"
	"github.com/portico-gw/portico/gen/registry"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// BenchmarkHandler is what the web part costs a REST call on its way to
// the door (a handler that does nothing here): with nothing on, with the
// OpenAPI document served (cmd/gateway's default) and with a cors block.
func BenchmarkHandler(b *testing.B) {
	door := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tc := range []struct {
		name string
		o    web.Options
	}{
		{"plain", web.Options{}},
		{"openapi", web.Options{Document: openapi.Document}},
		{"cors", web.Options{CORS: &policy.CORS{AllowedOrigins: []string{"https://shop.example.com"}}}},
		// A service's own cors block: each request's service is found by
		// its path.
		{"cors-service", web.Options{Routes: routes(b), Services: map[string]route.ServiceConfig{
			"orders.v1.OrderService": {CORS: &policy.CORS{AllowedOrigins: []string{"https://shop.example.com"}}},
		}}},
	} {
		w, err := web.New(tc.o)
		if err != nil {
			b.Fatal(err)
		}
		h := w.Handler(door)
		r := httptest.NewRequest(http.MethodGet, "/v1/products/prd-1", nil)
		r.Header.Set("Accept", "application/json")
		rec := httptest.NewRecorder()
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(rec, r)
			}
		})
	}
}

// routes are the example services' routes.
func routes(b *testing.B) []*route.Route {
	var sds []protoreflect.ServiceDescriptor
	for _, s := range registry.Services() {
		sds = append(sds, s.Descriptor)
	}
	tbl, err := route.Build(sds, route.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return tbl.All()
}
