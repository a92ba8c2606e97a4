package web

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portico-gw/portico/gen/openapi"
)

// TestDocumentPaths: the document's handler answers its three paths and
// redirects a path that cleans to one of them, as http.ServeMux does, and
// hands everything else to the door, escaped and unclean paths included.
func TestDocumentPaths(t *testing.T) {
	d, err := newDocument(OpenAPIConfig{}, openapi.Document, nil)
	if err != nil || d == nil {
		t.Fatal(d, err)
	}
	h := d.handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		method, target string
		code           int
		location       string
	}{
		{"GET", "/openapi.json", http.StatusOK, ""},
		{"HEAD", "/docs", http.StatusOK, ""},
		{"GET", "/docs/redoc.standalone.js", http.StatusOK, ""},
		{"GET", "/openapi%2Ejson", http.StatusOK, ""},
		{"GET", "/docs/../openapi.json", http.StatusTemporaryRedirect, "/openapi.json"},
		{"GET", "//openapi.json?x=1", http.StatusTemporaryRedirect, "/openapi.json?x=1"},
		{"GET", "/docs/./redoc.standalone.js", http.StatusTemporaryRedirect, "/docs/redoc.standalone.js"},
		{"GET", "/docs%2Fredoc.standalone.js", http.StatusTeapot, ""},
		{"GET", "/docs/", http.StatusTeapot, ""},
		{"GET", "/v1/products/prd-1", http.StatusTeapot, ""},
		{"GET", "/v1//products/../orders", http.StatusTeapot, ""},
		{"POST", "/openapi.json", http.StatusTeapot, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
		if rec.Code != tc.code || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.target, rec.Code, rec.Header().Get("Location"), tc.code, tc.location)
		}
	}
}

// A path the mux would treat as a subtree, or register unclean (which it
// panics on), is refused with the gateway's config error instead.
func TestDocumentPathsMustBeClean(t *testing.T) {
	for _, c := range []OpenAPIConfig{
		{DocsPath: "/docs/"}, {Path: "/spec/"}, {Path: "/a/../openapi.json"}, {DocsPath: "//docs"}, {DocsPath: "/"},
	} {
		if _, err := newDocument(c, openapi.Document, nil); err == nil {
			t.Errorf("newDocument(%+v) took the path; want an error", c)
		}
	}
	if _, err := newDocument(OpenAPIConfig{Path: "/api/openapi.json", DocsPath: "/api/docs"}, openapi.Document, nil); err != nil {
		t.Errorf("clean paths: %v", err)
	}
}
