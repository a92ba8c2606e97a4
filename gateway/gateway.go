package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/stats"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
)

// MaxRequestBytes is the largest request message the gateway takes: a REST
// body, or a gRPC message (grpc-go's default limit, which the gateway's
// server keeps).
const MaxRequestBytes = 4 << 20

// windowSize is the HTTP/2 flow-control window of every stream and
// connection, to clients and to backends. Fixed windows turn off grpc-go's
// bandwidth-delay estimation, whose PING frames cost a write and a read on
// both ends every few calls; 1 MiB lets a stream carry a 1 MiB message
// without waiting for a window update.
const windowSize = 1 << 20

// Option configures a Gateway.
type Option func(*options)

type options struct {
	logger       *slog.Logger
	unary        []grpc.UnaryServerInterceptor
	stream       []grpc.StreamServerInterceptor
	resolverOpts []discovery.Option
	noPolicies   bool
	statsOpts    []stats.Option // WithStatsOptions, in setup_stats.go
}

// WithLogger sets the gateway's logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithUnaryInterceptors appends policies to the unary chain. They run for
// REST and native gRPC calls alike, in the order given.
func WithUnaryInterceptors(i ...grpc.UnaryServerInterceptor) Option {
	return func(o *options) { o.unary = append(o.unary, i...) }
}

// WithStreamInterceptors appends policies to the stream chain.
func WithStreamInterceptors(i ...grpc.StreamServerInterceptor) Option {
	return func(o *options) { o.stream = append(o.stream, i...) }
}

// WithoutPolicies serves with no policy on the chain (no stats, auth, rate
// limit or validation): the baseline the chain's cost is measured against.
// Not for production.
func WithoutPolicies() Option { return func(o *options) { o.noPolicies = true } }

// WithResolverOptions tunes the Consul resolver (backoff, wait time).
func WithResolverOptions(opts ...discovery.Option) Option {
	return func(o *options) { o.resolverOpts = append(o.resolverOpts, opts...) }
}

// Gateway serves REST and native gRPC in front of Consul-discovered backends.
type Gateway struct {
	cfg      Config
	opts     options
	routes   []*Route
	byMethod map[string]*Route
	proxies  proxies
	consul   *api.Client

	grpcServer *grpc.Server
	health     *health.Server
	backends   map[string]*grpc.ClientConn // by target
	internal   *bufconn.Listener
	restConn   *grpc.ClientConn // the REST door's streams; unary calls are in process (rest.go)
	mux        *runtime.ServeMux

	httpServer  *http.Server
	adminServer *http.Server
	listeners   struct{ http, grpc, admin net.Listener }

	// Filled by the policies' setup functions (chain.go).
	policies    policies
	stats       *stats.Stats  // measures backend calls; nil when stats is off
	self        *registration // the gateway's own Consul entry; nil when off
	backendOpts []grpc.DialOption
	adminRoutes []adminRoute
	readiness   []readinessCheck
	starters    []starter
	closers     []closer

	ready    atomic.Bool
	stopping atomic.Bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New builds the route table and the servers. It does no network I/O and
// starts no goroutines; Start does.
func New(cfg Config, services []Service, opts ...Option) (*Gateway, error) {
	cfg = cfg.withDefaults()
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	routes, err := buildRoutes(services, cfg)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	consul, err := discovery.NewConsulClient(cfg.Consul)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	trusted, err := parseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", cfg.where(), err)
	}
	g := &Gateway{cfg: cfg, opts: o, routes: routes, proxies: trusted, consul: consul,
		byMethod: make(map[string]*Route, len(routes)), backends: map[string]*grpc.ClientConn{}}
	for _, r := range routes {
		g.byMethod[r.FullMethod] = r
	}

	g.self = newRegistration(cfg.Register)
	if err := g.setupPolicies(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	for _, p := range g.chainPolicies() {
		if s, ok := p.(starter); ok {
			g.starters = append(g.starters, s)
		}
		if c, ok := p.(closer); ok {
			g.closers = append(g.closers, c)
		}
	}

	// g.opts, not o: setup functions may add resolver options (stats observes the watches).
	builder := discovery.NewBuilder(consul, append([]discovery.Option{discovery.WithLogger(o.logger)}, g.opts.resolverOpts...)...)
	for _, r := range routes {
		if _, ok := g.backends[r.target()]; ok {
			continue
		}
		dialOpts := append([]grpc.DialOption{
			grpc.WithResolvers(builder),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newCodec())),
			grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
		}, g.backendOpts...)
		conn, err := grpc.NewClient(r.target(), dialOpts...)
		if err != nil {
			g.closeConns()
			return nil, fmt.Errorf("gateway: backend %s: %w", r.target(), err)
		}
		g.backends[r.target()] = conn
	}

	// The chain's order is fixed: see doc.go. A routed unary method's chain
	// also decodes its request, when anything reads it, right before
	// validation (proxy.go, decodeStep).
	unary := []grpc.UnaryServerInterceptor{errorSourceUnary, g.callUnary}
	stream := []grpc.StreamServerInterceptor{errorSourceStream, g.callStream}
	decodeAt := 0
	for _, p := range g.chainPolicies() {
		if p == g.policies.validate {
			decodeAt = len(unary)
		}
		unary = append(unary, p.UnaryServerInterceptor())
		stream = append(stream, p.StreamServerInterceptor())
	}
	if g.policies.validate == nil {
		decodeAt = len(unary)
	}
	unary = append(unary, o.unary...)
	stream = append(stream, o.stream...)
	// Messages are decoded only for what reads them (codec.go).
	modeOf := func(extra int) messageMode {
		switch {
		case extra > 0:
			return typed
		case g.policies.validate != nil:
			return forPolicies
		}
		return asBytes
	}
	proxies := newMethodProxies(routes, g.backends, g.stats, chainPlan{unary: unary, decodeAt: decodeAt},
		modeOf(len(o.unary)), modeOf(len(o.stream)))
	g.grpcServer = grpc.NewServer(grpc.UnaryInterceptor(chainUnary(unary)), grpc.ChainStreamInterceptor(stream...),
		grpc.ForceServerCodecV2(newCodec()),
		grpc.InitialWindowSize(windowSize), grpc.InitialConnWindowSize(windowSize))
	g.health = health.NewServer()
	healthpb.RegisterHealthServer(g.grpcServer, g.health)
	seen := map[string]bool{}
	for _, r := range routes {
		if seen[r.Service] {
			continue
		}
		seen[r.Service] = true
		g.grpcServer.RegisterService(proxyDesc(r.Service, routes, proxies), struct{}{})
		g.health.SetServingStatus(r.Service, healthpb.HealthCheckResponse_NOT_SERVING)
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
	g.mux = runtime.NewServeMux(
		runtime.WithErrorHandler(restErrorHandler),
		runtime.WithRoutingErrorHandler(restRoutingErrorHandler),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithMetadata(g.restAnnotator),
		runtime.WithOutgoingHeaderMatcher(outgoingHeader),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: &runtime.JSONPb{
				MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
				// Unknown fields are errors: a misspelt field must not be
				// dropped silently.
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
			},
		}),
	)
	rest := &restConn{proxies: proxies, streams: g.restConn}
	for _, svc := range services {
		if err := svc.RegisterHTTP(context.Background(), g.mux, rest); err != nil {
			g.closeConns()
			return nil, fmt.Errorf("gateway: REST routes of %s: %w", svc.Descriptor.FullName(), err)
		}
	}
	g.httpServer = &http.Server{Handler: limitBody(g.mux), ReadHeaderTimeout: 10 * time.Second}
	g.adminServer = &http.Server{Handler: g.adminHandler(), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	// HTTP/1.1 for browsers and curl; h2c (prior knowledge) for the admin gRPC API.
	g.adminServer.Protocols.SetHTTP1(true)
	g.adminServer.Protocols.SetUnencryptedHTTP2(true)
	return g, nil
}

// Routes returns the route table.
func (g *Gateway) Routes() []*Route { return g.routes }

// Start opens the listeners and serves until Shutdown. Listener errors are
// returned at once, so a taken port fails the start, not a later call.
func (g *Gateway) Start(ctx context.Context) error {
	var err error
	listen := func(addr string) net.Listener {
		if err != nil {
			return nil
		}
		var l net.Listener
		l, err = net.Listen("tcp", addr)
		return l
	}
	g.listeners.http = listen(g.cfg.HTTPAddr)
	g.listeners.grpc = listen(g.cfg.GRPCAddr)
	g.listeners.admin = listen(g.cfg.AdminAddr)
	if err != nil {
		for _, l := range []net.Listener{g.listeners.http, g.listeners.grpc, g.listeners.admin} {
			if l != nil {
				l.Close()
			}
		}
		return fmt.Errorf("gateway: %w", err)
	}
	ctx, g.cancel = context.WithCancel(ctx)
	for _, c := range g.backends {
		c.Connect()
	}
	// Policies start before the first call can arrive. One that cannot
	// start (say, a JWKS URL that does not parse) stops the gateway: serving
	// with half a policy would be worse than not serving.
	for _, s := range g.starters {
		if err := s.Start(ctx); err != nil {
			g.cancel()
			for _, c := range g.closers {
				_ = c.Close()
			}
			for _, l := range []net.Listener{g.listeners.http, g.listeners.grpc, g.listeners.admin} {
				l.Close()
			}
			return fmt.Errorf("gateway: starting policies: %w", err)
		}
	}
	g.serve("grpc", func() error { return g.grpcServer.Serve(g.listeners.grpc) })
	g.serve("grpc-internal", func() error { return g.grpcServer.Serve(g.internal) })
	g.serve("http", func() error { return g.httpServer.Serve(g.listeners.http) })
	g.serve("admin", func() error { return g.adminServer.Serve(g.listeners.admin) })
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.waitForConsul(ctx)
	}()

	g.register(ctx)
	g.opts.logger.Info("portico gateway started",
		"http", g.listeners.http.Addr().String(), "grpc", g.listeners.grpc.Addr().String(),
		"admin", g.listeners.admin.Addr().String(), "routes", len(g.routes))
	return nil
}

func (g *Gateway) serve(name string, fn func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) && !g.stopping.Load() {
			g.opts.logger.Error("listener failed", "listener", name, "error", err)
		}
	}()
}

// waitForConsul marks the gateway ready once Consul has answered.
func (g *Gateway) waitForConsul(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := g.consul.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(cctx))
		cancel()
		if err == nil {
			g.ready.Store(true)
			g.health.Resume()
			for _, r := range g.routes {
				g.health.SetServingStatus(r.Service, healthpb.HealthCheckResponse_SERVING)
			}
			g.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			return
		}
		if attempt == 0 || attempt%10 == 0 {
			g.opts.logger.Warn("waiting for consul", "address", g.consulAddr(), "error", err)
		}
		d := min(time.Duration(attempt+1)*200*time.Millisecond, 3*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (g *Gateway) consulAddr() string {
	if g.cfg.Consul.Address != "" {
		return g.cfg.Consul.Address
	}
	return "(CONSUL_HTTP_ADDR or 127.0.0.1:8500)"
}

// HTTPAddr, GRPCAddr and AdminAddr are the bound addresses after Start.
func (g *Gateway) HTTPAddr() string  { return g.listeners.http.Addr().String() }
func (g *Gateway) GRPCAddr() string  { return g.listeners.grpc.Addr().String() }
func (g *Gateway) AdminAddr() string { return g.listeners.admin.Addr().String() }

// Ready reports whether the route table is built and Consul has answered.
func (g *Gateway) Ready() bool { return g.ready.Load() && !g.stopping.Load() }

// Shutdown stops accepting calls, lets in-flight calls (streams included)
// finish until ctx ends, then stops hard. REST drains first, because its
// calls travel through the gRPC server.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopping.Store(true)
	g.health.Shutdown()
	var errs []error
	if err := g.deregister(ctx); err != nil {
		// Not fatal: Consul's check sees /readyz fail and drops the entry.
		g.opts.logger.Warn("deregistering from consul", "error", err)
	}
	if err := g.httpServer.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("rest: %w", err))
		g.httpServer.Close()
	}
	done := make(chan struct{})
	go func() {
		g.grpcServer.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("grpc: %w", ctx.Err()))
		g.grpcServer.Stop()
		<-done
	}
	if g.cancel != nil {
		g.cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.adminServer.Shutdown(sctx); err != nil {
		g.adminServer.Close()
	}
	for _, c := range g.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	g.closeConns()
	g.wg.Wait()
	return errors.Join(errs...)
}

func (g *Gateway) closeConns() {
	for _, c := range g.backends {
		c.Close()
	}
	if g.restConn != nil {
		g.restConn.Close()
	}
}

func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case g.stopping.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "shutting down"})
		case !g.ready.Load():
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "waiting for consul at " + g.consulAddr()})
		default:
			for _, check := range g.readiness {
				if reason := check(); reason != "" {
					writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason})
					return
				}
			}
			writeJSON(w, http.StatusOK, map[string]any{"ready": true})
		}
	})
	for _, r := range g.adminRoutes {
		mux.Handle(r.pattern, r.handler)
	}
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": g.routes})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ShutdownGrace is how long Shutdown should wait for in-flight calls.
func (g *Gateway) ShutdownGrace() time.Duration { return g.cfg.ShutdownGrace }
