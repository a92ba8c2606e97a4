package route

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portico-gw/portico/gateway/backend"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	optionsv1 "github.com/portico-gw/portico/gen/portico/options/v1"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Route is one method as the gateway serves it.
type Route struct {
	// FullMethod is the gRPC method, /package.Service/Method.
	FullMethod string
	// Service and Method are the proto names.
	Service, Method string
	// HTTP lists the REST bindings, such as "GET /v1/products/{id}".
	HTTP []string
	// Backend is the Consul service that serves the method.
	Backend string
	// Tag and Datacenter narrow the Consul query.
	Tag, Datacenter string
	// Timeout is the deadline applied when the caller sets none; 0 is none.
	Timeout time.Duration
	// MaxTimeout is the longest deadline a caller may ask for; a longer one
	// is cut to it. 0 is no maximum.
	MaxTimeout time.Duration
	// MaxBodyBytes is the largest REST body the method takes.
	MaxBodyBytes int64
	// TLS is the service's own backend TLS (services.<name>.tls); nil:
	// the gateway's backend_tls.
	TLS *tlsconfig.BackendConfig `json:"-"`
	// Resilience is the effective retry throttling, outlier detection,
	// circuit breaker and load balancing of the route's backend connection.
	Resilience backend.Config
	// Retry is the method's retry policy; nil for a method that is not
	// idempotent, which gets only transparent retries.
	Retry *backend.Retry
	// ClientStreams and ServerStreams give the method's kind.
	ClientStreams, ServerStreams bool
	// Policy is the effective policy: proto options, then config overrides.
	Policy *policy.Policy

	// Input and Output are the method's message types.
	Input, Output protoreflect.MessageType `json:"-"`

	// Compose is the plan of a composite method (option
	// portico.options.v1.compose), which the gateway serves itself
	// (package compose); its Backend is empty. Nil for a proxied method.
	Compose *optionsv1.Compose `json:"-"`
	// Steps are the composite's steps as declared, for display.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one step of a composite method, as declared.
type Step struct {
	Name     string `json:"name"`
	Method   string `json:"method"`
	ForEach  string `json:"for_each,omitempty"`
	Optional bool   `json:"optional,omitempty"`
}

// Kind is "unary", "server-stream", "client-stream" or "bidi-stream".
func (r *Route) Kind() string {
	switch {
	case r.ClientStreams && r.ServerStreams:
		return "bidi-stream"
	case r.ClientStreams:
		return "client-stream"
	case r.ServerStreams:
		return "server-stream"
	}
	return "unary"
}

// CallLimit is the deadline, from now, that a call to r gets at the
// gateway's door, given ctx, the caller's: the route's timeout when the
// caller asked for none, its maximum when the caller asked for more, and 0
// when the caller's deadline stands (or r has neither). Both doors apply
// it: edge.Tap to native gRPC calls, the REST door to REST calls and
// composite steps.
func (r *Route) CallLimit(ctx context.Context) time.Duration {
	dl, has := ctx.Deadline()
	switch {
	case !has && r.Timeout > 0:
		return r.Timeout
	case !has:
		return r.MaxTimeout
	case r.MaxTimeout > 0 && time.Until(dl) > r.MaxTimeout:
		return r.MaxTimeout
	}
	return 0
}

// Streams reports a streaming method (of any kind).
func (r *Route) Streams() bool { return r.ClientStreams || r.ServerStreams }

// Target is the grpc-go target of the route's backend: the Consul
// resolver's scheme, the service name, and the tag and datacenter that
// narrow the query. Routes with the same target share one connection.
func (r *Route) Target() string {
	t := "consul:///" + r.Backend
	var q []string
	if r.Tag != "" {
		q = append(q, "tag="+r.Tag)
	}
	if r.Datacenter != "" {
		q = append(q, "dc="+r.Datacenter)
	}
	if len(q) > 0 {
		t += "?" + strings.Join(q, "&")
	}
	return t
}

// DefaultMaxBodyBytes is the largest REST body a method takes unless it
// says otherwise: grpc-go's default limit on a gRPC message.
const DefaultMaxBodyBytes = 4 << 20

// firstSet is the first of vs that is set (positive), strongest first;
// 0 if none is.
func firstSet[T int64 | time.Duration](vs ...T) T {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

// Table is the route table, in the order of the services and their
// methods. It does not change once built.
type Table struct {
	routes   []*Route
	byMethod map[string]*Route
}

// Build makes the route table of services from their proto options and the
// config, and refuses contradictions with a message naming the culprit.
func Build(services []protoreflect.ServiceDescriptor, cfg Config) (*Table, error) {
	t := &Table{byMethod: map[string]*Route{}}
	known := make(map[string]bool, len(services))
	for _, sd := range services {
		name := string(sd.FullName())
		if known[name] {
			return nil, fmt.Errorf("service %s is registered twice", name)
		}
		known[name] = true
		routes, err := serviceRoutes(sd, cfg)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			t.routes = append(t.routes, r)
			t.byMethod[r.FullMethod] = r
		}
	}
	for name := range cfg.Services {
		if !known[name] {
			names := make([]string, 0, len(known))
			for k := range known {
				names = append(names, k)
			}
			slices.Sort(names)
			return nil, fmt.Errorf("%s: services.%s: no such service is compiled into this gateway (known: %s)",
				cfg.where(), name, strings.Join(names, ", "))
		}
	}
	return t, nil
}

func serviceRoutes(sd protoreflect.ServiceDescriptor, cfg Config) ([]*Route, error) {
	name := string(sd.FullName())
	so, _ := proto.GetExtension(sd.Options(), optionsv1.E_Service).(*optionsv1.ServiceOptions)
	sc := cfg.Services[name]
	backend := sc.Backend
	if backend == "" {
		backend = so.GetBackend()
	}
	if backend == "" && !allComposite(sd) {
		return nil, fmt.Errorf("service %s (%s) has no backend: declare option (portico.options.v1.service).backend or set services.%s.backend in %s",
			name, sd.ParentFile().Path(), name, cfg.where())
	}
	resilience := sc.Config.WithDefaults()
	if err := resilience.Validate("services." + name); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.where(), err)
	}
	timeout := cfg.DefaultTimeout
	if d := so.GetTimeout(); d != nil {
		timeout = d.AsDuration()
	}
	if sc.Timeout != 0 {
		timeout = sc.Timeout
	}

	var routes []*Route
	methods := sd.Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			return nil, fmt.Errorf("method %s: input type: %w", md.FullName(), err)
		}
		out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		if err != nil {
			return nil, fmt.Errorf("method %s: output type: %w", md.FullName(), err)
		}
		r := &Route{
			FullMethod:    "/" + name + "/" + string(md.Name()),
			Service:       name,
			Method:        string(md.Name()),
			HTTP:          httpBindings(md, name),
			Backend:       backend,
			Tag:           sc.Tag,
			Datacenter:    sc.Datacenter,
			Timeout:       timeout,
			ClientStreams: md.IsStreamingClient(),
			ServerStreams: md.IsStreamingServer(),
			Input:         in,
			Output:        out,
			TLS:           sc.TLS,
			Resilience:    resilience,
		}
		if err := r.compose(md); err != nil {
			return nil, err
		}
		mo, _ := proto.GetExtension(md.Options(), optionsv1.E_Method).(*optionsv1.MethodOptions)
		mc := sc.Methods[string(md.Name())]
		if r.Retry, err = retryOf(md, mo, resilience, mc.Retry); err != nil {
			return nil, fmt.Errorf("%s: services.%s.methods.%s.retry: %w", cfg.where(), name, md.Name(), err)
		}
		if mo.GetTimeout() != nil {
			r.Timeout = mo.GetTimeout().AsDuration()
		}
		if mc.Timeout != 0 {
			r.Timeout = mc.Timeout
		}
		r.MaxTimeout = firstSet(mc.MaxTimeout, mo.GetMaxTimeout().AsDuration(), sc.MaxTimeout, so.GetMaxTimeout().AsDuration(), r.Timeout)
		if r.Streams() {
			r.Timeout, r.MaxTimeout = sc.StreamTimeout, sc.StreamMaxTimeout
		}
		if r.MaxTimeout > 0 && r.Timeout > r.MaxTimeout {
			return nil, fmt.Errorf("method %s: timeout %v is over its max_timeout %v", r.FullMethod[1:], r.Timeout, r.MaxTimeout)
		}
		r.MaxBodyBytes = firstSet(mc.MaxBodyBytes, int64(mo.GetMaxBodyBytes()), sc.MaxBodyBytes, int64(so.GetMaxBodyBytes()), DefaultMaxBodyBytes)
		if r.Policy, err = effectivePolicy(cfg, so, sc, mo, mc); err != nil {
			return nil, fmt.Errorf("method %s (declared in %s, overridable in %s): %w",
				r.FullMethod[1:], sd.ParentFile().Path(), cfg.where(), err)
		}
		routes = append(routes, r)
	}
	for m := range sc.Methods {
		if methods.ByName(protoreflect.Name(m)) == nil {
			return nil, fmt.Errorf("%s: services.%s.methods.%s: %s has no method %q",
				cfg.where(), name, m, name, m)
		}
	}
	return routes, nil
}

// retryOf is a method's effective retry policy: the service's, tuned by
// the method's config, for a method declared idempotent (the standard
// option idempotency_level, or Portico's idempotent); nil for any other,
// whose config may not ask for retries.
func retryOf(md protoreflect.MethodDescriptor, mo *optionsv1.MethodOptions, svc backend.Config, mc *backend.Retry) (*backend.Retry, error) {
	level := md.Options().(*descriptorpb.MethodOptions).GetIdempotencyLevel()
	if level != descriptorpb.MethodOptions_NO_SIDE_EFFECTS && level != descriptorpb.MethodOptions_IDEMPOTENT && !mo.GetIdempotent() {
		if mc != nil {
			return nil, fmt.Errorf("%s is not idempotent, so it is never retried once its request reached a backend: declare option idempotency_level = IDEMPOTENT (or portico.options.v1.method idempotent) first", md.FullName())
		}
		return nil, nil
	}
	r := *svc.Retry
	if mc != nil {
		r = mc.WithDefaults(r)
		if err := r.Validate("retry"); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// compose reads a composite method's plan: the gateway serves it, so it
// has no backend.
func (r *Route) compose(md protoreflect.MethodDescriptor) error {
	c, _ := proto.GetExtension(md.Options(), optionsv1.E_Compose).(*optionsv1.Compose)
	if c == nil {
		return nil
	}
	if r.Streams() {
		return fmt.Errorf("method %s (%s): a composite method must be unary", r.FullMethod[1:], md.ParentFile().Path())
	}
	r.Compose, r.Backend, r.Tag, r.Datacenter, r.TLS = c, "", "", "", nil
	for _, s := range c.GetSteps() {
		r.Steps = append(r.Steps, Step{Name: s.GetName(), Method: s.GetMethod(), ForEach: s.GetForEach(), Optional: s.GetOptional()})
	}
	return nil
}

// allComposite reports a service whose every method is composite: it
// needs no backend.
func allComposite(sd protoreflect.ServiceDescriptor) bool {
	for i := range sd.Methods().Len() {
		if !proto.HasExtension(sd.Methods().Get(i).Options(), optionsv1.E_Compose) {
			return false
		}
	}
	return sd.Methods().Len() > 0
}

// All returns the routes in table order.
func (t *Table) All() []*Route { return t.routes }

// Lookup finds the route of a gRPC method (/package.Service/Method).
func (t *Table) Lookup(fullMethod string) (*Route, bool) {
	r, ok := t.byMethod[fullMethod]
	return r, ok
}

// Known reports whether the table serves a service (method "") or one of
// its methods: the rate limiter uses it to refuse misspelt KV keys.
func (t *Table) Known(service, method string) bool {
	if method != "" {
		_, ok := t.byMethod["/"+service+"/"+method]
		return ok
	}
	for _, r := range t.routes {
		if r.Service == service {
			return true
		}
	}
	return false
}

// Services lists the services of the table, each once, in table order.
func (t *Table) Services() []string {
	var out []string
	for _, r := range t.routes {
		if !slices.Contains(out, r.Service) {
			out = append(out, r.Service)
		}
	}
	return out
}

// httpBindings lists a method's REST bindings. Methods without a
// google.api.http rule are served at POST /<service>/<method>, as
// grpc-gateway's generate_unbound_methods does.
func httpBindings(md protoreflect.MethodDescriptor, service string) []string {
	rule, _ := proto.GetExtension(md.Options().(*descriptorpb.MethodOptions), annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		return []string{"POST /" + service + "/" + string(md.Name())}
	}
	var out []string
	for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
		switch p := r.GetPattern().(type) {
		case *annotations.HttpRule_Get:
			out = append(out, "GET "+p.Get)
		case *annotations.HttpRule_Post:
			out = append(out, "POST "+p.Post)
		case *annotations.HttpRule_Put:
			out = append(out, "PUT "+p.Put)
		case *annotations.HttpRule_Patch:
			out = append(out, "PATCH "+p.Patch)
		case *annotations.HttpRule_Delete:
			out = append(out, "DELETE "+p.Delete)
		case *annotations.HttpRule_Custom:
			out = append(out, p.Custom.GetKind()+" "+p.Custom.GetPath())
		}
	}
	return out
}
