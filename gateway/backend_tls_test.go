package gateway_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/certs"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// backendPKI is one test's CA, the files of a backend's certificate (for
// the names given) and of the gateway's client certificate.
type backendPKI struct {
	ca                     *certs.CA
	dir                    string
	caFile                 string
	serverCert, serverKey  string
	gatewayCert, gatewayKK string
}

func newBackendPKI(t *testing.T, serverNames ...string) backendPKI {
	t.Helper()
	p := backendPKI{dir: t.TempDir()}
	var err error
	if p.ca, err = certs.NewCA("backend CA"); err != nil {
		t.Fatal(err)
	}
	if p.caFile, err = p.ca.WriteFile(p.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	srv, err := p.ca.Server("backend", serverNames...)
	if err != nil {
		t.Fatal(err)
	}
	if p.serverCert, p.serverKey, err = srv.WriteFiles(p.dir, "backend"); err != nil {
		t.Fatal(err)
	}
	p.gatewayCert, p.gatewayKK = p.writeGatewayCert(t, "gateway-1")
	return p
}

// writeGatewayCert puts a client certificate with common name cn where the
// gateway reads its own, the way a deployment rotates files: written
// aside, then renamed over, so the gateway never sees half a file.
func (p backendPKI) writeGatewayCert(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	leaf, err := p.ca.Client(cn)
	if err != nil {
		t.Fatal(err)
	}
	aside, err := os.MkdirTemp(p.dir, "next")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := leaf.WriteFiles(aside, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, "gateway.crt"), filepath.Join(p.dir, "gateway.key")
	if err := os.Rename(k, keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(c, certFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (p backendPKI) backendTLS() *tlsconfig.BackendConfig {
	return &tlsconfig.BackendConfig{CAFile: p.caFile, CertFile: p.gatewayCert, KeyFile: p.gatewayKK}
}

// hostTLS is what `catalog -tls-cert -tls-key -tls-client-ca` serves.
func (p backendPKI) hostTLS() host.TLS {
	return host.TLS{CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.caFile}
}

// seenCatalog is the catalog, noting for each GetProduct who called over
// which certificate, and with what identity metadata.
type seenCatalog struct {
	catalogv1.CatalogServiceServer
	mu    sync.Mutex
	calls []seenCall
}

type seenCall struct {
	clientCN string // the client certificate's common name; "" without one
	consumer string // x-portico-consumer
}

func newSeenCatalog() *seenCatalog { return &seenCatalog{CatalogServiceServer: catalog.NewServer()} }

func (s *seenCatalog) register(srv *grpc.Server) { catalogv1.RegisterCatalogServiceServer(srv, s) }

func (s *seenCatalog) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	var c seenCall
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			c.clientCN = info.State.PeerCertificates[0].Subject.CommonName
		}
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		c.consumer = strings.Join(md.Get("x-portico-consumer"), ",")
	}
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	return s.CatalogServiceServer.GetProduct(ctx, req)
}

func (s *seenCatalog) seen() []seenCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenCall(nil), s.calls...)
}

func (s *seenCatalog) last() (seenCall, bool) {
	calls := s.seen()
	if len(calls) == 0 {
		return seenCall{}, false
	}
	return calls[len(calls)-1], true
}

// A backend that requires client certificates, as `catalog -tls-client-ca`
// does, refuses a plaintext call and a TLS call without a certificate, and
// serves the gateway, which presents backend_tls's certificate; identity
// metadata reaches it only from the gateway. The backend's certificate is
// issued for the Consul service name, server_name's default.
func TestBackendTLSRequiresTheGatewaysCertificate(t *testing.T) {
	var pki backendPKI
	w := newWorld(t, false, func(c *gateway.Config) {
		pki = newBackendPKI(t, c.Services["catalog.v1.CatalogService"].Backend)
		c.BackendTLS = pki.backendTLS()
	})
	seen := newSeenCatalog()
	inst := w.startHostWith(host.Config{Name: w.catalog, Register: seen.register, TLS: pki.hostTLS()})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	forged := metadata.AppendToOutgoingContext(ctx, "x-portico-consumer", "admin")
	req := &catalogv1.GetProductRequest{Id: "prd-000001"}

	direct := func(creds credentials.TransportCredentials) catalogv1.CatalogServiceClient {
		conn, err := grpc.NewClient("passthrough:///"+inst.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return catalogv1.NewCatalogServiceClient(conn)
	}
	if _, err := direct(insecure.NewCredentials()).GetProduct(forged, req); status.Code(err) != codes.Unavailable {
		t.Errorf("direct plaintext call = %v, want Unavailable", err)
	}
	noCert := credentials.NewTLS(&tls.Config{RootCAs: pki.ca.Pool(), ServerName: w.catalog, MinVersion: tls.VersionTLS12})
	if _, err := direct(noCert).GetProduct(forged, req); status.Code(err) != codes.Unauthenticated {
		t.Errorf("direct TLS call without a client certificate = %v, want Unauthenticated", err)
	}
	if calls := seen.seen(); len(calls) != 0 {
		t.Fatalf("direct calls reached the service: %+v", calls)
	}

	id, err := instanceOf(forged, w.catalogClient())
	if err != nil || id != inst.ID() {
		t.Fatalf("call through the gateway = %q, %v; want served by %s", id, err, inst.ID())
	}
	if rest := w.rest("GET", "/v1/products/prd-000001", nil); rest.Status != 200 {
		t.Fatalf("REST call through the gateway = %d %s", rest.Status, rest.Raw)
	}
	for _, c := range seen.seen() {
		if c != (seenCall{clientCN: "gateway-1", consumer: testConsumer}) {
			t.Errorf("the backend saw %+v; want the gateway's certificate and identity %q", c, testConsumer)
		}
	}
}

// Rotating the gateway's backend client certificate changes what new
// backend connections present, without a restart; a corrupt file keeps the
// current one.
func TestBackendTLSClientCertificateRotates(t *testing.T) {
	var pki backendPKI
	logs := &testutil.LockedBuffer{}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))},
		func(c *gateway.Config) {
			pki = newBackendPKI(t, c.Services["catalog.v1.CatalogService"].Backend)
			c.BackendTLS = pki.backendTLS()
		})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	seen := newSeenCatalog()
	lis := newConnListener(t)
	w.startHostWith(host.Config{Name: w.catalog, Register: seen.register, TLS: pki.hostTLS(), Listener: lis})
	c := w.catalogClient()
	ctx := context.Background()

	// presents makes the gateway connect to the backend again and reports
	// whether the new connection presented the certificate named cn.
	presents := func(cn string) bool {
		lis.closeAll()
		if _, err := instanceOf(ctx, c); err != nil {
			return false // reconnecting
		}
		last, ok := seen.last()
		return ok && last.clientCN == cn
	}
	if _, err := instanceOf(ctx, c); err != nil {
		t.Fatal(err)
	}
	if last, _ := seen.last(); last.clientCN != "gateway-1" {
		t.Fatalf("the gateway presented %q, want gateway-1", last.clientCN)
	}

	pki.writeGatewayCert(t, "gateway-2")
	testutil.Eventually(t, 20*time.Second, "new backend connections to present the rotated certificate", func() bool {
		return presents("gateway-2")
	})

	mark := len(logs.String())
	aside := filepath.Join(pki.dir, "corrupt.crt")
	if err := os.WriteFile(aside, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, pki.gatewayCert); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the gateway to log that the corrupt file does not load", func() bool {
		return strings.Contains(logs.String()[mark:], "do not load")
	})
	testutil.Eventually(t, 20*time.Second, "a new backend connection after the corrupt file", func() bool {
		lis.closeAll()
		_, err := instanceOf(ctx, c)
		return err == nil
	})
	if last, _ := seen.last(); last.clientCN != "gateway-2" {
		t.Errorf("after a corrupt file the gateway presented %q, want gateway-2 kept", last.clientCN)
	}
}

// One backend's instances move to TLS one at a time: an instance marked
// portico-tls=false is dialled in plaintext, one marked true with TLS, and
// an unmarked one as the service's configuration says (TLS here), all
// through one connection per backend.
func TestBackendTLSMixedFleet(t *testing.T) {
	var pki backendPKI
	w := newWorld(t, false, func(c *gateway.Config) {
		pki = newBackendPKI(t, c.Services["catalog.v1.CatalogService"].Backend)
		c.BackendTLS = pki.backendTLS()
	})
	plain := w.startCatalog()
	marked := w.startHostWith(host.Config{Name: w.catalog, Register: newSeenCatalog().register, TLS: pki.hostTLS()})

	// An instance registered by something other than Portico's host, with
	// no mark.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	unmarked, err := host.Start(ctx, host.Config{Name: w.catalog, Register: newSeenCatalog().register, TLS: pki.hostTLS()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unmarked.Kill)
	addr, port, _ := net.SplitHostPort(unmarked.Addr())
	p, _ := strconv.Atoi(port)
	reg, err := discovery.Register(ctx, w.consul, discovery.Registration{
		Service: w.catalog, ID: unmarked.ID(), Address: addr, Port: p, CheckInterval: 250 * time.Millisecond,
		GRPCUseTLS: true, TLSSkipVerify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	w.waitPassing(w.catalog, unmarked.ID())
	w.waitRouted(w.catalog, unmarked.ID())

	served := map[string]int{}
	c := w.catalogClient()
	want := map[string]string{plain.ID(): "plaintext", marked.ID(): "TLS, marked", unmarked.ID(): "TLS, unmarked"}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("calls served by instance: %v; instances: %v", served, want)
		}
	})
	// Eventually paces the calls under the default rate limit while the
	// gateway connects to each instance.
	testutil.Eventually(t, 15*time.Second, "every instance to serve a call", func() bool {
		id, err := instanceOf(ctx, c)
		if err != nil {
			t.Logf("call: %v", err)
			return false
		}
		served[id]++
		return served[plain.ID()] > 0 && served[marked.ID()] > 0 && served[unmarked.ID()] > 0
	})
}

// services.<name>.tls replaces backend_tls for that service's backend,
// server_name included.
func TestBackendTLSPerService(t *testing.T) {
	var pki backendPKI
	w := newWorld(t, false, func(c *gateway.Config) {
		pki = newBackendPKI(t, "catalog.internal")
		other, err := certs.NewCA("other CA")
		if err != nil {
			t.Fatal(err)
		}
		otherFile, err := other.WriteFile(t.TempDir(), "other")
		if err != nil {
			t.Fatal(err)
		}
		// The default would fail: another CA, and the Consul name.
		c.BackendTLS = &tlsconfig.BackendConfig{CAFile: otherFile}
		svc := c.Services["catalog.v1.CatalogService"]
		svc.TLS = pki.backendTLS()
		svc.TLS.ServerName = "catalog.internal"
		c.Services["catalog.v1.CatalogService"] = svc
	})
	seen := newSeenCatalog()
	inst := w.startHostWith(host.Config{Name: w.catalog, Register: seen.register, TLS: pki.hostTLS()})
	if id, err := instanceOf(context.Background(), w.catalogClient()); err != nil || id != inst.ID() {
		t.Fatalf("call through the gateway = %q, %v; want served by %s", id, err, inst.ID())
	}
	if last, _ := seen.last(); last.clientCN != "gateway-1" {
		t.Errorf("the backend saw client certificate %q, want gateway-1", last.clientCN)
	}
}

// A backend whose certificate does not verify gets no call: the gateway
// answers UNAVAILABLE and counts the failed handshake.
func TestBackendTLSUntrustedBackendFailsClosed(t *testing.T) {
	var pki backendPKI
	w := newWorld(t, false, func(c *gateway.Config) {
		pki = newBackendPKI(t, c.Services["catalog.v1.CatalogService"].Backend)
		other, err := certs.NewCA("other CA")
		if err != nil {
			t.Fatal(err)
		}
		c.BackendTLS = pki.backendTLS()
		if c.BackendTLS.CAFile, err = other.WriteFile(t.TempDir(), "other"); err != nil {
			t.Fatal(err)
		}
	})
	seen := newSeenCatalog()
	w.startHostWith(host.Config{Name: w.catalog, Register: seen.register, TLS: pki.hostTLS()})
	if _, err := instanceOf(context.Background(), w.catalogClient()); status.Code(err) != codes.Unavailable {
		t.Errorf("call to an untrusted backend = %v, want Unavailable", err)
	}
	if calls := seen.seen(); len(calls) != 0 {
		t.Errorf("the untrusted backend got calls: %+v", calls)
	}
	want := `portico_tls_handshake_failures_total{reason="bad_certificate",tls="backend"}`
	testutil.Eventually(t, 10*time.Second, want+" in /metrics", func() bool {
		resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), want)
	})
}

// Services that share a backend share its connection, so they cannot ask
// for different TLS; a file that does not load fails New.
func TestBackendTLSConfigErrors(t *testing.T) {
	pki := newBackendPKI(t, "shared")
	cfg := gateway.Config{Consul: discovery.ConsulConfig{Address: "127.0.0.1:1"}, Services: map[string]gateway.ServiceConfig{
		"catalog.v1.CatalogService": {Backend: "shared", TLS: pki.backendTLS()},
		"orders.v1.OrderService":    {Backend: "shared"},
	}}
	if _, err := gateway.New(cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), "different tls") {
		t.Errorf("New with two TLS settings for one backend = %v, want an error naming it", err)
	}
	cfg.Services = nil
	cfg.BackendTLS = &tlsconfig.BackendConfig{CAFile: filepath.Join(t.TempDir(), "missing.crt")}
	if _, err := gateway.New(cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), "backend_tls") || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("New with a missing ca_file = %v, want an error naming the key and the file", err)
	}
}

// connListener is a listener whose connections a test can cut, to make a
// client connect again.
type connListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newConnListener(t *testing.T) *connListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &connListener{Listener: l, conns: map[net.Conn]struct{}{}}
}

func (l *connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	return c, nil
}

func (l *connListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
		delete(l.conns, c)
	}
}
