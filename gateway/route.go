package gateway

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
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
	// ClientStreams and ServerStreams give the method's kind.
	ClientStreams, ServerStreams bool
	// Policy is the effective policy: proto options, then config overrides.
	Policy *policy.Policy

	input, output protoreflect.MessageType
}

// kind is "unary", "server-stream", "client-stream" or "bidi-stream".
func (r *Route) kind() string {
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

// target is the grpc-go target of the route's backend.
func (r *Route) target() string {
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

// buildRoutes makes the route table from the compiled services and the
// config, and refuses contradictions with a message naming the culprit.
func buildRoutes(services []Service, cfg Config) ([]*Route, error) {
	known := make(map[string]bool, len(services))
	var routes []*Route
	for _, svc := range services {
		sd := svc.Descriptor
		name := string(sd.FullName())
		if known[name] {
			return nil, fmt.Errorf("service %s is registered twice", name)
		}
		known[name] = true

		so, _ := proto.GetExtension(sd.Options(), optionsv1.E_Service).(*optionsv1.ServiceOptions)
		sc := cfg.Services[name]
		backend := firstNonEmpty(sc.Backend, so.GetBackend())
		if backend == "" {
			return nil, fmt.Errorf("service %s (%s) has no backend: declare option (portico.options.v1.service).backend or set services.%s.backend in %s",
				name, sd.ParentFile().Path(), name, cfg.where())
		}
		timeout := cfg.DefaultTimeout
		if d := so.GetTimeout(); d != nil {
			timeout = d.AsDuration()
		}
		if sc.Timeout != 0 {
			timeout = sc.Timeout
		}

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
				input:         in,
				output:        out,
			}
			mo, _ := proto.GetExtension(md.Options(), optionsv1.E_Method).(*optionsv1.MethodOptions)
			mc := sc.Methods[string(md.Name())]
			if mo.GetTimeout() != nil {
				r.Timeout = mo.GetTimeout().AsDuration()
			}
			if mc.Timeout != 0 {
				r.Timeout = mc.Timeout
			}
			if r.ClientStreams || r.ServerStreams {
				r.Timeout = sc.StreamTimeout
			}
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
	}
	for name := range cfg.Services {
		if !known[name] {
			return nil, fmt.Errorf("%s: services.%s: no such service is compiled into this gateway (known: %s)",
				cfg.where(), name, strings.Join(sortedKeys(known), ", "))
		}
	}
	return routes, nil
}

// effectivePolicy merges, from weakest to strongest: the gateway defaults,
// the service's proto options, the service's config, the method's proto
// options, the method's config. A method declared public may not require
// scopes: that contradiction stops the gateway at start.
func effectivePolicy(cfg Config, so *optionsv1.ServiceOptions, sc ServiceConfig, mo *optionsv1.MethodOptions, mc MethodConfig) (*policy.Policy, error) {
	p := &policy.Policy{Access: policy.Authenticated, RateLimit: cfg.DefaultRateLimit}
	if cfg.DefaultAccess != "" {
		a, err := policy.ParseAccess(cfg.DefaultAccess)
		if err != nil {
			return nil, fmt.Errorf("default_access: %w", err)
		}
		p.Access = a
	}
	var scopes []string
	var scopesAtMethod bool
	apply := func(access optionsv1.Access, sco []string, rl *optionsv1.RateLimit, method bool) {
		switch access {
		case optionsv1.Access_ACCESS_PUBLIC:
			p.Access = policy.Public
		case optionsv1.Access_ACCESS_AUTHENTICATED:
			p.Access = policy.Authenticated
		}
		if len(sco) > 0 {
			scopes, scopesAtMethod = sco, method
		}
		if rl.GetRequests() > 0 {
			p.RateLimit = policy.RateLimit{Requests: rl.GetRequests(), Period: rl.GetPeriod().AsDuration(), Burst: rl.GetBurst()}
		}
	}
	override := func(pc PolicyConfig, method bool) error {
		if pc.Access != "" {
			a, err := policy.ParseAccess(pc.Access)
			if err != nil {
				return err
			}
			p.Access = a
		}
		if pc.Scopes != nil {
			scopes, scopesAtMethod = pc.Scopes, method
		}
		if pc.RateLimit != nil {
			p.RateLimit = *pc.RateLimit
		}
		return nil
	}
	apply(so.GetAccess(), so.GetScopes(), so.GetRateLimit(), false)
	if err := override(sc.PolicyConfig, false); err != nil {
		return nil, err
	}
	apply(mo.GetAccess(), mo.GetScopes(), mo.GetRateLimit(), true)
	if err := override(mc.PolicyConfig, true); err != nil {
		return nil, err
	}
	if p.Access == policy.Public && len(scopes) > 0 {
		if scopesAtMethod {
			return nil, fmt.Errorf("public but requires scopes %v: a public method cannot require scopes", scopes)
		}
		scopes = nil // service-wide scopes bind only its authenticated methods
	}
	p.Scopes = scopes
	if rl := p.RateLimit; rl.Requests > 0 {
		if rl.Period <= 0 {
			return nil, fmt.Errorf("rate limit %d per %v: the period must be positive", rl.Requests, rl.Period)
		}
		if p.RateLimit.Burst == 0 {
			p.RateLimit.Burst = rl.Requests
		}
	}
	return p, nil
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

// PrintRoutes writes the route table as aligned text: the first thing an
// operator asks a gateway for.
func PrintRoutes(w io.Writer, routes []*Route) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REST\tgRPC METHOD\tBACKEND\tKIND\tTIMEOUT\tAUTH\tSCOPES\tRATE LIMIT")
	for _, r := range routes {
		timeout := "none"
		if r.Timeout > 0 {
			timeout = r.Timeout.String()
		}
		backend := r.Backend
		if r.Tag != "" {
			backend += " tag=" + r.Tag
		}
		if r.Datacenter != "" {
			backend += " dc=" + r.Datacenter
		}
		scopes := strings.Join(r.Policy.Scopes, ",")
		if scopes == "" {
			scopes = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(r.HTTP, ", "), r.FullMethod, backend, r.kind(), timeout,
			r.Policy.Access, scopes, r.Policy.RateLimit)
	}
	return tw.Flush()
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
