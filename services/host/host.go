package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// DefaultAddr is where a Host listens when Config.Addr is empty: a free port
// on loopback, which is what tests and the local demo want.
const DefaultAddr = "127.0.0.1:0"

// stopGrace is how long Run lets in-flight calls finish on shutdown.
const stopGrace = 10 * time.Second

// Config describes the service a Host runs. It is a plain struct because its
// fields come from command-line flags.
type Config struct {
	// Name is the Consul service name, for example "catalog".
	Name string
	// Addr is the listen address; DefaultAddr when empty.
	Addr string
	// Register registers the service implementation on the server.
	Register func(*grpc.Server)
	// CheckInterval is how often Consul calls the health service; zero
	// keeps discovery's default. Tests shorten it so that a killed
	// instance turns critical quickly.
	CheckInterval time.Duration
	// Listener, when set, is served instead of a listener on Addr: fault
	// tests wrap one to break connections.
	Listener net.Listener
	// Logger receives what happens to the Consul entry after start: Consul
	// unreachable, or the entry lost and registered again, and TLS files
	// that do not reload. Run's logger when nil there, else slog.Default().
	Logger *slog.Logger
	// TLS serves the instance over TLS, and with a client CA only to
	// clients that CA signed; the zero value serves plaintext.
	TLS TLS
	// Faults make the instance misbehave on purpose (-fail-rate, -delay,
	// -hang-rate); the zero value behaves.
	Faults Faults
}

// Host is one running instance of a service.
type Host struct {
	id     string
	addr   net.Addr
	srv    *grpc.Server
	health *health.Server
	reg    *discovery.Registered // nil when running without Consul
	tls    *tlsconfig.Source     // nil when serving plaintext
	seen   received              // calls received, by full method
	faults atomic.Pointer[Faults]

	served   chan struct{} // closed when Serve has returned
	serveErr error         // Serve's result; read only after served is closed

	deregisterOnce sync.Once
	deregisterErr  error
}

// Start listens, starts serving and, if consul is not nil, registers the
// instance there. ctx bounds start-up only; the Host runs until Stop or Kill.
// Without a Consul client the Host just serves, which is what unit tests want.
func Start(ctx context.Context, cfg Config, consul *api.Client) (*Host, error) {
	if cfg.Name == "" {
		return nil, errors.New("host: Config.Name is required")
	}
	if cfg.Register == nil {
		return nil, errors.New("host: Config.Register is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Faults.Validate(); err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	var (
		opts   []grpc.ServerOption
		unary  []grpc.UnaryServerInterceptor
		stream []grpc.StreamServerInterceptor
		src    *tlsconfig.Source
	)
	if cfg.TLS.Enabled() {
		var err error
		if src, err = loadTLS(cfg.Name, cfg.TLS, logger); err != nil {
			return nil, fmt.Errorf("host: %s: %w", cfg.Name, err)
		}
		opts = append(opts, grpc.Creds(serverCredentials(src)))
		if cfg.TLS.ClientCAFile != "" {
			u, st := requireClientCert()
			unary, stream = append(unary, u), append(stream, st)
		}
	}
	lis := cfg.Listener
	if lis == nil {
		var lc net.ListenConfig
		var err error
		if lis, err = lc.Listen(ctx, "tcp", addr); err != nil {
			return nil, fmt.Errorf("host: %s: %w", cfg.Name, err)
		}
	}

	h := &Host{served: make(chan struct{})}
	// Faults come after the TLS check: a call it refuses never reached the
	// service. Every call that passes it is counted.
	h.faults.Store(&cfg.Faults)
	u, st := faultInterceptors(&h.faults, &h.seen)
	unary, stream = append(unary, u), append(stream, st)
	id := discovery.NewServiceID(cfg.Name)
	// The instance id goes first, so a refused call names the instance too.
	srv := grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{unaryInstanceID(id)}, unary...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{streamInstanceID(id)}, stream...)...),
	)...)
	cfg.Register(srv)

	// Health reports on "" (the whole server, which is what Consul's check
	// asks about) and on every service Register added, for clients that
	// check one service by name.
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for name := range srv.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	h.id, h.addr, h.srv, h.health, h.tls = id, lis.Addr(), srv, hs, src
	if src != nil {
		// Rotated files are picked up until Stop or Kill, which own it.
		_ = src.Start(context.Background())
	}
	go func() {
		defer close(h.served)
		h.serveErr = srv.Serve(lis)
	}()

	if consul == nil {
		return h, nil
	}
	// Registering after Serve has started lets Consul's first check pass.
	// The entry is kept: an agent that loses it (restarted empty, or it
	// dropped the instance after a long pause) gets it back within seconds.
	host, port := advertised(lis.Addr())
	serverName := ""
	if src != nil {
		serverName = cfg.Name
	}
	reg, err := discovery.Register(ctx, consul, discovery.Registration{
		Service:       cfg.Name,
		ID:            id,
		Address:       host,
		Port:          port,
		CheckInterval: cfg.CheckInterval,
		// The mark tells a gateway how to dial this instance, whatever its
		// configuration says for the service: a fleet moves to TLS one
		// instance at a time.
		Meta: map[string]string{discovery.TLSMeta: strconv.FormatBool(src != nil)},
		// Consul's check speaks TLS to a TLS instance, and health answers
		// it without a client certificate (serverCredentials). It does not
		// verify the certificate: Consul knows only its agent's CA or the
		// system roots, not the service's CA, and the check asks whether
		// the instance serves, not who it is; the gateway verifies the
		// certificate on every connection it makes.
		GRPCUseTLS:    src != nil,
		TLSServerName: serverName,
		TLSSkipVerify: src != nil,
	}, discovery.WithLogger(logger))
	if err != nil {
		h.Kill()
		return nil, fmt.Errorf("host: %s: %w", cfg.Name, err)
	}
	h.reg = reg
	return h, nil
}

// Addr is the address the Host listens on, with the actual port.
func (h *Host) Addr() string { return h.addr.String() }

// ID is the instance id: the Consul service ID and the x-instance-id value.
func (h *Host) ID() string { return h.id }

// SetFaults changes the instance's faults from the next call on: a test
// heals a faulty instance, or breaks a healthy one.
func (h *Host) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	h.faults.Store(&f)
	return nil
}

// SetServing sets the instance's grpc.health.v1 status, for the whole
// server and every service on it: false answers NOT_SERVING, what an
// instance says while it cannot take calls. Consul's check and a
// gateway's client-side health checking both read it.
func (h *Host) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_SERVING
	if !serving {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.health.SetServingStatus("", st)
	for name := range h.srv.GetServiceInfo() {
		h.health.SetServingStatus(name, st)
	}
}

// Received is how many calls of fullMethod (/package.Service/Method) the
// instance received, those a fault answered included.
func (h *Host) Received(fullMethod string) int64 { return h.seen.get(fullMethod) }

// Done is closed when the server has stopped serving, whether through Stop,
// Kill or a failing listener.
func (h *Host) Done() <-chan struct{} { return h.served }

// Err is why the server stopped serving: nil after Stop or Kill. It is only
// meaningful once Done is closed.
func (h *Host) Err() error {
	select {
	case <-h.served:
		return h.serveErr
	default:
		return nil
	}
}

// Stop takes the instance out of Consul, then lets in-flight calls finish
// until ctx ends, when it closes whatever is left. Deregistering first means
// clients stop picking this instance before it stops answering. A failed
// deregistration is returned but does not stop the shutdown: Consul's health
// check will notice the instance is gone.
func (h *Host) Stop(ctx context.Context) error {
	h.deregisterOnce.Do(func() {
		if h.reg != nil {
			h.deregisterErr = h.reg.Deregister(ctx)
		}
	})
	defer h.closeTLS()
	// NOT_SERVING tells clients that watch health to move on too.
	h.health.Shutdown()

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.srv.GracefulStop()
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		h.srv.Stop()
		<-stopped
	}
	<-h.served
	return h.deregisterErr
}

// Kill stops serving at once and leaves the instance registered, as a crash
// would; Consul's health check then marks it critical. Tests use it to
// exercise failover.
func (h *Host) Kill() {
	if h.reg != nil {
		h.reg.Close() // a crashed process no longer puts its entry back
	}
	h.srv.Stop()
	<-h.served
	h.closeTLS()
}

// closeTLS stops reloading the TLS files; Close may be called again.
func (h *Host) closeTLS() {
	if h.tls != nil {
		_ = h.tls.Close()
	}
}

// Run starts a Host, logs where it listens, and serves until ctx ends; then
// it stops the Host with a grace period of 10s. It returns early with an
// error if the server stops serving on its own.
func Run(ctx context.Context, cfg Config, consul *api.Client, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.Logger == nil {
		cfg.Logger = logger
	}
	h, err := Start(ctx, cfg, consul)
	if err != nil {
		return err
	}
	logger.Info("serving", "service", cfg.Name, "addr", h.Addr(), "instance", h.ID(), "consul", consul != nil)

	select {
	case <-ctx.Done():
	case <-h.Done():
		return fmt.Errorf("host: %s stopped serving: %w", cfg.Name, h.Err())
	}

	logger.Info("shutting down", "service", cfg.Name, "instance", h.ID(), "grace", stopGrace)
	// ctx is already done; the grace period needs a context of its own.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
	defer cancel()
	if err := h.Stop(stopCtx); err != nil {
		// Not fatal: the instance is down either way, and Consul removes it
		// once its check has been critical for a while.
		logger.Error("deregistering from Consul", "instance", h.ID(), "err", err)
	}
	logger.Info("stopped", "service", cfg.Name, "instance", h.ID())
	return nil
}

// advertised is the address registered in Consul. A listener on every
// interface has no single address to give, so loopback is registered: the
// example services run on one machine with their Consul agent.
func advertised(addr net.Addr) (string, int) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "127.0.0.1", 0
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return "127.0.0.1", tcp.Port
	}
	return tcp.IP.String(), tcp.Port
}
