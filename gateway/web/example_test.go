package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/web"
)

// A cors block in front of a handler: the preflight of an allowed origin is
// answered with the CORS headers, another origin's with 403 and none, and
// neither reaches the handler.
func ExampleWeb_Handler() {
	w, err := web.New(web.Options{CORS: &policy.CORS{
		AllowedOrigins: []string{"https://shop.example.com"},
		AllowedHeaders: []string{"x-api-key"},
		MaxAge:         10 * time.Minute,
	}})
	if err != nil {
		panic(err)
	}
	h := w.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { fmt.Println("the door was reached") }))
	for _, origin := range []string{"https://shop.example.com", "https://evil.example.com"} {
		r := httptest.NewRequest(http.MethodOptions, "/v1/products", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "GET")
		r.Header.Set("Access-Control-Request-Headers", "x-api-key")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Printf("%s: %d %q %q\n", origin, rec.Code, rec.Header().Get("Access-Control-Allow-Origin"), rec.Header().Get("Access-Control-Max-Age"))
	}
	// Output:
	// https://shop.example.com: 204 "https://shop.example.com" "600"
	// https://evil.example.com: 403 "" ""
}
