package gateway

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// listenerTLS is the TLS of the gateway's listeners (config keys tls and
// admin_tls) and the admin token. It is one of the gateway's parts, so
// whoever needs it finds it there; the certificate sources are parts of
// their own, started and closed with the gateway.
type listenerTLS struct {
	metrics *tlsconfig.Metrics
	logger  *slog.Logger

	client    *tlsconfig.Source // the REST and gRPC listeners; nil: plaintext
	clientMin uint16
	admin     *tlsconfig.Source // the admin listener; nil: plaintext
	adminMin  uint16

	adminToken *admin.Token // nil: none
}

// setupTLS loads the listeners' certificates and the admin token, and
// refuses an admin listener that other hosts can reach without a token.
// It reads files but opens no socket.
func (g *Gateway) setupTLS(reg prometheus.Registerer) error {
	if err := g.cfg.checkTLS(); err != nil {
		return err
	}
	if len(g.cfg.Auth.ClientCertificates) > 0 && (g.cfg.TLS == nil || g.cfg.TLS.ClientCAFile == "") {
		g.opts.logger.Warn("auth.client_certificates name consumers, but without tls.client_ca_file no client certificate is verified, so none is a credential")
	}
	m, err := tlsconfig.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("tls metrics: %w", err)
	}
	t := &listenerTLS{metrics: m, logger: g.opts.logger}
	opts := []tlsconfig.Option{tlsconfig.WithLogger(g.opts.logger), tlsconfig.WithMetrics(m)}
	if c := g.cfg.TLS; c != nil {
		if t.client, t.clientMin, err = tlsconfig.Listener("listener", *c, opts...); err != nil {
			return fmt.Errorf("%s: %w", g.cfg.where(), err)
		}
		g.parts = append(g.parts, t.client)
	}
	if c := g.cfg.AdminTLS; c != nil {
		if t.admin, t.adminMin, err = tlsconfig.Listener("admin", *c, opts...); err != nil {
			return fmt.Errorf("%s: %w", g.cfg.where(), err)
		}
		g.parts = append(g.parts, t.admin)
	}
	if f := g.cfg.AdminTokenFile; f != "" {
		if t.adminToken, err = admin.LoadToken(f); err != nil {
			return fmt.Errorf("%s: %w", g.cfg.where(), err)
		}
	}
	// The metrics are a part too: backend TLS reports into the same
	// series, which a registry takes only once.
	g.parts = append(g.parts, t, m)
	return nil
}

// listenerTLS is the part setupTLS added.
func (g *Gateway) listenerTLS() *listenerTLS {
	if t, ok := find[*listenerTLS](g.parts); ok {
		return t
	}
	return &listenerTLS{}
}

// grpcTLS is the gRPC server's transport credentials when the client
// listeners serve TLS: h2 by ALPN, and a client certificate when tls has
// a client_ca_file.
func (g *Gateway) grpcTLS() []grpc.ServerOption {
	t := g.listenerTLS()
	if t.client == nil {
		return nil
	}
	creds := tlsconfig.ServerCredentials(t.client.ServerConfig(t.clientMin, "h2"), t.handshakeFailed("grpc"))
	return []grpc.ServerOption{grpc.Creds(g.edge.GRPCCredentials(creds))} // the rapid-reset guard on the decrypted frames
}

// restListener is the REST listener l (the edge's, over TCP) with TLS on
// top; srv is made to serve h2 as well as HTTP/1.1. tls must be set.
func (t *listenerTLS) restListener(srv *http.Server, l net.Listener) net.Listener {
	return t.serveTLS("rest", srv, l, t.client.ServerConfig(t.clientMin, "h2", "http/1.1"))
}

// adminListener is the admin listener l with TLS on top when admin_tls
// is set: h2 by ALPN (the admin gRPC API) and HTTP/1.1.
func (t *listenerTLS) adminListener(srv *http.Server, l net.Listener) net.Listener {
	if t.admin == nil {
		return l
	}
	return t.serveTLS("admin", srv, l, t.admin.ServerConfig(t.adminMin, "h2", "http/1.1"))
}

func (t *listenerTLS) serveTLS(name string, srv *http.Server, l net.Listener, cfg *tls.Config) net.Listener {
	return tlsconfig.HTTPListener(srv, l, cfg, t.handshakeFailed(name))
}

func (t *listenerTLS) handshakeFailed(name string) func(net.Addr, error) {
	return t.metrics.HandshakeFailed(name, t.logger)
}
