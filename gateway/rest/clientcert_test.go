package rest_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/certs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// An in-process REST call meets the chain with the REST door's peer, which
// carries the request's TLS state: the chain finds a REST client's
// certificate where it finds a gRPC client's.
func TestRESTPeerCarriesTLS(t *testing.T) {
	ca, err := certs.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.Server("door", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("shop", "spiffe://example.org/shop")
	if err != nil {
		t.Fatal(err)
	}

	var got *peer.Peer
	d := rest.CatalogDoor(t, func(r *route.Route) *proxy.Method {
		m := proxy.New(r, nil, proxy.AsBytes)
		m.Bind(func(grpc.UnaryHandler) grpc.UnaryHandler {
			return func(ctx context.Context, _ any) (any, error) {
				got, _ = peer.FromContext(ctx)
				return &catalogv1.GetProductResponse{}, nil
			}
		})
		return m
	}, nil)
	srv := httptest.NewUnstartedServer(d)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.TLS()}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	get := func(cert *tls.Certificate) {
		t.Helper()
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		defer c.CloseIdleConnections()
		got = nil
		resp, err := c.Get(srv.URL + "/v1/products/prd-1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || got == nil {
			t.Fatalf("GET: %d, peer %v", resp.StatusCode, got)
		}
		if got.Addr != chain.RESTPeer.Addr {
			t.Errorf("peer address %v: not the REST door's", got.Addr)
		}
	}

	leaf := client.TLS()
	get(&leaf)
	ti, ok := got.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || !ti.State.VerifiedChains[0][0].Equal(client.Cert) {
		t.Errorf("with a client certificate: AuthInfo %#v, want TLSInfo with the verified chain", got.AuthInfo)
	}
	get(nil)
	if ti, ok := got.AuthInfo.(credentials.TLSInfo); !ok || len(ti.State.VerifiedChains) != 0 {
		t.Errorf("without a client certificate: AuthInfo %#v, want TLSInfo without verified chains", got.AuthInfo)
	}

	// Plaintext: RESTPeer itself.
	plain := httptest.NewServer(d)
	t.Cleanup(plain.Close)
	got = nil
	resp, err := plain.Client().Get(plain.URL + "/v1/products/prd-1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != chain.RESTPeer {
		t.Errorf("plaintext: peer %#v, want chain.RESTPeer", got)
	}
}
