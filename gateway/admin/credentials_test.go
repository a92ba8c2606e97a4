package admin_test

import (
	"slices"
	"testing"

	"github.com/portico-gw/portico/gateway/admin"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
)

// Each authenticated route lists the credential kinds the gateway takes; a
// public one none, as it needs none.
func TestRoutesShowCredentials(t *testing.T) {
	routes := []*adminv1.Route{
		{Method: "/catalog.v1.CatalogService/GetProduct", Policy: &adminv1.Policy{Access: "public"}},
		{Method: "/catalog.v1.CatalogService/CreateProduct", Policy: &adminv1.Policy{Access: "authenticated"}},
	}
	srv, err := admin.New(routes, fakeLive{}, admin.WithCredentialKinds([]string{"api_key", "client_certificate"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	got, err := srv.ListRoutes(t.Context(), &adminv1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Routes[0].GetCredentials(); len(c) != 0 {
		t.Errorf("public route: credentials %v, want none", c)
	}
	if c := got.Routes[1].GetCredentials(); !slices.Equal(c, []string{"api_key", "client_certificate"}) {
		t.Errorf("authenticated route: credentials %v", c)
	}
	if len(routes[1].Credentials) != 0 {
		t.Error("New changed the caller's routes")
	}

	// Over the REST API too, as the admin page reads it.
	url := serve(t, fakeLive{}, admin.WithCredentialKinds([]string{"jwt"}))
	var body struct {
		Routes []struct {
			Method      string
			Credentials []string
		}
	}
	getJSON(t, url+"/admin/v1/routes", &body)
	for _, r := range body.Routes {
		if r.Credentials == nil || len(r.Credentials) != 0 {
			t.Errorf("%s (public): credentials %v, want []", r.Method, r.Credentials)
		}
	}
}
