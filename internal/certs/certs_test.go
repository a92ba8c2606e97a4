package certs

import (
	"crypto/x509"
	"testing"
)

func TestChainVerifies(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("gateway", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("shop", "spiffe://example.org/shop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if len(cli.Cert.URIs) != 1 || cli.Cert.URIs[0].String() != "spiffe://example.org/shop" || len(srv.Cert.IPAddresses) != 1 {
		t.Errorf("names: %v %v", cli.Cert.URIs, srv.Cert.IPAddresses)
	}
	if c := srv.TLS(); len(c.Certificate) != 1 {
		t.Error("TLS() lost the certificate")
	}
}
