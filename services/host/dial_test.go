package host

import (
	"testing"

	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/testconsul"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// An example service calls another through Consul as the gateway calls
// backends: a catalog that requires client certificates serves orders
// when orders presents one its CA signed, and nobody else.
func TestDialTLSInstance(t *testing.T) {
	client := testconsul.Shared(t).Client(t)
	f := newTLSFiles(t)
	startConsulTLSHost(t, client, "catalog-dial", f)
	cli, err := f.ca.Client("orders")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := cli.WriteFiles(t.TempDir(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	// The server certificate names "catalog": the name to verify.
	call := func(cfg *tlsconfig.BackendConfig) error {
		c, err := Dial(client, "catalog-dial", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := testCtx(t)
		_, err = catalogv1.NewCatalogServiceClient(c).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
		return err
	}
	if err := call(&tlsconfig.BackendConfig{CAFile: f.caFile, CertFile: certFile, KeyFile: keyFile, ServerName: "catalog"}); err != nil {
		t.Errorf("with the client certificate: %v", err)
	}
	if err := call(&tlsconfig.BackendConfig{CAFile: f.caFile, ServerName: "catalog"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("over TLS without a client certificate: %v, want UNAUTHENTICATED", err)
	}
	if err := call(&tlsconfig.BackendConfig{CAFile: f.caFile, CertFile: certFile, KeyFile: keyFile}); status.Code(err) != codes.Unavailable {
		t.Errorf("verifying the wrong name (catalog-dial): %v, want UNAVAILABLE", err)
	}
}
