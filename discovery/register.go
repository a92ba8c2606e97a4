package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
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

	CheckInterval   time.Duration // how often Consul checks the instance; default 2s
	CheckTimeout    time.Duration // default 1s
	DeregisterAfter time.Duration // critical this long: Consul removes it; default 1m
}

// Registered is an instance that Register put into Consul.
type Registered struct {
	client *api.Client
	id     string
}

// ID is the instance's Consul service ID.
func (r *Registered) ID() string { return r.id }

// NewServiceID returns a fresh instance id such as "catalog-3f9a1c2b".
func NewServiceID(service string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return service + "-" + hex.EncodeToString(b[:])
}

// Register adds an instance to the local Consul agent with a gRPC health
// check against Address:Port, or an HTTP check against CheckHTTP.
func Register(ctx context.Context, client *api.Client, reg Registration) (*Registered, error) {
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
	}
	if reg.CheckHTTP != "" {
		check.Name, check.GRPC, check.HTTP, check.Method = "http readiness", "", reg.CheckHTTP, "GET"
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
	return &Registered{client: client, id: reg.ID}, nil
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
		r, err := Register(ctx, client, reg)
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

// Deregister removes the instance from Consul.
func (r *Registered) Deregister(ctx context.Context) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().ServiceDeregisterOpts(r.id, q); err != nil {
		return fmt.Errorf("discovery: deregister %s: %w", r.id, err)
	}
	return nil
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
