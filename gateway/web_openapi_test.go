package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/services/orders"
)

// loadServedDocument GETs the OpenAPI document from the REST port and
// validates it as OpenAPI 3 with kin-openapi.
func loadServedDocument(t *testing.T, w *world, path string) *openapi3.T {
	t.Helper()
	code, body := get(t, w.base+path, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	doc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatalf("the served document does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served document is not valid OpenAPI 3: %v", err)
	}
	return doc
}

// checkSecurity: op needs nothing when public, else a bearer JWT or an API
// key with exactly scopes.
func checkSecurity(t *testing.T, name string, op *openapi3.Operation, public bool, scopes []string) {
	t.Helper()
	var got []string
	if list, ok := op.Extensions["x-portico-scopes"].([]any); ok {
		for _, s := range list {
			got = append(got, fmt.Sprint(s))
		}
	}
	if op.Security == nil {
		t.Errorf("%s: no security", name)
		return
	}
	if public {
		if len(*op.Security) != 0 || got != nil {
			t.Errorf("%s is public: security %v, scopes %q, want none", name, *op.Security, got)
		}
		return
	}
	want := openapi3.SecurityRequirements{{"bearerAuth": []string{}}, {"apiKey": []string{}}}
	if fmt.Sprint(*op.Security) != fmt.Sprint(want) || strings.Join(got, ",") != strings.Join(scopes, ",") {
		t.Errorf("%s is authenticated: security %v, scopes %q, want %v with scopes %q", name, *op.Security, got, want, scopes)
	}
	if len(scopes) > 0 && !strings.HasSuffix(op.Description, "Needs the scopes: "+strings.Join(scopes, ", ")+".") {
		t.Errorf("%s: description %q does not name the scopes %q", name, op.Description, scopes)
	}
}

// TestOpenAPISecurityFromConfig: access and scopes set in the config file,
// over the protos' declarations, are what the served document says.
func TestOpenAPISecurityFromConfig(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		sc := c.Services["orders.v1.OrderService"]
		sc.Methods = map[string]gateway.MethodConfig{"ListOrders": {PolicyConfig: gateway.PolicyConfig{Access: "public"}}}
		c.Services["orders.v1.OrderService"] = sc
		sc = c.Services["catalog.v1.CatalogService"]
		sc.Methods = map[string]gateway.MethodConfig{
			"GetProduct":    {PolicyConfig: gateway.PolicyConfig{Access: "authenticated", Scopes: []string{"catalog.read"}}},
			"CreateProduct": {PolicyConfig: gateway.PolicyConfig{Scopes: []string{"catalog.write", "catalog.admin"}}},
		}
		c.Services["catalog.v1.CatalogService"] = sc
	})
	doc := loadServedDocument(t, w, "/openapi.json")
	for _, tc := range []struct {
		verb, path string
		public     bool
		scopes     []string
	}{
		{"GET", "/v1/orders", true, nil},                                            // authenticated in the proto
		{"GET", "/v1/products/{id}", false, []string{"catalog.read"}},               // public in the proto
		{"POST", "/v1/products", false, []string{"catalog.write", "catalog.admin"}}, // catalog.write in the proto
		{"DELETE", "/v1/products/{id}", false, []string{"catalog.write"}},           // as declared
		{"GET", "/v1/products", true, nil},                                          // as declared
	} {
		item := doc.Paths.Value(tc.path)
		if item == nil || item.GetOperation(tc.verb) == nil {
			t.Errorf("%s %s is not in the document", tc.verb, tc.path)
			continue
		}
		checkSecurity(t, tc.verb+" "+tc.path, item.GetOperation(tc.verb), tc.public, tc.scopes)
	}
	// The routes agree.
	for _, r := range w.gw.Routes() {
		if r.FullMethod == "/orders.v1.OrderService/ListOrders" && r.Policy.Access.String() != "public" {
			t.Errorf("ListOrders: access %s, want public from the config", r.Policy.Access)
		}
	}
}

// TestOpenAPIDocument: the document served at /openapi.json validates as
// OpenAPI 3 and has every route with its security; every route of the
// example services is called, and each live answer, success and error,
// validates against the document (a stream line by line).
func TestOpenAPIDocument(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	// Slow enough to cancel an order made just before; quick enough for a
	// watch to end.
	w.startOrders(orders.WithStatusStep(150 * time.Millisecond))
	doc := loadServedDocument(t, w, "/openapi.json")

	ops := 0
	for _, r := range w.gw.Routes() {
		for _, h := range r.HTTP {
			verb, tmpl, _ := strings.Cut(h, " ")
			var op *openapi3.Operation
			for _, p := range doc.Paths.InMatchingOrder() {
				if o := doc.Paths.Value(p).GetOperation(verb); o != nil && o.Extensions["x-portico-method"] == r.FullMethod {
					op = o
				}
			}
			if op == nil {
				t.Errorf("%s (%s) is not in the document", h, tmpl)
				continue
			}
			ops++
			checkSecurity(t, h, op, r.Policy.Access.String() == "public", r.Policy.Scopes)
			if op.Responses.Value("429") == nil || op.Responses.Value("429").Value.Headers["Retry-After"] == nil {
				t.Errorf("%s: no 429 with Retry-After", h)
			}
		}
	}
	t.Logf("the served document validates; %d operations, each a routed method", ops)

	key := map[string]string{"X-Api-Key": testAPIKey}
	created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1}}})
	order := field(created.Body, "order", "id").(string)
	calls := []struct {
		method, path, body string
		header             map[string]string
		want               int
	}{
		{"GET", "/v1/products?pageSize=2", "", nil, 200},
		{"GET", "/v1/products?pageSize=x", "", nil, 400},
		{"GET", "/v1/products/prd-000001", "", nil, 200},
		{"GET", "/v1/products/prd-999999", "", nil, 404},
		{"POST", "/v1/products", `{"sku":"OA-1","name":"Mug","price":"1299","currency":"EUR","stock":3,"category":"kitchen"}`, key, 200},
		{"POST", "/v1/products", `{"sku":"bad"}`, key, 400},
		{"POST", "/v1/products", `{"sku":"OA-2"}`, nil, 401},
		{"PATCH", "/v1/products/prd-000002?updateMask=price", `{"price":"999"}`, key, 200},
		{"PATCH", "/v1/products/prd-000002", `{"price":"999"}`, nil, 401},
		{"DELETE", "/v1/products/prd-000003", "", key, 200},
		{"DELETE", "/v1/products/prd-000003", "", key, 404},
		{"POST", "/v1/orders", `{"items":[{"productId":"prd-000001","quantity":1}]}`, key, 200},
		{"POST", "/v1/orders", `{"items":[]}`, key, 400},
		{"GET", "/v1/orders/" + order, "", key, 200},
		{"GET", "/v1/orders/ord-999999", "", key, 404},
		{"GET", "/v1/orders", "", key, 200},
		{"GET", "/v1/orders", "", nil, 401},
		{"POST", "/v1/orders/{new}:cancel", `{}`, key, 200}, // an order made just before, not shipped yet
		{"POST", "/v1/orders/ord-999999:cancel", `{}`, key, 404},
		{"GET", "/v1/orders/" + order + ":watch", "", key, 200},
		{"GET", "/v1/orders/" + order + ":watch", "", nil, 401},
		{"GET", "/v1/orders/" + order + "/details", "", key, 200},
		{"GET", "/v1/orders/ord-999999/details", "", key, 404},
		{"GET", "/v1/home", "", key, 200},
		{"GET", "/v1/home", "", nil, 401},
	}
	called := map[string]bool{}
	for _, c := range calls {
		if strings.Contains(c.path, "{new}") {
			created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1}}})
			c.path = strings.Replace(c.path, "{new}", field(created.Body, "order", "id").(string), 1)
		}
		req, _ := http.NewRequest(c.method, w.base+c.path, strings.NewReader(c.body))
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		route, params, err := findRoute(doc, req)
		if err != nil {
			t.Errorf("%s %s: not in the document: %v", c.method, c.path, err)
			continue
		}
		called[route.Operation.Extensions["x-portico-method"].(string)] = true
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 resp.StatusCode, Header: resp.Header,
		}
		lines := [][]byte{body}
		if strings.HasSuffix(c.path, ":watch") && resp.StatusCode == 200 {
			lines = nil // newline-delimited: each line is one JSON value of the schema
			for sc := bufio.NewScanner(bytes.NewReader(body)); sc.Scan(); {
				lines = append(lines, bytes.Clone(sc.Bytes()))
			}
		}
		for _, line := range lines {
			in.SetBodyBytes(line)
			if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
				t.Errorf("%s %s: the %d answer does not match the document: %v\n%s", c.method, c.path, resp.StatusCode, err, line)
			}
		}
	}
	for _, r := range w.gw.Routes() {
		example := r.Service == "catalog.v1.CatalogService" || r.Service == "orders.v1.OrderService"
		if example && !called[r.FullMethod] {
			t.Errorf("%s was not called", r.FullMethod)
		}
	}
	t.Logf("%d live answers of %d methods validate against the document", len(calls), len(called))

	// Another path, and off.
	moved := newWorld(t, false, func(c *gateway.Config) { c.OpenAPI.Path, c.OpenAPI.DocsPath = "/api/openapi.json", "/api/docs" })
	loadServedDocument(t, moved, "/api/openapi.json")
	if code, body := get(t, moved.base+"/api/docs", nil); code != 200 || !bytes.Contains(body, []byte(`spec-url="/api/openapi.json"`)) {
		t.Errorf("GET /api/docs: %d %s", code, body)
	}
	off := false
	none := newWorld(t, false, func(c *gateway.Config) { c.OpenAPI.Enabled = &off })
	for _, p := range []string{"/openapi.json", "/docs"} {
		code, body := get(t, none.base+p, nil)
		var st struct{ Code int }
		if code != 404 || json.Unmarshal(body, &st) != nil || st.Code != 5 {
			t.Errorf("GET %s with openapi off: %d %s, want 404 NOT_FOUND", p, code, body)
		}
	}
}

// findRoute finds the document's operation for a request. kin-openapi's
// routers do not know google.api.http's custom verbs (/v1/orders/{id}:cancel
// beside /v1/orders/{id}), so a template's variable here takes one segment
// up to a colon.
func findRoute(doc *openapi3.T, req *http.Request) (*routers.Route, map[string]string, error) {
	for _, p := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(p)
		op := item.GetOperation(req.Method)
		if op == nil {
			continue
		}
		var names []string
		var pattern strings.Builder
		last := 0
		for _, loc := range templateVar.FindAllStringSubmatchIndex(p, -1) {
			pattern.WriteString(regexp.QuoteMeta(p[last:loc[0]]) + `([^/:]+)`)
			names = append(names, p[loc[2]:loc[3]])
			last = loc[1]
		}
		pattern.WriteString(regexp.QuoteMeta(p[last:]))
		m := regexp.MustCompile("^" + pattern.String() + "$").FindStringSubmatch(req.URL.Path)
		if m == nil {
			continue
		}
		params := map[string]string{}
		for i, n := range names {
			params[n] = m[i+1]
		}
		return &routers.Route{Spec: doc, Path: p, PathItem: item, Method: req.Method, Operation: op}, params, nil
	}
	return nil, nil, fmt.Errorf("no operation for %s %s", req.Method, req.URL.Path)
}

var templateVar = regexp.MustCompile(`\{([^{}]+)\}`)
