package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/tap"
)

// Config is the limits of the client listeners (config key limits). Zero
// fields take the defaults below, which a public edge can use.
type Config struct {
	// MaxConnections caps the open connections of each client listener;
	// beyond it, new connections wait in the kernel's backlog. Default 10000.
	MaxConnections int `yaml:"max_connections"`
	// MaxConcurrentStreams caps the HTTP/2 streams of one connection;
	// streams beyond it are refused. Default 100.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// MaxHeaderBytes caps a request's headers, in all. Default 60 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxHeaders caps the number of request header fields. Default 100.
	MaxHeaders int `yaml:"max_headers"`
	// RequestReadTimeout is how long a call may take from its headers to
	// its first complete request message (REST: to the end of its headers).
	// Default 10s.
	RequestReadTimeout time.Duration `yaml:"request_read_timeout"`
	// BodyTimeout is how long a REST request may take to arrive, body
	// included. Default 30s.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// IdleTimeout closes a connection with no call open for this long.
	// Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnectionAge sends a gRPC connection GOAWAY after this long, so
	// clients rebalance; calls open then get MaxConnectionAgeGrace to end.
	// Default 0: no maximum.
	MaxConnectionAge      time.Duration `yaml:"max_connection_age"`
	MaxConnectionAgeGrace time.Duration `yaml:"max_connection_age_grace"`
	// KeepaliveMinTime is the shortest interval between a gRPC client's
	// keepalive pings; a client pinging more often is sent GOAWAY.
	// Default 10s.
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// MaxResetsPerSecond caps the RST_STREAM frames one gRPC client
	// connection may send in a second; beyond it the connection is sent
	// GOAWAY (ENHANCE_YOUR_CALM) and closed: a rapid-reset flood. Unset:
	// 10 x MaxConcurrentStreams (see rapidreset.go for why); 0 turns it off.
	MaxResetsPerSecond *int `yaml:"max_resets_per_second"`
}

// The defaults. Envoy's 60 KiB and 100 headers are the reference for the
// header caps.
const (
	DefaultMaxConnections        = 10000
	DefaultMaxConcurrentStreams  = 100
	DefaultMaxHeaderBytes        = 60 << 10
	DefaultMaxHeaders            = 100
	DefaultRequestReadTimeout    = 10 * time.Second
	DefaultBodyTimeout           = 30 * time.Second
	DefaultIdleTimeout           = 2 * time.Minute
	DefaultMaxConnectionAgeGrace = 30 * time.Second
	DefaultKeepaliveMinTime      = 10 * time.Second
	// DefaultResetsPerStream times MaxConcurrentStreams is the default of
	// MaxResetsPerSecond.
	DefaultResetsPerStream = 10
)

// WithDefaults fills the fields left zero.
func (c Config) WithDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxHeaders == 0 {
		c.MaxHeaders = DefaultMaxHeaders
	}
	set(&c.RequestReadTimeout, DefaultRequestReadTimeout)
	set(&c.BodyTimeout, DefaultBodyTimeout)
	set(&c.IdleTimeout, DefaultIdleTimeout)
	set(&c.MaxConnectionAgeGrace, DefaultMaxConnectionAgeGrace)
	set(&c.KeepaliveMinTime, DefaultKeepaliveMinTime)
	if c.MaxResetsPerSecond == nil {
		c.MaxResetsPerSecond = new(DefaultResetsPerStream * int(c.MaxConcurrentStreams))
	}
	return c
}

func (c Config) validate() error {
	if c.MaxConnections < 0 || c.MaxHeaderBytes < 0 || c.MaxHeaders < 0 {
		return errors.New("limits: counts and sizes must be positive")
	}
	if n := c.MaxResetsPerSecond; n != nil && *n < 0 {
		return fmt.Errorf("limits.max_resets_per_second %d: want 0 (off) or more", *n)
	}
	for name, d := range map[string]time.Duration{"request_read_timeout": c.RequestReadTimeout, "body_timeout": c.BodyTimeout,
		"idle_timeout": c.IdleTimeout, "max_connection_age": c.MaxConnectionAge, "keepalive_min_time": c.KeepaliveMinTime} {
		if d < 0 {
			return fmt.Errorf("limits.%s %v: want a positive duration", name, d)
		}
	}
	return nil
}

// Edge applies the limits.
type Edge struct {
	cfg     Config
	routes  *route.Table
	refused *prometheus.CounterVec
}

// New makes the edge of routes, counting refusals on reg.
func New(cfg Config, routes *route.Table, reg prometheus.Registerer) (*Edge, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Edge{cfg: cfg, routes: routes, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portico_refused_total",
		Help: "Connections, streams and requests the edge refused or ended, by reason.",
	}, []string{"reason"})}
	if err := reg.Register(e.refused); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	return e, nil
}

// Config is the limits in force, defaults filled.
func (e *Edge) Config() Config { return e.cfg }

// Refused counts a refusal made for the edge elsewhere (the REST door).
func (e *Edge) Refused(reason string) { e.refused.WithLabelValues(reason).Inc() }

// GRPCListener is the gRPC listener l with the edge's connection limits
// and, unless max_resets_per_second is 0, its rapid-reset guard
// (rapidreset.go; over TLS it needs GRPCCredentials too). The guard wraps
// the capped listener's connections, so a flooded connection holds its
// slot until its socket is really closed.
func (e *Edge) GRPCListener(l net.Listener) net.Listener {
	l = e.limitConns(l)
	if n := *e.cfg.MaxResetsPerSecond; n > 0 {
		l = guardResets(l, resetGuard{limit: n, onFlood: func() { e.Refused("rapid_reset") }})
	}
	return l
}

// HTTPListener is the REST listener l with the edge's connection limits;
// each connection reads the framing of its HTTP/1 requests (http1.go), for
// the handler of HTTPServer to refuse what RFC 9112 calls ambiguous. Over
// TLS, a FramedListener above the TLS listener reads them instead.
func (e *Edge) HTTPListener(l net.Listener) net.Listener {
	return framedListener{e.limitConns(l)}
}

// limitConns caps the open connections of l.
func (e *Edge) limitConns(l net.Listener) net.Listener {
	return netutil.LimitListener(l, e.cfg.MaxConnections)
}

// GRPCServerOptions are the limits of the gRPC listener.
func (e *Edge) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(e.cfg.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(uint32(e.cfg.MaxHeaderBytes)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: e.cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     e.cfg.IdleTimeout,
			MaxConnectionAge:      e.cfg.MaxConnectionAge,
			MaxConnectionAgeGrace: e.cfg.MaxConnectionAgeGrace,
		}),
		grpc.InTapHandle(e.Tap),
	}
}

// HTTPServer is the REST listener's server around h: a deadline for the
// headers and for the whole request, an idle timeout, the header size cap
// (net/http answers 431 beyond it), the HTTP/2 stream cap, and 400 with the
// connection closed for a request whose framing HTTPListener's connection
// found ambiguous or broken.
func (e *Edge) HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           e.checkFraming(h),
		ConnContext:       withFramedConn,
		ReadHeaderTimeout: e.cfg.RequestReadTimeout,
		ReadTimeout:       e.cfg.BodyTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		MaxHeaderBytes:    e.cfg.MaxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: int(e.cfg.MaxConcurrentStreams)},
		// checkFraming answers OPTIONS *: it counts every request.
		DisableGeneralOptionsHandler: true,
	}
}

// Tap runs when a gRPC stream's headers arrive, before a goroutine serves
// it. It refuses too many headers and cuts the caller's deadline to the
// route's maximum; the deadline then bounds the read of a unary call's
// request too. (A stream's read limit is the proxy's: WithReadTimeout.)
func (e *Edge) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	n := 0
	for _, vs := range info.Header {
		n += len(vs)
	}
	if n > e.cfg.MaxHeaders {
		e.Refused("too_many_headers")
		return nil, policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
			fmt.Sprintf("%d request headers are over the limit of %d", n, e.cfg.MaxHeaders), nil)
	}
	r, ok := e.routes.Lookup(info.FullMethodName)
	if !ok {
		return ctx, nil
	}
	// info.Header is the map grpc-go has put into ctx as incoming
	// metadata: the chain and the proxy read it without copies.
	ctx = policy.WithIncoming(ctx, info.Header)
	// A caller that sets no deadline gets the route's timeout; one that asks
	// for more than the maximum gets the maximum.
	if limit := r.CallLimit(ctx); limit > 0 {
		ctx, cancel := context.WithTimeout(ctx, limit)
		// The stream's end cancels its context, which stops this one's
		// timer: the cancel is not needed (holding it with
		// context.AfterFunc cost five allocations a call).
		unneeded(cancel)
		return ctx, nil
	}
	return ctx, nil
}

// unneeded marks a cancel func that a parent context's end makes redundant.
func unneeded(context.CancelFunc) {}
