package tlsconfig

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"github.com/portico-gw/portico/discovery"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ServerCredentials are a gRPC server's credentials for cfg, reporting
// failed handshakes to failed. The gateway's one grpc.Server also serves the REST door's streams over an in-memory
// connection, which stays plaintext: a connection marked internal passes
// with insecure AuthInfo, every other one makes a TLS handshake (fail
// closed), and its peer's AuthInfo is credentials.TLSInfo.
type doorCreds struct {
	tls, plain credentials.TransportCredentials
	failed     func(net.Addr, error)
}

var _ credentials.TransportCredentials = (*doorCreds)(nil)

func ServerCredentials(cfg *tls.Config, failed func(net.Addr, error)) credentials.TransportCredentials {
	return &doorCreds{tls: credentials.NewTLS(cfg), plain: insecure.NewCredentials(), failed: failed}
}

func (c *doorCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if in, ok := conn.(internalConn); ok {
		return c.plain.ServerHandshake(in.Conn)
	}
	tc, info, err := c.tls.ServerHandshake(conn)
	if err != nil {
		c.failed(conn.RemoteAddr(), err)
	}
	return tc, info, err
}

func (c *doorCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconfig: server credentials are for serving only")
}

func (c *doorCreds) Info() credentials.ProtocolInfo { return c.tls.Info() }

func (c *doorCreds) Clone() credentials.TransportCredentials {
	return &doorCreds{tls: c.tls.Clone(), plain: c.plain.Clone(), failed: c.failed}
}

// OverrideServerName is unused by grpc-go (deprecated) and means nothing
// to a server.
func (c *doorCreds) OverrideServerName(string) error { return nil }

// Internal marks the connections of l, the in-memory listener that
// carries the REST door's streams, which ServerCredentials let through in
// plaintext.
func Internal(l net.Listener) net.Listener { return internalListener{l} }

type internalListener struct{ net.Listener }

type internalConn struct{ net.Conn }

func (l internalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return internalConn{c}, nil
}

// BackendCredentials dial each instance of one backend with TLS (cfg) or
// in plaintext; tlsByDefault says which an instance without a mark gets.
// Failed TLS handshakes are counted under name in m (nil: not counted). grpc-go takes one TransportCredentials per ClientConn, and
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
	m        *Metrics                         // nil: not counted
}

var _ credentials.TransportCredentials = (*backendCredentials)(nil)

func BackendCredentials(name string, cfg *tls.Config, tlsByDefault bool, m *Metrics) credentials.TransportCredentials {
	c := &backendCredentials{name: name, tls: credentials.NewTLS(cfg), plain: insecure.NewCredentials(), m: m}
	c.unmarked = c.plain
	if tlsByDefault {
		c.unmarked = c.tls
	}
	return c
}

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
		c.m.Handshakes.WithLabelValues(c.name, FailureReason(err, "backend")).Inc()
	}
	return tc, info, err
}

func (c *backendCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconfig: backend credentials are for dialling only")
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
	return errors.New("tlsconfig: set services.<name>.tls.server_name instead")
}
