package web_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/web"
	"github.com/portico-gw/portico/gen/openapi"
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
