package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/certs"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// pki is a test's CA and the gateway's certificate for 127.0.0.1, written
// to files the gateway's config names.
type pki struct {
	t                         *testing.T
	ca                        *certs.CA
	dir                       string
	caFile, certFile, keyFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := certs.NewCA("portico test CA")
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, ca: ca, dir: t.TempDir()}
	if p.caFile, err = ca.WriteFile(p.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	p.writeServer()
	return p
}

// writeServer writes a new server certificate over the gateway's files
// and returns it.
func (p *pki) writeServer() *certs.Leaf {
	p.t.Helper()
	leaf, err := p.ca.Server("portico", "localhost", "127.0.0.1")
	if err != nil {
		p.t.Fatal(err)
	}
	if p.certFile, p.keyFile, err = leaf.WriteFiles(p.dir, "server"); err != nil {
		p.t.Fatal(err)
	}
	return leaf
}

// listener is the config of a listener serving the server certificate;
// with mTLS, clients need a certificate the CA signed.
func (p *pki) listener(mTLS bool) *tlsconfig.Config {
	c := &tlsconfig.Config{CertFile: p.certFile, KeyFile: p.keyFile}
	if mTLS {
		c.ClientCAFile = p.caFile
	}
	return c
}

// client is a client's TLS config trusting the CA, presenting leaf when
// it is not nil.
func (p *pki) client(leaf *certs.Leaf, protos ...string) *tls.Config {
	c := &tls.Config{RootCAs: p.ca.Pool(), NextProtos: protos}
	if leaf != nil {
		// Sent whatever the server asks: crypto/tls would keep back a
		// certificate whose CA the server does not name.
		cert := leaf.TLS()
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c
}

func (p *pki) clientLeaf(ca *certs.CA) *certs.Leaf {
	p.t.Helper()
	leaf, err := ca.Client("shop", "spiffe://example.org/shop")
	if err != nil {
		p.t.Fatal(err)
	}
	return leaf
}

// httpsClient speaks HTTP/1.1 or, with h2, only HTTP/2.
func httpsClient(cfg *tls.Config, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// dialTLS connects to the gateway's gRPC port over TLS.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// servedSerial is the serial of the certificate a new connection to addr
// is shown; nil when the handshake fails.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Logf("dial %s: %v", addr, err)
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestTLSListeners: with tls set, REST is served over HTTPS with HTTP/1.1
// and h2 (a stream too, which reaches the chain over the in-memory
// connection that stays plaintext), and gRPC over TLS; plaintext clients
// are refused and counted.
func TestTLSListeners(t *testing.T) {
	p := newPKI(t)
	w := newWorld(t, false, func(c *gateway.Config) { c.TLS = p.listener(false) })
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(50 * time.Millisecond))
	base := "https://" + w.gw.HTTPAddr()

	for _, h2 := range []bool{false, true} {
		resp, err := httpsClient(p.client(nil), h2).Get(base + "/v1/products/prd-000001")
		if err != nil {
			t.Fatalf("REST over TLS (h2 %v): %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantMajor := map[bool]int{false: 1, true: 2}[h2]
		if resp.StatusCode != 200 || resp.ProtoMajor != wantMajor || !strings.Contains(string(body), "prd-000001") {
			t.Errorf("REST over TLS (h2 %v) = %d %s %s, want 200 over HTTP/%d", h2, resp.StatusCode, resp.Proto, body, wantMajor)
		}
	}

	// A REST stream over h2: the door's in-memory gRPC connection to the
	// server stays plaintext under the TLS listeners.
	h2 := httpsClient(p.client(nil), true)
	req, _ := http.NewRequest("POST", base+"/v1/orders", strings.NewReader(`{"items":[{"productId":"prd-000001","quantity":1}]}`))
	req.Header.Set("X-Api-Key", testAPIKey)
	resp, err := h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Order struct{ ID string } }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 200 || created.Order.ID == "" {
		t.Fatalf("create order over TLS: %d %+v", resp.StatusCode, created)
	}
	req, _ = http.NewRequest("GET", base+"/v1/orders/"+created.Order.ID+":watch", nil)
	req.Header.Set("X-Api-Key", testAPIKey)
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); lines++ {
		if !strings.HasPrefix(sc.Text(), `{"result"`) {
			t.Errorf("REST stream over TLS: %s", sc.Text())
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || lines != 3 {
		t.Errorf("REST stream over TLS: %d with %d messages, want 200 with 3", resp.StatusCode, lines)
	}

	// gRPC over TLS; the peer is the gateway's certificate.
	conn := dialTLS(t, w.gw.GRPCAddr(), p.client(nil))
	var pr peer.Peer
	got, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Peer(&pr))
	if err != nil || got.GetProduct().GetId() != "prd-000001" {
		t.Fatalf("gRPC over TLS: %v %v", got, err)
	}
	if ti, ok := pr.AuthInfo.(credentials.TLSInfo); !ok || ti.State.NegotiatedProtocol != "h2" {
		t.Errorf("gRPC peer auth = %#v, want TLS with h2", pr.AuthInfo)
	}

	// Plaintext to the TLS ports: refused, and counted.
	resp, err = httpClient.Get("http://" + w.gw.HTTPAddr() + "/v1/products")
	if err != nil {
		t.Fatalf("plain HTTP to the TLS port: %v, want an answer saying why", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
		t.Errorf("plain HTTP to the TLS port = %d %s, want 400 naming HTTPS", resp.StatusCode, body)
	}
	plain := dial(t, w.gw.GRPCAddr(), "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext gRPC to the TLS port: %v, want UNAVAILABLE", err)
	}
	testutil.Eventually(t, 10*time.Second, "the plaintext handshakes to be counted", func() bool {
		m, _ := scrape(t, w)
		return m[`portico_tls_handshake_failures_total{reason="not_tls",tls="rest"}`] >= 1 &&
			m[`portico_tls_handshake_failures_total{reason="not_tls",tls="grpc"}`] >= 1
	})
	m, text := scrape(t, w)
	if m[`portico_tls_certificate_expiry_seconds{subject="CN=portico",tls="listener"}`] < float64(time.Now().Unix()) {
		t.Errorf("no expiry of the listener certificate in /metrics:\n%s", grepLines(text, "portico_tls"))
	}
}

// TestTLSRESTFramingChecked: over TLS, the edge still reads the framing of
// HTTP/1.1 requests: one with both Content-Length and Transfer-Encoding is
// refused and its connection closed, a good one served.
func TestTLSRESTFramingChecked(t *testing.T) {
	p := newPKI(t)
	w := newWorld(t, false, func(c *gateway.Config) { c.TLS = p.listener(false) })
	w.startCatalog()
	dial := func() *rawConn {
		t.Helper()
		c, err := tls.Dial("tcp", w.gw.HTTPAddr(), p.client(nil, "http/1.1"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &rawConn{t: t, conn: c, br: bufio.NewReader(c)}
	}
	c := dial()
	c.send("GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\n\r\n")
	if resp, body := c.response(); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("a good request over TLS: %d close=%v %s", resp.StatusCode, resp.Close, body)
	}
	c = dial()
	c.send("POST /v1/products HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %[1]s\r\nContent-Type: application/json\r\n" +
		"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
		"GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\n\r\n")
	resp, body := c.response()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("both Content-Length and Transfer-Encoding over TLS: %d close=%v %s, want 400 with Connection: close", resp.StatusCode, resp.Close, body)
	}
	if closed, extra := c.closedWithin(5 * time.Second); !closed || extra != 0 {
		t.Errorf("connection closed %v, %d bytes after the 400 (a smuggled request answered?)", closed, extra)
	}
}

// TestTLSClientCertificates: with client_ca_file, both listeners serve
// only clients with a certificate the CA signed.
func TestTLSClientCertificates(t *testing.T) {
	p := newPKI(t)
	w := newWorld(t, false, func(c *gateway.Config) { c.TLS = p.listener(true) })
	w.startCatalog()
	good := p.clientLeaf(p.ca)
	other, err := certs.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	bad := p.clientLeaf(other)
	url := "https://" + w.gw.HTTPAddr() + "/v1/products/prd-000001"

	for _, h2 := range []bool{false, true} {
		for name, leaf := range map[string]*certs.Leaf{"no certificate": nil, "another CA's certificate": bad} {
			if resp, err := httpsClient(p.client(leaf), h2).Get(url); err == nil {
				resp.Body.Close()
				t.Errorf("REST (h2 %v) with %s = %d, want the handshake refused", h2, name, resp.StatusCode)
			}
		}
		resp, err := httpsClient(p.client(good), h2).Get(url)
		if err != nil {
			t.Fatalf("REST (h2 %v) with a certificate the CA signed: %v", h2, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("REST (h2 %v) with a certificate the CA signed = %d", h2, resp.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, leaf := range map[string]*certs.Leaf{"no certificate": nil, "another CA's certificate": bad} {
		c := catalogv1.NewCatalogServiceClient(dialTLS(t, w.gw.GRPCAddr(), p.client(leaf)))
		if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); status.Code(err) != codes.Unavailable {
			t.Errorf("gRPC with %s: %v, want UNAVAILABLE (handshake refused)", name, err)
		}
	}
	c := catalogv1.NewCatalogServiceClient(dialTLS(t, w.gw.GRPCAddr(), p.client(good)))
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Errorf("gRPC with a certificate the CA signed: %v", err)
	}

	testutil.Eventually(t, 10*time.Second, "the refused handshakes to be counted by reason", func() bool {
		m, _ := scrape(t, w)
		for _, door := range []string{"rest", "grpc"} {
			for _, reason := range []string{"no_client_certificate", "bad_certificate"} {
				if m[`portico_tls_handshake_failures_total{reason="`+reason+`",tls="`+door+`"}`] < 1 {
					return false
				}
			}
		}
		return true
	})
}

// TestTLSCertificateRotation: new certificate files serve new connections
// without a restart, while connections opened before keep working.
func TestTLSCertificateRotation(t *testing.T) {
	p := newPKI(t)
	first := p.certFile
	w := newWorld(t, false, func(c *gateway.Config) { c.TLS = p.listener(false) })
	w.startCatalog()
	restAddr, grpcAddr := w.gw.HTTPAddr(), w.gw.GRPCAddr()
	oldSerial := servedSerial(t, restAddr, p.client(nil, "http/1.1"))

	// Connections opened before the rotation: REST over h2 (one connection
	// for every request) and gRPC.
	h2 := httpsClient(p.client(nil), true)
	getProduct := func() *big.Int {
		t.Helper()
		resp, err := h2.Get("https://" + restAddr + "/v1/products/prd-000001")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("REST: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber
	}
	cc := catalogv1.NewCatalogServiceClient(dialTLS(t, grpcAddr, p.client(nil)))
	callGRPC := func() *big.Int {
		t.Helper()
		var pr peer.Peer
		if _, err := cc.GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Peer(&pr)); err != nil {
			t.Fatal(err)
		}
		return pr.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber
	}
	if s := getProduct(); s.Cmp(oldSerial) != 0 {
		t.Fatalf("REST served serial %v, want %v", s, oldSerial)
	}
	if s := callGRPC(); s.Cmp(oldSerial) != 0 {
		t.Fatalf("gRPC served serial %v, want %v", s, oldSerial)
	}

	next := p.writeServer()
	if p.certFile != first {
		t.Fatal("the rotation wrote other files")
	}
	want := next.Cert.SerialNumber
	testutil.Eventually(t, 20*time.Second, "new connections to see the new certificate", func() bool {
		r, g := servedSerial(t, restAddr, p.client(nil, "http/1.1")), servedSerial(t, grpcAddr, p.client(nil, "h2"))
		return r != nil && g != nil && r.Cmp(want) == 0 && g.Cmp(want) == 0
	})
	// The connections opened before still serve, with the old certificate.
	if s := getProduct(); s.Cmp(oldSerial) != 0 {
		t.Errorf("the REST connection opened before the rotation has serial %v, want the old %v", s, oldSerial)
	}
	if s := callGRPC(); s.Cmp(oldSerial) != 0 {
		t.Errorf("the gRPC connection opened before the rotation has serial %v, want the old %v", s, oldSerial)
	}
	// A new client gets the new one and is served.
	resp, err := httpsClient(p.client(nil), false).Get("https://" + restAddr + "/v1/products/prd-000001")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(want) != 0 {
		t.Errorf("a new REST client: %d, serial %v, want 200 with %v", resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber, want)
	}
}

// TestTLSCorruptCertificateKeepsTheOld: a certificate file that does not
// load leaves the current certificate in force, and is counted.
func TestTLSCorruptCertificateKeepsTheOld(t *testing.T) {
	p := newPKI(t)
	w := newWorld(t, false, func(c *gateway.Config) { c.TLS = p.listener(false) })
	addr := w.gw.HTTPAddr()
	serial := servedSerial(t, addr, p.client(nil, "http/1.1"))
	if serial == nil {
		t.Fatal("no handshake before the corruption")
	}
	if err := os.WriteFile(p.certFile, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const series = `portico_tls_reload_errors_total{tls="listener"}`
	testutil.Eventually(t, 20*time.Second, "the failed reload to be counted", func() bool {
		m, _ := scrape(t, w)
		return m[series] >= 1
	})
	if s := servedSerial(t, addr, p.client(nil, "http/1.1")); s == nil || s.Cmp(serial) != 0 {
		t.Errorf("after a corrupt certificate file, new connections see %v, want the old %v", s, serial)
	}
	if s := servedSerial(t, w.gw.GRPCAddr(), p.client(nil, "h2")); s == nil || s.Cmp(serial) != 0 {
		t.Errorf("after a corrupt certificate file, new gRPC connections see %v, want the old %v", s, serial)
	}
}

// TestAdminToken: with admin_token_file, every admin route but the probes
// wants the bearer token; over TLS (admin_tls) with HTTP/1.1 and h2.
func TestAdminToken(t *testing.T) {
	p := newPKI(t)
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	const token = "s3cret-admin-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, false, func(c *gateway.Config) {
		c.AdminTLS = p.listener(false)
		c.AdminTokenFile = tokenFile
	})
	base := "https://" + w.gw.AdminAddr()
	for _, h2 := range []bool{false, true} {
		client := httpsClient(p.client(nil), h2)
		call := func(path, auth string) (int, string) {
			t.Helper()
			req, _ := http.NewRequest("GET", base+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
				t.Errorf("GET %s over %s, want HTTP/%d", path, resp.Proto, want)
			}
			return resp.StatusCode, string(body)
		}
		for _, path := range []string{"/metrics", "/routes", "/admin/v1/routes", "/"} {
			for _, auth := range []string{"", "Bearer wrong", "Basic " + token, "Bearer " + token + "x", "Bearer"} {
				if code, body := call(path, auth); code != http.StatusUnauthorized || !strings.Contains(body, "admin_token_file") {
					t.Errorf("GET %s with %q = %d %s, want 401 naming admin_token_file", path, auth, code, body)
				}
			}
			if code, _ := call(path, "Bearer "+token); code != 200 {
				t.Errorf("GET %s with the token = %d, want 200", path, code)
			}
			if code, _ := call(path, "bearer "+token); code != 200 {
				t.Errorf("GET %s with the token (scheme in lower case) = %d, want 200", path, code)
			}
		}
		// The probes stay open: a kubelet or a load balancer carries no token.
		if code, _ := call("/healthz", ""); code != 200 {
			t.Errorf("/healthz without the token = %d, want 200", code)
		}
		if code, body := call("/readyz", ""); code == http.StatusUnauthorized {
			t.Errorf("/readyz without the token = %d %s, want it open", code, body)
		}
	}

	// The admin gRPC API (h2 over TLS) wants the token too.
	adm := adminv1.NewAdminServiceClient(dialTLS(t, w.gw.AdminAddr(), p.client(nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := adm.GetBuildInfo(ctx, &adminv1.GetBuildInfoRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("admin gRPC without the token: %v, want UNAUTHENTICATED", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	if _, err := adm.GetBuildInfo(ctx, &adminv1.GetBuildInfoRequest{}); err != nil {
		t.Errorf("admin gRPC with the token: %v", err)
	}

	// Plain HTTP to the admin TLS port is refused.
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatalf("plain HTTP to the admin TLS port: %v, want an answer saying why", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the admin TLS port = %d, want 400", resp.StatusCode)
	}
}

// TestAdminPublicAddressNeedsToken: an admin listener other hosts can
// reach needs a token, or the gateway does not start.
func TestAdminPublicAddressNeedsToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("  tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr, token string
		err         string // "" when New accepts it
	}{
		{"0.0.0.0:9901", "", "bind admin_addr to 127.0.0.1"},
		{":9901", "", "set admin_token_file"},
		{"[::]:9901", "", "admin_token_file"},
		{"10.1.2.3:9901", "", "admin_token_file"},
		{"admin.internal:9901", "", "admin_token_file"},
		{"0.0.0.0:9901", tokenFile, ""},
		{"0.0.0.0:9901", empty, "is empty"},
		{"0.0.0.0:9901", filepath.Join(t.TempDir(), "missing"), "admin_token_file"},
		{"127.0.0.1:9901", "", ""},
		{"127.0.0.2:9901", "", ""},
		{"[::1]:9901", "", ""},
		{"localhost:9901", "", ""},
	} {
		_, err := gateway.New(gateway.Config{AdminAddr: tc.addr, AdminTokenFile: tc.token,
			Consul: discovery.ConsulConfig{Address: "127.0.0.1:1"}}, registry.Services())
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("admin_addr %s, token %q: %v", tc.addr, tc.token, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("admin_addr %s, token %q: %v, want an error with %q", tc.addr, tc.token, err, tc.err)
		}
	}
}

// TestTLSConfigRefused: tls without its files, or with files that do not
// load, stops New with the key named.
func TestTLSConfigRefused(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		cfg gateway.Config
		err string
	}{
		{gateway.Config{TLS: &tlsconfig.Config{CertFile: p.certFile}}, "tls needs cert_file and key_file"},
		{gateway.Config{AdminTLS: &tlsconfig.Config{KeyFile: p.keyFile}}, "admin_tls needs cert_file and key_file"},
		{gateway.Config{TLS: &tlsconfig.Config{CertFile: p.certFile, KeyFile: p.keyFile, MinVersion: "1.1"}}, "min_version"},
		{gateway.Config{TLS: &tlsconfig.Config{CertFile: p.certFile, KeyFile: p.caFile}}, p.caFile},
		{gateway.Config{TLS: &tlsconfig.Config{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.keyFile}}, "no PEM certificate"},
	} {
		tc.cfg.Consul.Address = "127.0.0.1:1"
		if _, err := gateway.New(tc.cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: %v, want an error with %q", tc.cfg, err, tc.err)
		}
	}
}

// grepLines is the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
