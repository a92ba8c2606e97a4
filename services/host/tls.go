package host

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// TLS is how a Host serves TLS (flags -tls-cert, -tls-key and
// -tls-client-ca). The zero value serves plaintext.
type TLS struct {
	// CertFile and KeyFile are the instance's certificate and key, PEM;
	// with them the Host serves TLS only. They are reloaded when they
	// change, as the gateway's are.
	CertFile, KeyFile string
	// ClientCAFile admits only clients whose certificate this CA signed:
	// the gateway, so identity metadata (x-portico-consumer, ...) can come
	// from nowhere else. grpc.health.v1 is the one exception (see
	// requireClientCert).
	ClientCAFile string
}

// Enabled reports whether the Host serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// loadTLS loads the files once; the Source reloads them once started.
func loadTLS(name string, t TLS, logger *slog.Logger) (*tlsconfig.Source, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("TLS needs a certificate and its key (-tls-cert and -tls-key)")
	}
	return tlsconfig.New("host "+name, tlsconfig.Files{Cert: t.CertFile, Key: t.KeyFile, CA: t.ClientCAFile},
		tlsconfig.WithLogger(logger))
}

// serverCredentials serve the Source's certificate and, with a client CA,
// verify a client certificate when one is given (VerifyClientCertIfGiven,
// not RequireAndVerifyClientCert): a certificate that this CA did not sign
// fails the handshake, but a client with none gets through to
// requireClientCert, which lets it call health and nothing else.
//
// Consul's gRPC check is such a client. It cannot present a certificate
// of its own: Consul has no per-check certificate, only the agent-wide
// enable_agent_tls_for_checks, which presents the agent's own certificate,
// signed by Consul's CA. Trusting that CA here would let every Consul
// agent send identity metadata; a plaintext health port would be a second
// door. Answering health without a certificate tells a caller only that
// the instance serves, and keeps every other method gateway-only.
func serverCredentials(src *tlsconfig.Source) credentials.TransportCredentials {
	c := src.ServerConfig(tls.VersionTLS12, "h2")
	verified := c.GetConfigForClient
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg, err := verified(hello)
		if err == nil && cfg.ClientCAs != nil {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
		return cfg, err
	}
	return credentials.NewTLS(c)
}

// requireClientCert refuses, with Unauthenticated, every call but
// grpc.health.v1's from a client that presented no verified certificate.
// It goes on a server whose credentials verify the certificates given
// (serverCredentials with a client CA).
func requireClientCert() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	return selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(verifiedClient), notHealth),
		selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(verifiedClient), notHealth)
}

// verifiedClient is the AuthFunc of requireClientCert.
func verifiedClient(ctx context.Context) (context.Context, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			return ctx, nil
		}
	}
	return nil, status.Error(codes.Unauthenticated, "a client certificate signed by the service's client CA is required")
}
