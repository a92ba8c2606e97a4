package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/compose"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/registration"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/web"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // clients may send and accept gzip: the gateway supports it on purpose
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// windowSize is the HTTP/2 flow-control window of every stream and
// connection, to clients and to backends. Fixed windows turn off grpc-go's
// bandwidth-delay estimation, whose PING frames cost a write and a read on
// both ends every few calls; 1 MiB lets a stream carry a 1 MiB message
// without waiting for a window update.
const windowSize = 1 << 20

// Gateway serves REST and native gRPC in front of Consul-discovered backends.
type Gateway struct {
	cfg    Config
	opts   options
	routes *route.Table
	edge   *edge.Edge
	consul *api.Client
	self   *registration.Entry // the gateway's own Consul entry; nil when off

	// parts are the policies and the admin API: what they offer besides
	// interceptors (lifecycle.go) is found by interface.
	parts []any

	grpcServer *grpc.Server
	health     *health.Server
	backends   map[string]*backend.Conn // by target
	internal   *bufconn.Listener        // the REST door's streams
	restConn   *grpc.ClientConn

	httpServer  *http.Server
	adminServer *http.Server
	listeners   struct{ http, grpc, admin net.Listener }

	// endStreams ends the streams still open when the grace is over.
	endStreams context.CancelFunc

	ready    atomic.Bool
	stopping atomic.Bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New builds the route table, the policies, the chain, the proxies and the
// two doors. It does no network I/O and starts no goroutines; Start does.
func New(cfg Config, services []Service, opts ...Option) (*Gateway, error) {
	cfg = cfg.withDefaults()
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	descs := make([]protoreflect.ServiceDescriptor, len(services))
	for i, s := range services {
		descs[i] = s.Descriptor
	}
	routes, err := route.Build(descs, cfg.routes())
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	plans, err := compose.New(routes, descs, compose.WithLogger(o.logger)) // composite methods, checked before anything starts
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	consul, err := discovery.NewConsulClient(cfg.Consul)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	trusted, err := clientip.Parse(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", cfg.where(), err)
	}
	g := &Gateway{cfg: cfg, opts: o, routes: routes, consul: consul, self: registration.New(cfg.Register),
		backends: map[string]*backend.Conn{}}

	// Each gateway has its own Prometheus registry, so tests can run many
	// gateways in one process.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	env := policy.Env{Consul: consul, Logger: o.logger, Registry: reg, Watch: o.resolverOpts, Self: g.self.Self()}
	if g.edge, err = edge.New(cfg.Limits, routes, reg); err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", cfg.where(), err)
	}
	if err := g.setupTLS(reg); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pols, err := policies(cfg, routes, env, o)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.parts = append(g.parts, endpoints{{Pattern: "GET /metrics", Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}})
	for _, p := range pols {
		g.parts = append(g.parts, p)
	}
	if err := g.addAdminAPI(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}

	if err := g.dialBackends(reg); err != nil {
		return nil, err
	}
	ch := chain.New(chain.Config{Routes: routes, Trusted: trusted, Policies: pols, Unary: o.unary, Stream: o.stream, Logger: o.logger})
	var proxyOpts []proxy.Option
	if m, ok := find[proxy.Meter](g.parts); ok {
		proxyOpts = append(proxyOpts, proxy.WithMeter(m))
	}
	var streams context.Context
	streams, g.endStreams = context.WithCancel(context.Background())
	proxyOpts = append(proxyOpts, proxy.WithLogger(o.logger), proxy.WithShutdown(streams),
		proxy.WithReadLimit(g.edge.Config().RequestReadTimeout, func() { g.edge.Refused("request_timeout") }))
	methods := map[string]*proxy.Method{}
	var list []*proxy.Method
	for _, r := range routes.All() {
		m := proxy.New(r, g.backends[r.Target()], ch.Mode(r.Streams()), slices.Concat(proxyOpts, []proxy.Option{proxy.WithHandler(plans.Handler(r))})...)
		if !r.Streams() {
			m.Bind(ch.Bind(r.FullMethod, m.DecodeStep()))
		}
		methods[r.FullMethod] = m
		list = append(list, m)
	}

	g.grpcServer = grpc.NewServer(slices.Concat(ch.ServerOptions(proxy.DecodeStream), g.edge.GRPCServerOptions(), g.grpcTLS(),
		[]grpc.ServerOption{grpc.ForceServerCodecV2(proxy.Codec()),
			grpc.InitialWindowSize(windowSize), grpc.InitialConnWindowSize(windowSize),
			// Streams run on long-lived workers whose stacks have grown,
			// not on a fresh goroutine each: stack copying was 13% of a
			// gRPC call's CPU samples at 32 in flight, 2% with 64 workers.
			// Past them grpc-go starts goroutines as before.
			grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0))))})...)
	g.health = health.NewServer()
	healthpb.RegisterHealthServer(g.grpcServer, g.health)
	for _, svc := range routes.Services() {
		g.grpcServer.RegisterService(proxy.ServiceDesc(svc, list), struct{}{})
		g.health.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	reflection.Register(g.grpcServer)

	// REST reaches the same chain: unary calls in process, streams over an
	// in-memory connection to the same grpc.Server.
	g.internal = bufconn.Listen(1 << 20)
	g.restConn, err = grpc.NewClient("passthrough:///portico-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.internal.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		g.closeConns()
		return nil, fmt.Errorf("gateway: internal connection: %w", err)
	}
	wb, err := web.New(web.Options{CORS: cfg.CORS, Services: cfg.Services, SSE: cfg.SSE, OpenAPI: cfg.OpenAPI, Document: o.openapi, Routes: routes.All(),
		GRPC: g.grpcServer, Edge: g.edge, Refusals: ch.Refusals(), Trusted: trusted, Logger: o.logger, Registry: reg})
	if err != nil {
		g.closeConns()
		return nil, fmt.Errorf("gateway: %s: %w", cfg.where(), err)
	}
	door := rest.New(rest.Config{Methods: methods, Streams: g.restConn, Trusted: trusted, Refusals: ch.Refusals(),
		Chain: ch, MaxHeaders: g.edge.Config().MaxHeaders, OnRefuse: g.edge.Refused, MuxOptions: wb.MuxOptions()})
	plans.Bind(door.Conn()) // steps run through the chain as their caller, as REST calls do
	for _, svc := range services {
		if err := svc.RegisterHTTP(context.Background(), door.Mux(), door.Conn()); err != nil {
			g.closeConns()
			return nil, fmt.Errorf("gateway: REST routes of %s: %w", svc.Descriptor.FullName(), err)
		}
	}
	g.httpServer = g.edge.HTTPServer(wb.Handler(door))
	g.adminServer = &http.Server{Handler: g.adminHandler(), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	// HTTP/1.1 for browsers and curl; h2c (prior knowledge) for the admin gRPC API.
	g.adminServer.Protocols.SetHTTP1(true)
	g.adminServer.Protocols.SetUnencryptedHTTP2(true)
	return g, nil
}

// addAdminAPI adds the admin page and API when a policy offers the live
// numbers it shows (stats), with the rate limiter's view when there is one.
func (g *Gateway) addAdminAPI() error {
	live, ok := find[admin.Live](g.parts)
	if !ok {
		return nil
	}
	opts := []admin.Option{admin.WithDefaultRateLimit(admin.RateLimit(g.cfg.DefaultRateLimit))}
	if rl, ok := find[admin.RateLimits](g.parts); ok {
		opts = append(opts, admin.WithRateLimits(rl))
	}
	opts = append(opts, admin.WithCredentialKinds(g.CredentialKinds()))
	adm, err := admin.New(admin.Routes(g.routes.All()), live, opts...)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	g.parts = append(g.parts, adm)
	return nil
}

// CredentialKinds are the credentials authenticated routes accept, as auth
// is configured: jwt, api_key, client_certificate.
func (g *Gateway) CredentialKinds() []string {
	if ck, ok := find[admin.CredentialKinds](g.parts); ok {
		return ck.CredentialKinds()
	}
	return nil
}

// Routes returns the route table.
func (g *Gateway) Routes() []*route.Route { return g.routes.All() }

// HTTPAddr, GRPCAddr and AdminAddr are the bound addresses after Start.
func (g *Gateway) HTTPAddr() string  { return g.listeners.http.Addr().String() }
func (g *Gateway) GRPCAddr() string  { return g.listeners.grpc.Addr().String() }
func (g *Gateway) AdminAddr() string { return g.listeners.admin.Addr().String() }

// Ready reports whether the route table is built and Consul has answered.
func (g *Gateway) Ready() bool { return g.ready.Load() && !g.stopping.Load() }

// ShutdownGrace is how long Shutdown should wait for in-flight calls.
func (g *Gateway) ShutdownGrace() time.Duration { return g.cfg.ShutdownGrace }

// endpoints are admin endpoints of the gateway's own: /metrics, and the
// backends' resilience view.
type endpoints []admin.Endpoint

func (e endpoints) AdminEndpoints() []admin.Endpoint { return e }

// find returns the first part that offers T.
func find[T any](parts []any) (T, bool) {
	for _, p := range parts {
		if t, ok := p.(T); ok {
			return t, true
		}
	}
	var zero T
	return zero, false
}

// all returns every part that offers T, in order.
func all[T any](parts []any) []T {
	var out []T
	for _, p := range parts {
		if t, ok := p.(T); ok {
			out = append(out, t)
		}
	}
	return out
}
