package compose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/portico-gw/portico/gateway/route"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Composer serves the composite methods of a route table.
type Composer struct {
	plans map[string]*plan // by full method
	// conn is the in-process connection the steps call through: the REST
	// door's (rest.Door.Conn), which runs each method's bound chain.
	conn   grpc.ClientConnInterface
	logger *slog.Logger
}

// Option configures a Composer.
type Option func(*Composer)

// WithLogger is where an expression's failure is told in full (a caller
// gets a fixed message); default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *Composer) {
		if l != nil { // nil keeps the default, as stats.WithLogger does
			c.logger = l
		}
	}
}

// New compiles the plan of every composite route in routes, which were
// built from services. Any mistake in
// a plan (an unknown method, a type error, a reference to a missing step, a
// cycle) is an error naming the file, the method and the step: the gateway
// does not start with a plan it cannot run. New does no I/O.
func New(routes *route.Table, services []protoreflect.ServiceDescriptor, opts ...Option) (*Composer, error) {
	c := &Composer{plans: map[string]*plan{}, logger: slog.Default()}
	for _, o := range opts {
		o(c)
	}
	files := map[string]string{} // service -> the file that declares it
	for _, sd := range services {
		files[string(sd.FullName())] = sd.ParentFile().Path()
	}
	var errs []error
	for _, r := range routes.All() {
		if r.Compose == nil {
			continue
		}
		p, err := compile(r, routes, files[r.Service])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.plans[r.FullMethod] = p
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("compose: %w", errors.Join(errs...))
	}
	if err := c.checkRecursion(); err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	return c, nil
}

// checkRecursion refuses composite methods that call each other in a
// circle, which would run until the deadline.
func (c *Composer) checkRecursion() error {
	_, cycle := order(slices.Sorted(maps.Keys(c.plans)), func(full string) []string {
		var next []string
		for _, s := range c.plans[full].steps {
			if c.plans[s.route.FullMethod] != nil {
				next = append(next, s.route.FullMethod)
			}
		}
		return next
	})
	if cycle == nil {
		return nil
	}
	where := c.plans[cycle[0]].where
	for i := range cycle {
		cycle[i] = cycle[i][1:]
	}
	return fmt.Errorf("%s: composite methods call each other in a cycle: %s", where, strings.Join(cycle, " -> "))
}

// Handler is the handler of r, for proxy.WithHandler: nil unless r is
// composite.
func (c *Composer) Handler(r *route.Route) grpc.UnaryHandler {
	p := c.plans[r.FullMethod]
	if p == nil {
		return nil
	}
	return func(ctx context.Context, req any) (any, error) { return c.run(ctx, p, req) }
}

// Bind sets the connection the steps call through, before the gateway
// serves: the REST door's in-process connection, which runs each step's
// method through its bound chain as the caller (rest.Door.Conn).
func (c *Composer) Bind(conn grpc.ClientConnInterface) { c.conn = conn }
