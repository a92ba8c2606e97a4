package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// Client is a connection to a Consul service for an example service's own
// calls (orders to the catalog), with the TLS it dials with.
type Client struct {
	*grpc.ClientConn
	src *tlsconfig.Source // nil: plaintext
}

// Dial connects to service through Consul. With cfg, its instances are
// dialled as the gateway dials backends: with TLS, presenting cfg's
// certificate and verifying theirs for cfg.ServerName (default: the
// service's name), unless an instance's Consul meta portico-tls says
// otherwise; the files are reloaded when they change. Without cfg, in
// plaintext. Dial does no I/O but reading the files.
func Dial(consul *api.Client, service string, cfg *tlsconfig.BackendConfig, logger *slog.Logger) (*Client, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg == nil {
		cc, err := discovery.NewClient(consul, service)
		return &Client{ClientConn: cc}, err
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("host: a client certificate needs its key, and a key its certificate")
	}
	src, err := tlsconfig.New("client "+service, tlsconfig.Files{Cert: cfg.CertFile, Key: cfg.KeyFile, CA: cfg.CAFile},
		tlsconfig.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("host: TLS to %s: %w", service, err)
	}
	name := cfg.ServerName
	if name == "" {
		name = service
	}
	creds := tlsconfig.BackendCredentials("client "+service, src.ClientConfig(name), true, nil)
	cc, err := discovery.NewClient(consul, service, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	return &Client{ClientConn: cc, src: src}, nil
}

// Start watches the TLS files until Close.
func (c *Client) Start(ctx context.Context) error {
	if c.src == nil {
		return nil
	}
	return c.src.Start(ctx)
}

// Close closes the connection and stops watching the TLS files.
func (c *Client) Close() error {
	if c.src != nil {
		_ = c.src.Close()
	}
	return c.ClientConn.Close()
}
