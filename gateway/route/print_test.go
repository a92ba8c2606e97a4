package route_test

import (
	"strings"
	"testing"

	"github.com/portico-gw/portico/gateway/route"
)

// With the gateway's credential kinds, the table says what each route
// accepts: nothing needed on a public route, the kinds on the others.
func TestPrintCredentials(t *testing.T) {
	routes := build(t, route.Config{}).All()
	var b strings.Builder
	if err := route.Print(&b, routes, route.WithCredentialKinds([]string{"jwt", "client_certificate"})); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/catalog.v1.CatalogService/GetProduct":    "none needed",
		"/catalog.v1.CatalogService/CreateProduct": "jwt,client_certificate",
		"/orders.v1.OrderService/WatchOrder":       "jwt,client_certificate",
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[0], "CREDENTIALS") {
		t.Errorf("header: %q", lines[0])
	}
	for method, creds := range want {
		found := false
		for _, l := range lines {
			if strings.Contains(l, method+" ") {
				found = true
				if !strings.Contains(l, " "+creds+" ") {
					t.Errorf("%s: %q, want credentials %q", method, l, creds)
				}
			}
		}
		if !found {
			t.Errorf("no line for %s:\n%s", method, b.String())
		}
	}

	b.Reset()
	if err := route.Print(&b, routes, route.WithCredentialKinds(nil)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "none configured") || !strings.Contains(b.String(), "none needed") {
		t.Errorf("no kinds configured:\n%s", b.String())
	}
	b.Reset()
	if err := route.Print(&b, routes); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "CREDENTIALS") {
		t.Errorf("a column without the kinds:\n%s", b.String())
	}
}
