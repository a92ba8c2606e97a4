package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/certs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Client certificates as credentials, over real sockets: the listeners
// verify client certificates (tls.client_ca_file), auth maps the shop's
// SPIFFE ID to consumer shop, and the backend learns who called as it does
// for an API key, over gRPC, over REST in process (unary) and over REST
// streams (the in-memory connection).

const shopSPIFFE = "spiffe://example.org/shop"

// certRecorder is a catalog and an orders backend that remember the
// metadata of the last call.
type certRecorder struct {
	catalogv1.UnimplementedCatalogServiceServer
	ordersv1.UnimplementedOrderServiceServer
	mu   sync.Mutex
	last metadata.MD
}

func (r *certRecorder) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.last = md.Copy()
	r.mu.Unlock()
}

func (r *certRecorder) take() metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	md := r.last
	r.last = nil
	return md
}

func (r *certRecorder) CreateProduct(ctx context.Context, req *catalogv1.CreateProductRequest) (*catalogv1.CreateProductResponse, error) {
	r.record(ctx)
	return &catalogv1.CreateProductResponse{Product: &catalogv1.Product{Id: "prd-000001", Sku: req.GetProduct().GetSku()}}, nil
}

func (r *certRecorder) WatchOrder(req *ordersv1.WatchOrderRequest, s grpc.ServerStreamingServer[ordersv1.WatchOrderResponse]) error {
	r.record(s.Context())
	return s.Send(&ordersv1.WatchOrderResponse{Order: &ordersv1.Order{Id: req.GetId()}})
}

// mtlsWorld is a world whose client listeners serve TLS and require a
// client certificate signed by its CA.
type mtlsWorld struct {
	*world
	ca       *certs.CA
	rec      *certRecorder
	shop     tls.Certificate // spiffe://example.org/shop: consumer shop
	stranger tls.Certificate // signed by the CA, named in no entry
}

func newMTLSWorld(t *testing.T) *mtlsWorld {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("portico test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("gateway", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := srv.WriteFiles(dir, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	shop, err := ca.Client("shop", shopSPIFFE)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := ca.Client("stranger", "spiffe://example.org/stranger")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, false, func(c *gateway.Config) {
		c.TLS = &tlsconfig.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}
		c.Auth.ClientCertificates = []auth.ClientCertConfig{{Consumer: "shop", URISAN: shopSPIFFE, Scopes: []string{"catalog.write"}}}
	})
	m := &mtlsWorld{world: w, ca: ca, rec: &certRecorder{}, shop: shop.TLS(), stranger: stranger.TLS()}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, m.rec) })
	w.startHost(w.orders, func(s *grpc.Server) { ordersv1.RegisterOrderServiceServer(s, m.rec) })
	return m
}

func (m *mtlsWorld) tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: m.ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// grpcConn dials the gRPC listener presenting cert; key, when set, is sent
// as x-api-key on every call.
func (m *mtlsWorld) grpcConn(t *testing.T, cert tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(m.gw.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(m.tlsConfig(cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// restClient talks to the REST listener presenting cert, over h2 when
// h2 is set, else HTTP/1.1.
func (m *mtlsWorld) restClient(cert tls.Certificate, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: m.tlsConfig(cert), ForceAttemptHTTP2: h2}
	m.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

func (m *mtlsWorld) restDo(t *testing.T, c *http.Client, method, path, body string, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+m.gw.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// checkIdentity checks what the backend got for the last call.
func (m *mtlsWorld) checkIdentity(t *testing.T, door, consumer, subject, scopes string) {
	t.Helper()
	md := m.rec.take()
	if md == nil {
		t.Errorf("%s: the backend got no call", door)
		return
	}
	for k, want := range map[string]string{"x-portico-consumer": consumer, "x-portico-subject": subject, "x-portico-scopes": scopes} {
		if got := md.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s: backend got %s = %q, want %q", door, k, got, want)
		}
	}
	for k := range md {
		if strings.HasPrefix(k, "x-portico-internal") || k == proxy.MDClientCert {
			t.Errorf("%s: backend got the gateway's internal key %s", door, k)
		}
	}
}

func TestClientCertificateAsCredential(t *testing.T) {
	m := newMTLSWorld(t)
	ctx := t.Context()
	const product = `{"sku": "KETTLE-1", "name": "Kettle", "price": 100, "currency": "EUR", "stock": 1}`

	t.Run("grpc", func(t *testing.T) {
		conn := m.grpcConn(t, m.shop)
		if _, err := catalogv1.NewCatalogServiceClient(conn).CreateProduct(ctx, validProduct("KETTLE-1")); err != nil {
			t.Fatalf("CreateProduct with the shop's certificate: %v", err)
		}
		m.checkIdentity(t, "grpc unary", "shop", shopSPIFFE, "catalog.write")

		st, err := ordersv1.NewOrderServiceClient(conn).WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: "ord-1"})
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil {
			t.Fatalf("WatchOrder with the shop's certificate: %v", err)
		}
		m.checkIdentity(t, "grpc stream", "shop", shopSPIFFE, "catalog.write")
	})

	for _, h2 := range []bool{false, true} {
		name := "rest http/1.1"
		if h2 {
			name = "rest h2"
		}
		t.Run(name, func(t *testing.T) {
			c := m.restClient(m.shop, h2)
			if code, raw := m.restDo(t, c, "POST", "/v1/products", product, nil); code != http.StatusOK {
				t.Fatalf("POST /v1/products with the shop's certificate: %d %s", code, raw)
			}
			m.checkIdentity(t, name+" unary", "shop", shopSPIFFE, "catalog.write")

			// A stream takes the in-memory connection: the certificate
			// crosses it as the REST door's word.
			code, raw := m.restDo(t, c, "GET", "/v1/orders/ord-1:watch", "", nil)
			if code != http.StatusOK || !strings.Contains(string(raw), "ord-1") {
				t.Fatalf("GET /v1/orders/ord-1:watch with the shop's certificate: %d %s", code, raw)
			}
			m.checkIdentity(t, name+" stream", "shop", shopSPIFFE, "catalog.write")
		})
	}

	t.Run("a certificate no entry names is anonymous", func(t *testing.T) {
		_, err := catalogv1.NewCatalogServiceClient(m.grpcConn(t, m.stranger)).CreateProduct(ctx, validProduct("KETTLE-2"))
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "not mapped") {
			t.Errorf("grpc: %v, want UNAUTHENTICATED saying the certificate is not mapped", err)
		}
		c := m.restClient(m.stranger, false)
		if code, raw := m.restDo(t, c, "POST", "/v1/products", product, nil); code != http.StatusUnauthorized {
			t.Errorf("rest: %d %s, want 401", code, raw)
		}
		if code, raw := m.restDo(t, c, "GET", "/v1/orders/ord-1:watch", "", nil); code != http.StatusUnauthorized {
			t.Errorf("rest stream: %d %s, want 401", code, raw)
		}
		if md := m.rec.take(); md != nil {
			t.Errorf("a refused call reached the backend: %v", md)
		}
	})

	t.Run("an API key wins over the certificate", func(t *testing.T) {
		c := m.restClient(m.shop, false)
		if code, raw := m.restDo(t, c, "POST", "/v1/products", product, map[string]string{"X-Api-Key": testAPIKey}); code != http.StatusOK {
			t.Fatalf("rest: %d %s", code, raw)
		}
		m.checkIdentity(t, "rest with a key", testConsumer, testConsumer, "catalog.write")
		if code, _ := m.restDo(t, c, "POST", "/v1/products", product, map[string]string{"X-Api-Key": "pk_wrong"}); code != http.StatusUnauthorized {
			t.Errorf("rest with a wrong key and the shop's certificate: %d, want 401", code)
		}
	})

	t.Run("forged internal metadata", func(t *testing.T) {
		// A client cannot pass for the REST door: the header is dropped
		// over REST, and not believed over gRPC.
		c := m.restClient(m.stranger, false)
		hdr := map[string]string{"X-Portico-Internal-Client-Cert-Bin": base64.StdEncoding.EncodeToString(m.shop.Leaf.Raw)}
		if code, _ := m.restDo(t, c, "GET", "/v1/orders/ord-1:watch", "", hdr); code != http.StatusUnauthorized {
			t.Errorf("rest stream with a forged header: %d, want 401", code)
		}
		octx := metadata.AppendToOutgoingContext(ctx, proxy.MDClientCert, string(m.shop.Leaf.Raw))
		_, err := catalogv1.NewCatalogServiceClient(m.grpcConn(t, m.stranger)).CreateProduct(octx, validProduct("KETTLE-3"))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("grpc with the shop's certificate in metadata: %v, want UNAUTHENTICATED", err)
		}
	})
}

// The admin API says which credentials each route accepts.
func TestRoutesShowCredentialKinds(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		c.Auth.ClientCertificates = []auth.ClientCertConfig{{Consumer: "shop", URISAN: shopSPIFFE}}
	})
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []struct {
			Method      string
			Credentials []string
			Policy      struct{ Access string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{auth.KindAPIKey, auth.KindClientCertificate}, ",")
	for _, r := range body.Routes {
		got := strings.Join(r.Credentials, ",")
		switch {
		case r.Policy.Access == "public" && got != "":
			t.Errorf("%s (public): credentials %q, want none", r.Method, got)
		case r.Policy.Access == "authenticated" && got != want:
			t.Errorf("%s (authenticated): credentials %q, want %q", r.Method, got, want)
		}
	}
}
