package gateway

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
)

// RegisterConfig puts the gateway itself into Consul, with an HTTP check on
// the admin listener's /readyz, so that replicas can count each other
// (rate_limit.mode: cluster) and load balancers can find them.
type RegisterConfig struct {
	// Enabled turns registration on.
	Enabled bool `yaml:"enabled"`
	// Service is the Consul service name. Default portico.
	Service string `yaml:"service"`
	// Address is the host registered for the REST listener. Default: the
	// listener's own host. It is also where the check calls /readyz when
	// the admin listener listens on every interface (else loopback).
	Address string `yaml:"address"`
	// Tags are added to the registration.
	Tags []string `yaml:"tags"`
	// CheckInterval is how often Consul GETs /readyz. Default 2s.
	CheckInterval time.Duration `yaml:"check_interval"`
	// DeregisterAfter is how long a critical replica stays registered
	// before Consul drops it (a crashed replica). Default 1m.
	DeregisterAfter time.Duration `yaml:"deregister_after"`
}

// DefaultRegisterService is the Consul name gateway replicas register as.
const DefaultRegisterService = "portico"

// registration is the gateway's own Consul entry. Its ID is chosen in New,
// so policies (cluster rate limiting) can recognise themselves; the entry
// is made in Start and removed at the start of Shutdown.
type registration struct {
	cfg    RegisterConfig
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	reg    *discovery.Registered // written before done closes
}

// name is the entry's name for the policies; zero when registration is off.
func (r *registration) name() policy.Self {
	if r == nil {
		return policy.Self{}
	}
	return policy.Self{Service: r.cfg.Service, ID: r.id}
}

func newRegistration(cfg RegisterConfig) *registration {
	if !cfg.Enabled {
		return nil
	}
	if cfg.Service == "" {
		cfg.Service = DefaultRegisterService
	}
	return &registration{cfg: cfg, id: discovery.NewServiceID(cfg.Service)}
}

// register starts putting the gateway into Consul. While Consul is away it
// retries with capped, jittered backoff; once in, discovery keeps the entry
// there and registers it again if the agent loses it (restarted with empty
// state, say). deregister stops both.
func (g *Gateway) register(ctx context.Context) {
	r := g.self
	if r == nil {
		return
	}
	fallback := r.cfg.Address
	if fallback == "" {
		fallback = "127.0.0.1"
	}
	httpHost, httpPort := discovery.ListenerHost(g.listeners.http.Addr(), fallback)
	if r.cfg.Address != "" {
		httpHost = r.cfg.Address
	}
	adminHost, adminPort := discovery.ListenerHost(g.listeners.admin.Addr(), fallback)
	reg := discovery.Registration{
		Service: r.cfg.Service, ID: r.id, Address: httpHost, Port: httpPort, Tags: r.cfg.Tags,
		Meta:            map[string]string{"grpc": g.listeners.grpc.Addr().String(), "admin": g.listeners.admin.Addr().String()},
		CheckHTTP:       "http://" + net.JoinHostPort(adminHost, strconv.Itoa(adminPort)) + "/readyz",
		CheckInterval:   r.cfg.CheckInterval,
		DeregisterAfter: r.cfg.DeregisterAfter,
	}
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		opts := append([]discovery.Option{discovery.WithLogger(g.opts.logger)}, g.opts.resolverOpts...)
		if res, err := discovery.RegisterRetry(ctx, g.consul, reg, opts...); err == nil {
			r.reg = res
			g.opts.logger.Info("registered in consul", "service", reg.Service, "id", r.id, "check", reg.CheckHTTP)
		}
	}()
}

// deregister takes the gateway out of Consul, first thing on shutdown, so
// that other replicas re-split limits and balancers move on before the
// listeners close.
func (g *Gateway) deregister(ctx context.Context) error {
	r := g.self
	if r == nil || r.cancel == nil {
		return nil
	}
	r.cancel()
	<-r.done
	if r.reg == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.reg.Deregister(ctx)
}
