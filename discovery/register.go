package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Registration describes one instance of a service.
type Registration struct {
	Service string // Consul service name, e.g. "catalog"
	ID      string // unique instance id; NewServiceID(Service) when empty
	Address string // host the instance listens on
	Port    int
	Tags    []string
	Meta    map[string]string

	// CheckHTTP, when set, is a URL that Consul GETs instead of calling
	// grpc.health.v1 on Address:Port; a 2xx answer is passing. The gateway
	// points it at its admin listener's /readyz.
	CheckHTTP string

	// GRPCUseTLS makes Consul's gRPC check speak TLS to an instance that
	// serves TLS. TLSServerName is the name it sends as SNI and verifies;
	// TLSSkipVerify skips the verification. The check never presents a
	// client certificate of its own (Consul offers only the agent's, with
	// the agent-wide enable_agent_tls_for_checks), so an instance that
	// requires client certificates must answer grpc.health.v1 without one.
	GRPCUseTLS    bool
	TLSServerName string
	TLSSkipVerify bool

	CheckInterval   time.Duration // how often Consul checks the instance; default 2s
	CheckTimeout    time.Duration // default 1s
	DeregisterAfter time.Duration // critical this long: Consul removes it; default 1m
}

// Registered is an instance that Register put into Consul. It keeps the
// entry there: a goroutine it owns asks the agent every few seconds
// (WithKeepRegistered) whether it still has the entry and registers it
// again, with the same ID and check, when it has not. An agent restarted
// with empty state, or one that dropped the instance after it was critical
// for DeregisterAfter (a process paused that long), so gets it back without
// a restart of the instance. Deregister or Close stops the goroutine.
type Registered struct {
	client *api.Client
	svc    *api.AgentServiceRegistration // read-only after Register
	stop   context.CancelFunc
	done   chan struct{} // closed when the keeping goroutine has returned
}

// ID is the instance's Consul service ID.
func (r *Registered) ID() string { return r.svc.ID }

// NewServiceID returns a fresh instance id such as "catalog-3f9a1c2b".
func NewServiceID(service string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return service + "-" + hex.EncodeToString(b[:])
}

// Register adds an instance to the local Consul agent with a gRPC health
// check against Address:Port, or an HTTP check against CheckHTTP, and keeps
// it there until Deregister or Close (see Registered). ctx bounds the first
// registration only. WithKeepRegistered, WithBackoff and WithLogger tune
// the keeping.
func Register(ctx context.Context, client *api.Client, reg Registration, opts ...Option) (*Registered, error) {
	if err := reg.valid(); err != nil {
		return nil, err
	}
	if reg.ID == "" {
		reg.ID = NewServiceID(reg.Service)
	}
	if reg.CheckInterval == 0 {
		reg.CheckInterval = 2 * time.Second
	}
	if reg.CheckTimeout == 0 {
		reg.CheckTimeout = time.Second
	}
	if reg.DeregisterAfter == 0 {
		reg.DeregisterAfter = time.Minute
	}
	check := &api.AgentServiceCheck{
		CheckID:                        "service:" + reg.ID,
		Name:                           "grpc health",
		GRPC:                           net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port)),
		Interval:                       reg.CheckInterval.String(),
		Timeout:                        reg.CheckTimeout.String(),
		DeregisterCriticalServiceAfter: reg.DeregisterAfter.String(),
		GRPCUseTLS:                     reg.GRPCUseTLS,
		TLSServerName:                  reg.TLSServerName,
		TLSSkipVerify:                  reg.TLSSkipVerify,
	}
	if reg.CheckHTTP != "" {
		check.Name, check.GRPC, check.HTTP, check.Method = "http readiness", "", reg.CheckHTTP, "GET"
		check.GRPCUseTLS = false
	}
	svc := &api.AgentServiceRegistration{
		ID:      reg.ID,
		Name:    reg.Service,
		Address: reg.Address,
		Port:    reg.Port,
		Tags:    reg.Tags,
		Meta:    reg.Meta,
		Check:   check,
	}
	if err := client.Agent().ServiceRegisterOpts(svc, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("discovery: register %s: %w", reg.ID, err)
	}
	r := &Registered{client: client, svc: svc, done: make(chan struct{})}
	o := buildOptions(opts)
	if o.keepEvery <= 0 {
		close(r.done)
		r.stop = func() {}
		return r, nil
	}
	// The goroutine outlives ctx, which bounds the call; r owns it.
	keepCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	r.stop = stop
	go r.keep(keepCtx, o)
	return r, nil
}

// keep checks every o.keepEvery that the agent still has the entry and
// registers it again when it has not, until ctx ends. While Consul cannot
// be reached (or refuses) it retries with o.backoff instead, and says when
// it can be again.
func (r *Registered) keep(ctx context.Context, o options) {
	defer close(r.done)
	log := o.logger.With("service", r.svc.Name, "id", r.svc.ID)
	failures := 0
	var failingSince time.Time
	for {
		wait := o.keepEvery
		if failures > 0 {
			wait = o.backoff.delay(failures - 1)
		}
		if !sleep(ctx, nil, wait) {
			return
		}
		again, err := r.ensure(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if failures == 0 {
				failingSince = time.Now()
			}
			failures++
			if failures == 1 || failures%10 == 0 {
				log.Warn("checking the consul registration failed; retrying", "error", err, "failures", failures)
			}
			continue
		}
		if failures > 0 {
			log.Info("checking the consul registration works again", "away", time.Since(failingSince).Round(time.Millisecond))
			failures = 0
		}
		if again {
			log.Warn("consul had lost the registration; registered again")
		}
	}
}

// ensure registers the entry again if the agent does not have it, and
// reports whether it did.
func (r *Registered) ensure(ctx context.Context) (again bool, err error) {
	agent := r.client.Agent()
	_, _, err = agent.Service(r.svc.ID, (&api.QueryOptions{}).WithContext(ctx))
	var status api.StatusError
	if err == nil || !errors.As(err, &status) || status.Code != http.StatusNotFound {
		return false, err
	}
	if err := agent.ServiceRegisterOpts(r.svc, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return false, fmt.Errorf("discovery: register %s again: %w", r.svc.ID, err)
	}
	return true, nil
}

// RegisterRetry is Register for a process that must not wait for Consul to
// start: while Consul cannot be reached it logs and retries with capped,
// jittered backoff (WithBackoff, WithLogger), until it succeeds or ctx ends.
func RegisterRetry(ctx context.Context, client *api.Client, reg Registration, opts ...Option) (*Registered, error) {
	if err := reg.valid(); err != nil {
		return nil, err // no retry mends a bad registration
	}
	o := buildOptions(opts)
	if reg.ID == "" {
		reg.ID = NewServiceID(reg.Service)
	}
	for failures := 0; ; failures++ {
		r, err := Register(ctx, client, reg, opts...)
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if failures == 0 || failures%10 == 0 {
			o.logger.Warn("consul registration failed; retrying", "id", reg.ID, "error", err, "failures", failures+1)
		}
		if !sleep(ctx, nil, o.backoff.delay(failures)) {
			return nil, err
		}
	}
}

func (reg Registration) valid() error {
	if reg.Service == "" || reg.Port == 0 {
		return fmt.Errorf("discovery: registration needs a service name and a port")
	}
	return nil
}

// Deregister stops keeping the entry and removes it from Consul.
func (r *Registered) Deregister(ctx context.Context) error {
	r.Close() // first, or it would put the entry back
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().ServiceDeregisterOpts(r.svc.ID, q); err != nil {
		return fmt.Errorf("discovery: deregister %s: %w", r.svc.ID, err)
	}
	return nil
}

// Close stops keeping the entry and leaves it in Consul, as a crash would:
// its check turns critical and Consul drops it after DeregisterAfter. It
// returns once the keeping goroutine has, and may be called more than once.
func (r *Registered) Close() {
	r.stop()
	<-r.done
}

// NewClient returns a ClientConn to the healthy instances of a Consul
// service, balanced round robin. Extra dial options are applied last.
func NewClient(client *api.Client, service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	base := []grpc.DialOption{
		grpc.WithResolvers(NewBuilder(client)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	}
	return grpc.NewClient(Target(service), append(base, opts...)...)
}

// ListenerHost is where a listener at addr can be reached: its own host, or
// fallback when it listens on every interface.
func ListenerHost(addr net.Addr, fallback string) (string, int) {
	tcp, _ := addr.(*net.TCPAddr)
	if tcp == nil {
		return fallback, 0
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return fallback, tcp.Port
	}
	return tcp.IP.String(), tcp.Port
}
