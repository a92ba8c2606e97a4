package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// dialBackends makes one connection per backend target, resolved by the
// Consul resolver and balanced round robin over healthy instances, each
// instance dialled with TLS or in plaintext (backendCredentials).
func (g *Gateway) dialBackends() error {
	ropts := append([]discovery.Option{discovery.WithLogger(g.opts.logger)}, g.opts.resolverOpts...)
	for _, o := range all[interface{ Observer() discovery.Observer }](g.parts) {
		ropts = append(ropts, discovery.WithObserver(o.Observer()))
	}
	builder := discovery.NewBuilder(g.consul, ropts...)
	sources := backendSources{g: g, byFiles: map[tlsconfig.Files]*tlsconfig.Source{}}
	// The TLS metrics are registered with the listeners' TLS, when a part offers them.
	sources.m, _ = find[*tlsconfig.Metrics](g.parts)
	tlsBy := map[string]*route.Route{} // the first route of each target: whose TLS it has
	for _, r := range g.routes.All() {
		if first, ok := tlsBy[r.Target()]; ok {
			if !sameBackendTLS(first.TLS, r.TLS) {
				g.closeConns()
				return fmt.Errorf("gateway: %s: services %s and %s share backend %s but set different tls",
					g.cfg.where(), first.Service, r.Service, r.Target())
			}
			continue
		}
		tlsBy[r.Target()] = r
		creds, err := sources.credentials(r)
		if err != nil {
			g.closeConns()
			return fmt.Errorf("gateway: backend %s: %w", r.Target(), err)
		}
		conn, err := grpc.NewClient(r.Target(),
			grpc.WithResolvers(builder),
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
			grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
		)
		if err != nil {
			g.closeConns()
			return fmt.Errorf("gateway: backend %s: %w", r.Target(), err)
		}
		g.backends[r.Target()] = conn
	}
	return nil
}

// sameBackendTLS reports whether two services' own backend TLS settings
// are the same (nil: both take backend_tls).
func sameBackendTLS(a, b *tlsconfig.BackendConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// backendSources loads the certificate files of backend TLS, once per set
// of files however many backends share it (backend_tls is usually shared
// by all). Sources with files join the gateway's parts, which start their
// reloading and stop it.
type backendSources struct {
	g       *Gateway
	byFiles map[tlsconfig.Files]*tlsconfig.Source
	m       *tlsconfig.Metrics // nil when no part offers them
}

func (s backendSources) source(name string, files tlsconfig.Files) (*tlsconfig.Source, error) {
	none := files == (tlsconfig.Files{}) // system roots, no certificate: nothing to share or watch
	if src, ok := s.byFiles[files]; ok && !none {
		return src, nil
	}
	opts := []tlsconfig.Option{tlsconfig.WithLogger(s.g.opts.logger)}
	if s.m != nil {
		opts = append(opts, tlsconfig.WithMetrics(s.m))
	}
	src, err := tlsconfig.New(name, files, opts...)
	if err != nil {
		return nil, err
	}
	if !none {
		s.byFiles[files] = src
		s.g.parts = append(s.g.parts, src)
	}
	return src, nil
}

// credentials are the transport credentials of r's backend: its service's
// tls, else backend_tls, else none, with the instance's Consul mark
// deciding over them (discovery.TLSMeta).
func (s backendSources) credentials(r *route.Route) (*backendCredentials, error) {
	name, key, cfg := "backend "+r.Backend, "services."+r.Service+".tls", r.TLS
	if cfg == nil && s.g.cfg.BackendTLS != nil {
		name, key, cfg = "backend", "backend_tls", s.g.cfg.BackendTLS
	}
	configured := cfg != nil
	if cfg == nil {
		// Only instances marked TLS use it: verified against the system
		// roots, presenting no certificate.
		cfg = &tlsconfig.BackendConfig{}
	}
	src, err := s.source(name, tlsconfig.Files{Cert: cfg.CertFile, Key: cfg.KeyFile, CA: cfg.CAFile})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", s.g.cfg.where(), key, err)
	}
	serverName := cfg.ServerName
	if serverName == "" {
		serverName = r.Backend
	}
	c := &backendCredentials{
		name:  name,
		tls:   credentials.NewTLS(src.ClientConfig(serverName)),
		plain: insecure.NewCredentials(),
		m:     s.m,
	}
	c.unmarked = c.plain
	if configured {
		c.unmarked = c.tls
	}
	return c, nil
}

// backendCredentials dial each instance of one backend with TLS or in
// plaintext. grpc-go takes one TransportCredentials per ClientConn, and
// the gateway has one ClientConn per backend; the choice per instance is
// made at each handshake from the address's attributes, where the
// resolver put the instance's Consul mark. A marked instance is dialled
// as its mark says; an unmarked one with TLS when its service has TLS
// configured. So a fleet moves to TLS one instance at a time, each new
// instance registered with portico-tls=true and each old one with false,
// while the configuration already names the certificates.
type backendCredentials struct {
	name     string // the TLS source's name, for metrics
	tls      credentials.TransportCredentials
	plain    credentials.TransportCredentials
	unmarked credentials.TransportCredentials // tls or plain
	m        *tlsconfig.Metrics               // nil: not counted
}

var _ credentials.TransportCredentials = (*backendCredentials)(nil)

func (c *backendCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	use := c.unmarked
	if on, marked := discovery.InstanceTLS(credentials.ClientHandshakeInfoFromContext(ctx).Attributes); marked {
		use = c.plain
		if on {
			use = c.tls
		}
	}
	tc, info, err := use.ClientHandshake(ctx, authority, conn)
	if err != nil && use == c.tls && c.m != nil && ctx.Err() == nil {
		c.m.Handshakes.WithLabelValues(c.name, handshakeReason(err)).Inc()
	}
	return tc, info, err
}

func (c *backendCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("gateway: backend credentials are for dialling only")
}

// Info is the unmarked instances' protocol (grpc-go sets :scheme from it)
// and no server name, which grpc-go would make the authority: the
// authority stays the backend's name whether or not server_name is set.
func (c *backendCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: c.unmarked.Info().SecurityProtocol}
}

func (c *backendCredentials) Clone() credentials.TransportCredentials {
	cc := *c
	return &cc
}

func (c *backendCredentials) OverrideServerName(string) error {
	return errors.New("gateway: set services.<name>.tls.server_name instead")
}

// handshakeReason names why a handshake with a backend failed, for
// portico_tls_handshake_failures_total, in the listeners' words
// (handshakeFailure) where they fit.
func handshakeReason(err error) string {
	var (
		unknown x509.UnknownAuthorityError
		name    x509.HostnameError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
		op      *net.OpError
		nerr    net.Error
	)
	switch {
	case errors.As(err, &unknown), errors.As(err, &name), errors.As(err, &invalid):
		return "bad_certificate" // the backend's certificate does not verify against ca_file for server_name
	case errors.As(err, &record):
		return "not_tls"
	case errors.As(err, &op) && op.Op == "remote error":
		return "backend_refused" // an alert from the backend: most often, it does not accept the gateway's certificate
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return "other"
}
