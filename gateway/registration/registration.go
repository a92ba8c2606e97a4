package registration

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
)

// Config is the config file's register block.
type Config struct {
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

// DefaultService is the Consul name gateway replicas register as.
const DefaultService = "portico"

// Entry is the gateway's own Consul entry. Its ID is chosen in New; the
// entry is made in Start and removed by Stop, at the start of shutdown.
type Entry struct {
	cfg    Config
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	reg    *discovery.Registered // written before done closes
}

// New returns the entry, or nil when registration is off.
func New(cfg Config) *Entry {
	if !cfg.Enabled {
		return nil
	}
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	return &Entry{cfg: cfg, id: discovery.NewServiceID(cfg.Service)}
}

// Self is the entry's name for the policies; zero when registration is off.
func (e *Entry) Self() policy.Self {
	if e == nil {
		return policy.Self{}
	}
	return policy.Self{Service: e.cfg.Service, ID: e.id}
}

// Listeners are the bound addresses the entry describes.
type Listeners struct{ HTTP, GRPC, Admin net.Addr }

// Start starts putting the gateway into Consul. While Consul is away it
// retries with capped, jittered backoff; once in, discovery keeps the entry
// there and registers it again if the agent loses it (restarted with empty
// state, say). Stop stops both.
func (e *Entry) Start(ctx context.Context, consul *api.Client, l Listeners, logger *slog.Logger, opts ...discovery.Option) {
	if e == nil {
		return
	}
	fallback := e.cfg.Address
	if fallback == "" {
		fallback = "127.0.0.1"
	}
	httpHost, httpPort := discovery.ListenerHost(l.HTTP, fallback)
	if e.cfg.Address != "" {
		httpHost = e.cfg.Address
	}
	adminHost, adminPort := discovery.ListenerHost(l.Admin, fallback)
	reg := discovery.Registration{
		Service: e.cfg.Service, ID: e.id, Address: httpHost, Port: httpPort, Tags: e.cfg.Tags,
		Meta:            map[string]string{"grpc": l.GRPC.String(), "admin": l.Admin.String()},
		CheckHTTP:       "http://" + net.JoinHostPort(adminHost, strconv.Itoa(adminPort)) + "/readyz",
		CheckInterval:   e.cfg.CheckInterval,
		DeregisterAfter: e.cfg.DeregisterAfter,
	}
	ctx, e.cancel = context.WithCancel(ctx)
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		opts := append([]discovery.Option{discovery.WithLogger(logger)}, opts...)
		if res, err := discovery.RegisterRetry(ctx, consul, reg, opts...); err == nil {
			e.reg = res
			logger.Info("registered in consul", "service", reg.Service, "id", e.id, "check", reg.CheckHTTP)
		}
	}()
}

// Stop takes the gateway out of Consul, first thing on shutdown, so that
// other replicas re-split limits and balancers move on before the
// listeners close.
func (e *Entry) Stop(ctx context.Context) error {
	if e == nil || e.cancel == nil {
		return nil
	}
	e.cancel()
	<-e.done
	if e.reg == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return e.reg.Deregister(ctx)
}
