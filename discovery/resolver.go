package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/resolver"
)

// Scheme is the URL scheme of Consul targets: consul:///<service>.
const Scheme = "consul"

// Target returns the grpc-go target for a Consul service.
func Target(service string) string { return Scheme + ":///" + service }

// healthAPI is the one Consul call the watcher makes. *api.Health has it.
type healthAPI interface {
	ServiceMultipleTags(service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

var _ healthAPI = (*api.Health)(nil)

// Option configures a Builder.
type Option func(*options)

type options struct {
	waitTime  time.Duration
	backoff   backoff
	logger    *slog.Logger
	observers []Observer    // WithObserver
	keepEvery time.Duration // WithKeepRegistered
}

func defaultOptions() options {
	return options{
		waitTime:  30 * time.Second,
		backoff:   backoff{base: 100 * time.Millisecond, max: 5 * time.Second},
		logger:    slog.Default(),
		keepEvery: 2 * time.Second,
	}
}

// WithWaitTime sets how long one blocking query may wait for a change.
func WithWaitTime(d time.Duration) Option { return func(o *options) { o.waitTime = d } }

// WithBackoff sets the first and the largest delay between retries after
// Consul errors. Delays are jittered.
func WithBackoff(base, max time.Duration) Option {
	return func(o *options) { o.backoff = backoff{base: base, max: max} }
}

// WithKeepRegistered sets how often a Registered asks the local agent
// whether it still has the entry, to register it again when not. The
// default, 2s, puts an entry back within seconds of an agent restarted with
// empty state; zero turns the keeping off.
func WithKeepRegistered(every time.Duration) Option {
	return func(o *options) { o.keepEvery = every }
}

// WithLogger sets where watch and registration errors are logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Builder builds resolvers for consul:/// targets. Give it to a ClientConn
// with grpc.WithResolvers; it is not registered globally, so each gateway
// (and each test) can point at its own Consul.
type Builder struct {
	health healthAPI
	opts   options
}

var _ resolver.Builder = (*Builder)(nil)

// NewBuilder returns a resolver builder backed by client. It does no I/O.
func NewBuilder(client *api.Client, opts ...Option) *Builder {
	return newBuilder(client.Health(), opts...)
}

func newBuilder(h healthAPI, opts ...Option) *Builder {
	return &Builder{health: h, opts: buildOptions(opts)}
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// Build implements resolver.Builder. It starts the target's watcher.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.Trim(target.URL.Path, "/")
	if service == "" {
		service = target.URL.Opaque
	}
	if service == "" || strings.Contains(service, "/") {
		return nil, fmt.Errorf("discovery: target %q: want consul:///<service>", target.URL.String())
	}
	q := target.URL.Query()
	ctx, cancel := context.WithCancel(context.Background())
	r := &consulResolver{
		cc:      cc,
		health:  b.health,
		opts:    b.opts,
		service: service,
		tags:    q["tag"],
		dc:      q.Get("dc"),
		nudge:   make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go r.watch(ctx)
	return r, nil
}

// consulResolver watches one Consul service for one ClientConn.
type consulResolver struct {
	cc      resolver.ClientConn
	health  healthAPI
	opts    options
	service string
	tags    []string
	dc      string

	nudge  chan struct{} // capacity 1: bursts of ResolveNow collapse into one
	cancel context.CancelFunc
	done   chan struct{}
}

// ResolveNow is a hint: if the watcher is waiting out a backoff, it retries
// at once. A running blocking query already returns on any change.
func (r *consulResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// Close stops the watcher and waits for it to exit.
func (r *consulResolver) Close() {
	r.cancel()
	<-r.done
}

func (r *consulResolver) watch(ctx context.Context) {
	defer close(r.done)
	var (
		last      []string
		haveState bool
	)
	blockingQuery(ctx, r.opts, r.nudge, func(q *api.QueryOptions) (*api.QueryMeta, error) {
		q.Datacenter = r.dc
		entries, meta, err := r.health.ServiceMultipleTags(r.service, r.tags, true, q)
		if err != nil {
			return nil, err
		}
		r.opts.watchOK(r.service)
		eps, addrs := endpoints(entries)
		if haveState && slices.Equal(addrs, last) {
			return meta, nil
		}
		haveState, last = true, addrs
		// An empty list is a real answer (no healthy instance); the balancer
		// then fails calls at once with UNAVAILABLE. The error it returns for
		// that case needs no action here.
		if err := r.cc.UpdateState(resolver.State{Endpoints: eps}); err != nil && !errors.Is(err, balancer.ErrBadResolverState) {
			r.opts.logger.Warn("resolver update rejected", "service", r.service, "error", err)
		}
		// Observers hear of the change only once the balancer has it
		// (UpdateState returns after the balancer took the update and made
		// its picker): whoever sees an instance through them, the admin
		// page or a test, can call it at once. Before, a call made on their
		// word could still meet the picker of the empty list, and fail.
		r.opts.instances(r.service, eps)
		return meta, nil
	}, func(err error, failures int) {
		err = fmt.Errorf("consul: watching service %q: %w", r.service, err)
		r.opts.watchError(r.service, err)
		if !haveState {
			// Nothing known yet: let calls fail fast instead of hanging.
			r.cc.ReportError(err)
		}
		// With a known state we say nothing to the ClientConn: it keeps
		// routing to the last healthy instances while Consul is away.
		r.opts.logger.Warn("consul watch failed", "service", r.service, "error", err, "failures", failures)
	})
}

type (
	instanceIDKey struct{}
	tlsMarkKey    struct{}
)

// TLSMeta is the Consul service meta key by which an instance says whether
// it serves TLS: "true" or "false". Portico's example services set it. A
// gateway dials a marked instance as the mark says and an unmarked one as
// its service's configuration says, so a fleet moves to TLS one instance
// at a time. A value that is not a Go boolean counts as no mark.
const TLSMeta = "portico-tls"

// InstanceTLS reads the TLS mark of a resolved address from its
// attributes (credentials.ClientHandshakeInfo carries them to a
// handshake): marked is false when the instance's Consul entry has none.
func InstanceTLS(a *attributes.Attributes) (on, marked bool) {
	on, marked = a.Value(tlsMarkKey{}).(bool)
	return on, marked
}

// InstanceID returns the Consul service ID of a resolved endpoint, or "".
func InstanceID(ep resolver.Endpoint) string {
	id, _ := ep.Attributes.Value(instanceIDKey{}).(string)
	return id
}

// endpoints turns Consul entries into resolver endpoints and a sorted list
// of their addresses, ids and TLS marks (to tell a real change from a no-op
// wake-up).
func endpoints(entries []*api.ServiceEntry) ([]resolver.Endpoint, []string) {
	eps := make([]resolver.Endpoint, 0, len(entries))
	addrs := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		addr := net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
		// The mark goes on the address, not the endpoint: an address's
		// attributes are what a transport handshake sees, and a changed
		// mark makes a new connection.
		a := resolver.Address{Addr: addr}
		mark := "-"
		if on, err := strconv.ParseBool(e.Service.Meta[TLSMeta]); err == nil {
			a.Attributes = attributes.New(tlsMarkKey{}, on)
			mark = strconv.FormatBool(on)
		}
		eps = append(eps, resolver.Endpoint{
			Addresses:  []resolver.Address{a},
			Attributes: attributes.New(instanceIDKey{}, e.Service.ID),
		})
		addrs = append(addrs, addr+"|"+e.Service.ID+"|"+mark)
	}
	slices.Sort(addrs)
	return eps, addrs
}
