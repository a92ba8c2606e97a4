package gateway

import (
	"fmt"
	"strings"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// dialBackends makes one connection per backend target, resolved by the
// Consul resolver, balanced, retried and guarded as its services say
// (package backend), each instance dialled with TLS or in plaintext
// (tlsconfig.BackendCredentials).
func (g *Gateway) dialBackends(reg prometheus.Registerer) error {
	ropts := append([]discovery.Option{discovery.WithLogger(g.opts.logger)}, g.opts.resolverOpts...)
	for _, o := range all[interface{ Observer() discovery.Observer }](g.parts) {
		ropts = append(ropts, discovery.WithObserver(o.Observer()))
	}
	builder := discovery.NewBuilder(g.consul, ropts...)
	// The TLS metrics are registered with the listeners' TLS, when a part offers them.
	m, _ := find[*tlsconfig.Metrics](g.parts)
	sources := tlsconfig.NewSources(tlsconfig.WithLogger(g.opts.logger), tlsconfig.WithMetrics(m))
	metrics := backend.NewMetrics(reg)
	tlsBy := map[string]*route.Route{} // the first route of each target: its TLS and connection settings
	methods, byName, retries := map[string][]backend.Method{}, map[string]*backend.Conn{}, []backend.RouteRetry{}
	for _, r := range g.routes.All() {
		methods[r.Target()] = append(methods[r.Target()], backend.Method{Service: r.Service, Method: r.Method, Retry: r.Retry})
		retries = append(retries, backend.RouteRetry{Method: r.FullMethod, Retry: route.Retries(r)})
	}
	for _, r := range g.routes.All() {
		if r.Compose != nil {
			continue // served by the gateway (package compose)
		}
		if first, ok := tlsBy[r.Target()]; ok {
			if !sameBackendTLS(first.TLS, r.TLS) || !backend.SameConnection(first.Resilience, r.Resilience) {
				g.closeConns()
				return fmt.Errorf("gateway: %s: services %s and %s share backend %s but set different tls or connection settings "+
					"(retry_throttling, outlier_detection, max_concurrent_requests, load_balancing, hash_header, health_check)",
					g.cfg.where(), first.Service, r.Service, r.Target())
			}
			continue
		}
		tlsBy[r.Target()] = r
		creds, err := g.backendCredentials(sources, r, m)
		if err != nil {
			g.closeConns()
			return fmt.Errorf("gateway: backend %s: %w", r.Target(), err)
		}
		conn, err := backend.Dial(r.Target(), r.Backend, r.Resilience, methods[r.Target()], builder, metrics, g.opts.logger,
			grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
			grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
		)
		if err != nil {
			g.closeConns()
			return fmt.Errorf("gateway: backend %s: %w", r.Target(), err)
		}
		g.backends[r.Target()] = conn
		byName[strings.TrimPrefix(r.Target(), discovery.Scheme+":///")] = conn
	}
	g.parts = append(g.parts, endpoints{{Pattern: "GET /admin/v1/resilience", Handler: backend.NewView(byName, retries)}})
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

// credentials are the transport credentials of r's backend: its service's
// tls, else backend_tls, else none, with the instance's Consul mark
// deciding over them (discovery.TLSMeta).
func (g *Gateway) backendCredentials(sources *tlsconfig.Sources, r *route.Route, m *tlsconfig.Metrics) (credentials.TransportCredentials, error) {
	name, key, cfg := "backend "+r.Backend, "services."+r.Service+".tls", r.TLS
	if cfg == nil && g.cfg.BackendTLS != nil {
		name, key, cfg = "backend", "backend_tls", g.cfg.BackendTLS
	}
	configured := cfg != nil
	if cfg == nil {
		// Only instances marked TLS use it: verified against the system
		// roots, presenting no certificate.
		cfg = &tlsconfig.BackendConfig{}
	}
	src, started, err := sources.Get(name, tlsconfig.Files{Cert: cfg.CertFile, Key: cfg.KeyFile, CA: cfg.CAFile})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", g.cfg.where(), key, err)
	}
	if started {
		g.parts = append(g.parts, src) // the gateway starts and stops its reloading
	}
	serverName := cfg.ServerName
	if serverName == "" {
		serverName = r.Backend
	}
	return tlsconfig.BackendCredentials(name, src.ClientConfig(serverName), configured, m), nil
}
