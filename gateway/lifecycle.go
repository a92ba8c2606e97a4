package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/registration"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// What a part (a policy, the admin API) may offer besides interceptors.
type (
	// starter has background work (key refresh, Consul watches): Start runs
	// before the first call can arrive, Close after the servers stopped.
	starter interface {
		Start(ctx context.Context) error
	}
	closer interface{ Close() error }
	// adminEndpoints are handlers for the admin listener.
	adminEndpoints interface{ AdminEndpoints() []admin.Endpoint }
	// readiness says why the gateway should not take traffic, or "".
	readiness interface{ NotReady() string }
)

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
	closeListeners := func() {
		for _, l := range []net.Listener{g.listeners.http, g.listeners.grpc, g.listeners.admin} {
			if l != nil {
				l.Close()
			}
		}
	}
	if err != nil {
		closeListeners()
		return fmt.Errorf("gateway: %w", err)
	}
	ctx, g.cancel = context.WithCancel(ctx)
	for _, c := range g.backends {
		c.Connect()
	}
	// A part that cannot start (say, a JWKS URL that does not parse) stops
	// the gateway: serving with half a policy would be worse than not serving.
	for _, s := range all[starter](g.parts) {
		if err := s.Start(ctx); err != nil {
			g.cancel()
			for _, c := range all[closer](g.parts) {
				_ = c.Close()
			}
			closeListeners()
			return fmt.Errorf("gateway: starting policies: %w", err)
		}
	}
	// The client listeners, each capped in open connections, with TLS on
	// top when it is set: the gRPC server's credentials make the handshake
	// (tls.go), except on the REST door's in-memory connection.
	t := g.listenerTLS()
	var internal net.Listener = g.internal
	rest := g.edge.HTTPListener(g.listeners.http)
	if t.client != nil {
		internal = tlsconfig.Internal(g.internal)
		// The edge reads HTTP/1 framing where the requests are readable:
		// above TLS.
		rest = g.edge.FramedListener(t.restListener(g.httpServer, rest))
	}
	adm := t.adminListener(g.adminServer, g.listeners.admin)
	g.serve("grpc", func() error { return g.grpcServer.Serve(g.edge.GRPCListener(g.listeners.grpc)) })
	g.serve("grpc-internal", func() error { return g.grpcServer.Serve(internal) })
	g.serve("http", func() error { return g.httpServer.Serve(rest) })
	g.serve("admin", func() error { return g.adminServer.Serve(adm) })
	g.wg.Go(func() { g.waitForConsul(ctx) })
	g.self.Start(ctx, g.consul, registration.Listeners{HTTP: g.listeners.http.Addr(), GRPC: g.listeners.grpc.Addr(), Admin: g.listeners.admin.Addr()},
		g.opts.logger, g.opts.resolverOpts...)
	g.opts.logger.Info("portico gateway started",
		"http", g.listeners.http.Addr().String(), "grpc", g.listeners.grpc.Addr().String(),
		"admin", g.listeners.admin.Addr().String(), "routes", len(g.routes.All()),
		"tls", t.client != nil, "admin_tls", t.admin != nil, "admin_token", t.adminToken != nil)
	return nil
}

func (g *Gateway) serve(name string, fn func() error) {
	g.wg.Go(func() {
		if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) && !g.stopping.Load() {
			g.opts.logger.Error("listener failed", "listener", name, "error", err)
		}
	})
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
			for _, svc := range g.routes.Services() {
				g.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
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

// Shutdown drains the gateway as Envoy does. /readyz fails at once and
// the gateway leaves Consul, but the listeners keep serving for the drain
// delay, so load balancers move on before anyone is refused. Then gRPC
// clients get GOAWAY and REST connections lose keep-alive, and calls in
// flight (streams included) may finish until ctx ends. Streams still open
// then are ended by the gateway with UNAVAILABLE (SHUTTING_DOWN), REST
// ones with a final error object, before everything stops hard.
func (g *Gateway) Shutdown(ctx context.Context) error {
	defer g.endStreams()
	g.stopping.Store(true)
	g.health.Shutdown()
	var errs []error
	if err := g.self.Stop(ctx); err != nil {
		// Not fatal: Consul's check sees /readyz fail and drops the entry.
		g.opts.logger.Warn("deregistering from consul", "error", err)
	}
	drain := g.cfg.DrainDelay
	if dl, ok := ctx.Deadline(); ok {
		drain = min(drain, time.Until(dl)/2) // leave calls half the grace
	}
	select {
	case <-time.After(drain):
	case <-ctx.Done():
	}

	done := make(chan struct{})
	go func() {
		g.grpcServer.GracefulStop() // REST streams ride on it too
		close(done)
	}()
	restDone := make(chan error, 1)
	go func() { restDone <- g.httpServer.Shutdown(context.Background()) }()
	select {
	case <-done:
	case <-ctx.Done():
		// The grace is over: streams end with the gateway's status, which
		// takes a moment to reach their clients, then everything stops.
		g.endStreams()
		select {
		case <-done:
		case <-time.After(time.Second):
			errs = append(errs, fmt.Errorf("grpc: %w", ctx.Err()))
			g.grpcServer.Stop()
			<-done
		}
	}
	select {
	case err := <-restDone:
		if err != nil {
			errs = append(errs, fmt.Errorf("rest: %w", err))
		}
	case <-time.After(time.Second):
		errs = append(errs, errors.New("rest: connections still open at the end of the grace"))
		g.httpServer.Close()
	}
	if g.cancel != nil {
		g.cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.adminServer.Shutdown(sctx); err != nil {
		g.adminServer.Close()
	}
	for _, c := range all[closer](g.parts) {
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

// adminHandler serves /healthz, /readyz, /routes and what the parts offer:
// /metrics, the admin page and API, the rate limiter's numbers.
func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		notReady := func(reason string) {
			admin.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason})
		}
		switch {
		case g.stopping.Load():
			notReady("shutting down")
			return
		case !g.ready.Load():
			notReady("waiting for consul at " + g.consulAddr())
			return
		}
		for _, p := range all[readiness](g.parts) {
			if reason := p.NotReady(); reason != "" {
				notReady(reason)
				return
			}
		}
		admin.WriteJSON(w, http.StatusOK, map[string]any{"ready": true})
	})
	for _, p := range all[adminEndpoints](g.parts) {
		for _, e := range p.AdminEndpoints() {
			mux.Handle(e.Pattern, e.Handler)
		}
	}
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, map[string]any{"routes": g.routes.All()})
	})
	return admin.HostsOnly(g.cfg.AdminHosts, g.listenerTLS().adminToken.Only(mux))
}
