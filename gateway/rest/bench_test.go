package rest_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/certs"
)

// BenchmarkDoor is a REST GetProduct through the door, its chain (without
// policies) and an in-process answer instead of a backend, one at a time
// over HTTP/1.1 keep-alive, in plaintext and over TLS: the door's own
// cost with the client's, and neither the proxy's nor a backend's.
func BenchmarkDoor(b *testing.B) {
	d := rest.CatalogDoor(b, func(r *route.Route) *proxy.Method {
		return proxy.New(r, nil, proxy.AsBytes, proxy.WithHandler(func(context.Context, any) (any, error) {
			return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: "prd-1", Name: "A product"}}, nil
		}))
	}, func(c *rest.Config, tbl *route.Table) { c.Chain = chain.New(chain.Config{Routes: tbl}) })
	ca, err := certs.NewCA("ca")
	if err != nil {
		b.Fatal(err)
	}
	cert, err := ca.Server("door", "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	plain := httptest.NewServer(d)
	defer plain.Close()
	overTLS := httptest.NewUnstartedServer(d)
	overTLS.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS()}}
	overTLS.StartTLS()
	defer overTLS.Close()
	for _, tc := range []struct {
		name   string
		url    string
		client *http.Client
	}{
		{"plain", plain.URL, plain.Client()},
		{"tls", overTLS.URL, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := tc.client.Get(tc.url + "/v1/products/prd-1")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
