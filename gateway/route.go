package gateway

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

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

	input, output protoreflect.MessageType
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
			if mo, _ := proto.GetExtension(md.Options(), optionsv1.E_Method).(*optionsv1.MethodOptions); mo.GetTimeout() != nil {
				r.Timeout = mo.GetTimeout().AsDuration()
			}
			if r.ClientStreams || r.ServerStreams {
				r.Timeout = sc.StreamTimeout
			}
			routes = append(routes, r)
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
	fmt.Fprintln(tw, "REST\tgRPC METHOD\tBACKEND\tKIND\tTIMEOUT")
	for _, r := range routes {
		kind := "unary"
		switch {
		case r.ClientStreams && r.ServerStreams:
			kind = "bidi-stream"
		case r.ClientStreams:
			kind = "client-stream"
		case r.ServerStreams:
			kind = "server-stream"
		}
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", strings.Join(r.HTTP, ", "), r.FullMethod, backend, kind, timeout)
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
