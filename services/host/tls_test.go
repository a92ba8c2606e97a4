package host

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/portico-gw/portico/discovery"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/certs"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
)

// tlsFiles are a CA, a server certificate for "catalog" and 127.0.0.1, and
// client certificates, one signed by the CA and one by a stranger.
type tlsFiles struct {
	ca                  *certs.CA
	caFile              string
	certFile, keyFile   string
	client, strangerTLS tls.Certificate
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("catalog", "catalog", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("gateway")
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA("stranger CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Client("gateway")
	if err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{ca: ca, client: cli.TLS(), strangerTLS: stranger.TLS()}
	if f.caFile, err = ca.WriteFile(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	if f.certFile, f.keyFile, err = srv.WriteFiles(dir, "catalog"); err != nil {
		t.Fatal(err)
	}
	return f
}

func startTLSHost(t *testing.T, tc TLS) *Host {
	t.Helper()
	h, err := Start(testCtx(t), Config{
		Name:     "catalog",
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer()) },
		TLS:      tc,
	}, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(h.Kill)
	return h
}

// dialTLS connects over TLS, verifying the host against pool, presenting
// cert when it is not nil, even one the host's CA list does not name (Go
// would otherwise send none).
func dialTLS(t *testing.T, addr string, pool *x509.CertPool, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool, ServerName: "catalog", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return dialWith(t, addr, credentials.NewTLS(cfg))
}

func dialWith(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// getProduct returns the answer's header, or on an error its trailer: what
// carries the instance id.
func getProduct(ctx context.Context, conn *grpc.ClientConn) (metadata.MD, error) {
	var header, trailer metadata.MD
	_, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return trailer, err
	}
	return header, err
}

func TestTLSServesOnlyTLS(t *testing.T) {
	ctx := testCtx(t)
	f := newTLSFiles(t)
	h := startTLSHost(t, TLS{CertFile: f.certFile, KeyFile: f.keyFile})

	header, err := getProduct(ctx, dialTLS(t, h.Addr(), f.ca.Pool(), nil))
	if err != nil {
		t.Fatalf("GetProduct over TLS without a client CA: %v", err)
	}
	wantInstanceID(t, header, h.ID(), "TLS call")
	if _, err := getProduct(ctx, dialWith(t, h.Addr(), insecure.NewCredentials())); status.Code(err) != codes.Unavailable {
		t.Errorf("GetProduct in plaintext to a TLS host = %v, want Unavailable", err)
	}
}

// With a client CA, only a client that CA signed reaches the service; a
// client without a certificate reaches health and nothing else (Consul's
// check is one), and a certificate from another CA fails the handshake.
func TestTLSClientCA(t *testing.T) {
	ctx := testCtx(t)
	f := newTLSFiles(t)
	h := startTLSHost(t, TLS{CertFile: f.certFile, KeyFile: f.keyFile, ClientCAFile: f.caFile})

	t.Run("signed client", func(t *testing.T) {
		conn := dialTLS(t, h.Addr(), f.ca.Pool(), &f.client)
		header, err := getProduct(ctx, conn)
		if err != nil {
			t.Fatalf("GetProduct: %v", err)
		}
		wantInstanceID(t, header, h.ID(), "signed client")
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Errorf("reflection with a client certificate: %v", err)
		}
	})

	t.Run("no certificate", func(t *testing.T) {
		conn := dialTLS(t, h.Addr(), f.ca.Pool(), nil)
		hc := healthpb.NewHealthClient(conn)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health Check without a certificate = %v, %v; want SERVING", resp, err)
		}
		watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Watch without a certificate = %v, %v; want SERVING", resp, err)
		}

		// Identity metadata sent without a certificate gets nowhere.
		forged := metadata.AppendToOutgoingContext(ctx, "x-portico-consumer", "admin")
		header, err := getProduct(forged, conn)
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("GetProduct without a certificate = %v, want Unauthenticated", err)
		}
		wantInstanceID(t, header, h.ID(), "refused call")
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Errorf("reflection without a certificate = %v, want Unauthenticated", err)
		}
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		conn := dialTLS(t, h.Addr(), f.ca.Pool(), &f.strangerTLS)
		// Under TLS 1.3 the client learns of the refusal at its first read.
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("health Check with a stranger's certificate = %v, want Unavailable (handshake refused)", err)
		}
		if _, err := getProduct(ctx, conn); status.Code(err) != codes.Unavailable {
			t.Errorf("GetProduct with a stranger's certificate = %v, want Unavailable", err)
		}
	})

	t.Run("plaintext", func(t *testing.T) {
		conn := dialWith(t, h.Addr(), insecure.NewCredentials())
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("health Check in plaintext = %v, want Unavailable", err)
		}
		if _, err := getProduct(ctx, conn); status.Code(err) != codes.Unavailable {
			t.Errorf("GetProduct in plaintext = %v, want Unavailable", err)
		}
	})
}

// A rotated server certificate is what new connections get, without a
// restart.
func TestTLSReloadsTheCertificate(t *testing.T) {
	f := newTLSFiles(t)
	h := startTLSHost(t, TLS{CertFile: f.certFile, KeyFile: f.keyFile})
	served := func() string {
		// Each look has its own deadline: the wait below may outlast one.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: f.ca.Pool(), ServerName: "catalog", MinVersion: tls.VersionTLS12})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			return err.Error()
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "catalog" {
		t.Fatalf("served %q, want the certificate of CN catalog", got)
	}
	next, err := f.ca.Server("catalog-rotated", "catalog", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// Written aside and renamed, as a deployment would: never half a file.
	dir := t.TempDir()
	c, k, err := next.WriteFiles(dir, "next")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(k, f.keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(c, f.certFile); err != nil {
		t.Fatal(err)
	}
	// The files are looked at every 2s; a loaded machine may need several.
	testutil.Eventually(t, 30*time.Second, "a new connection to get the rotated certificate", func() bool {
		return served() == "catalog-rotated"
	})
}

func TestTLSStartErrors(t *testing.T) {
	ctx := testCtx(t)
	f := newTLSFiles(t)
	noop := func(*grpc.Server) {}
	for name, tc := range map[string]TLS{
		"client CA alone":   {ClientCAFile: f.caFile},
		"certificate alone": {CertFile: f.certFile},
		"missing file":      {CertFile: filepath.Join(t.TempDir(), "nope.crt"), KeyFile: f.keyFile},
		"key of another":    {CertFile: f.certFile, KeyFile: f.caFile},
	} {
		if h, err := Start(ctx, Config{Name: "x", Register: noop, TLS: tc}, nil); err == nil {
			h.Kill()
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

func TestTLSFlags(t *testing.T) {
	fs := flag.NewFlagSet("catalog", flag.ContinueOnError)
	got := TLSFlags(fs)
	if err := fs.Parse([]string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-client-ca", "ca.pem"}); err != nil {
		t.Fatal(err)
	}
	if want := (TLS{CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem"}); *got != want {
		t.Errorf("TLSFlags = %+v, want %+v", *got, want)
	}
	if (TLS{}).Enabled() {
		t.Error("the zero TLS is enabled")
	}
}

// startConsulTLSHost starts a catalog named name that requires client
// certificates signed by f's CA, registered in Consul with a short check,
// and waits until Consul passes it; it returns the host and its entry.
func startConsulTLSHost(t *testing.T, client *api.Client, name string, f tlsFiles) (*Host, *api.ServiceEntry) {
	t.Helper()
	h, err := Start(testCtx(t), Config{
		Name:          name,
		Register:      func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer()) },
		CheckInterval: 200 * time.Millisecond,
		TLS:           TLS{CertFile: f.certFile, KeyFile: f.keyFile, ClientCAFile: f.caFile},
	}, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)
	var entry *api.ServiceEntry
	testutil.Eventually(t, 10*time.Second, "consul to pass the TLS instance", func() bool {
		entries, _, err := client.Health().Service(name, "", true, nil)
		if err != nil {
			return false
		}
		i := slices.IndexFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == h.ID() })
		if i < 0 {
			return false
		}
		entry = entries[i]
		return true
	})
	return h, entry
}

// Consul's gRPC check reaches a host that requires client certificates:
// over TLS, without one, to health. The entry says the instance serves TLS.
func TestTLSHostPassesConsulCheck(t *testing.T) {
	_, entry := startConsulTLSHost(t, testconsul.New(t).Client(t), "catalog", newTLSFiles(t))
	if got := entry.Service.Meta[discovery.TLSMeta]; got != "true" {
		t.Errorf("meta %s = %q, want true", discovery.TLSMeta, got)
	}
}
