package admin

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/stats"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Live is what the API reads on every request. *stats.Stats has it.
type Live interface {
	Traffic() stats.Traffic
	Backends() []stats.Backend
	Consul() stats.ConsulStatus
}

var _ Live = (*stats.Stats)(nil)

// Server implements portico.admin.v1.AdminService.
type Server struct {
	adminv1.UnimplementedAdminServiceServer

	routes   []*adminv1.Route
	limits   *adminv1.GetRateLimitsResponse
	services map[string][]string // backend -> proto services
	build    *adminv1.GetBuildInfoResponse
	live     Live

	credentials []string // the kinds authenticated routes accept

	rateLimitMode     func() (string, uint32)
	rateLimitOverride func(service, method string) (*adminv1.RateLimit, bool)
	rateLimitStore    RateLimitStore  // nil: none
	quotas            RateLimitQuotas // nil: rate limiting off

	grpc *grpc.Server
	rest *runtime.ServeMux
}

var _ adminv1.AdminServiceServer = (*Server)(nil)

// Option configures a Server.
type Option func(*Server)

// WithDefaultRateLimit reports the limit of methods that declare none.
func WithDefaultRateLimit(rl *adminv1.RateLimit) Option {
	return func(s *Server) { s.limits.DefaultRateLimit = rl }
}

// WithRateLimitMode reports, on each request, how rate limits are enforced:
// the mode and the number of replicas sharing them.
func WithRateLimitMode(fn func() (mode string, replicas uint32)) Option {
	return func(s *Server) { s.rateLimitMode = fn }
}

// WithRateLimitOverride reports, on each request, the Consul KV limit in
// force for a method, if any (nil with true: the limit is lifted).
func WithRateLimitOverride(fn func(service, method string) (*adminv1.RateLimit, bool)) Option {
	return func(s *Server) { s.rateLimitOverride = fn }
}

// New serves routes and the numbers of live. It does no I/O.
func New(routes []*adminv1.Route, live Live, opts ...Option) (*Server, error) {
	s := &Server{
		routes:   routes,
		limits:   &adminv1.GetRateLimitsResponse{},
		services: map[string][]string{},
		build:    buildInfo(time.Now()),
		live:     live,

		rateLimitMode:     func() (string, uint32) { return "local", 1 },
		rateLimitOverride: func(string, string) (*adminv1.RateLimit, bool) { return nil, false },
	}
	for _, r := range routes {
		if !slices.Contains(s.services[r.GetBackend()], r.GetService()) {
			s.services[r.GetBackend()] = append(s.services[r.GetBackend()], r.GetService())
		}
	}
	for _, opt := range opts {
		opt(s)
	}
	s.routes = withCredentials(s.routes, s.credentials)

	s.grpc = grpc.NewServer()
	adminv1.RegisterAdminServiceServer(s.grpc, s)
	reflection.Register(s.grpc)

	s.rest = runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
	}))
	if err := adminv1.RegisterAdminServiceHandlerServer(context.Background(), s.rest, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint is one handler for the admin listener's http.ServeMux.
type Endpoint struct {
	Pattern string
	Handler http.Handler
}

//go:embed ui
var ui embed.FS

// AdminEndpoints are the page, its assets, the REST API under /admin/v1/ and the
// gRPC API (with reflection) for h2c clients.
func (s *Server) AdminEndpoints() []Endpoint {
	assets, _ := fs.Sub(ui, "ui")
	files := http.FileServerFS(assets)
	return []Endpoint{
		{"GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, assets, "index.html")
		})},
		{"GET /ui/", http.StripPrefix("/ui/", files)},
		{"/admin/v1/", s.rest},
		{"POST /" + adminv1.AdminService_ServiceDesc.ServiceName + "/", s.grpc},
		{"POST /grpc.reflection.v1.ServerReflection/", s.grpc},
		{"POST /grpc.reflection.v1alpha.ServerReflection/", s.grpc},
	}
}

// Close stops the gRPC side; calls in flight are cut.
func (s *Server) Close() error {
	s.grpc.Stop()
	return nil
}

// ListRoutes implements AdminService.
func (s *Server) ListRoutes(context.Context, *adminv1.ListRoutesRequest) (*adminv1.ListRoutesResponse, error) {
	return &adminv1.ListRoutesResponse{Routes: s.routes}, nil
}

// GetRateLimits implements AdminService.
func (s *Server) GetRateLimits(context.Context, *adminv1.GetRateLimitsRequest) (*adminv1.GetRateLimitsResponse, error) {
	out := proto.CloneOf(s.limits)
	out.Mode, out.Replicas = s.rateLimitMode()
	if s.rateLimitStore != nil {
		if st, ok := s.rateLimitStore.StoreStatus(); ok {
			out.Store = storeStatus(st)
		}
	}
	for _, r := range s.routes {
		declared := r.GetPolicy().GetRateLimit()
		m := &adminv1.MethodRateLimit{Method: r.GetMethod(), RateLimit: declared, Declared: declared}
		name := r.GetMethod()[strings.LastIndexByte(r.GetMethod(), '/')+1:]
		if o, ok := s.rateLimitOverride(r.GetService(), name); ok {
			m.RateLimit, m.FromKv = o, true
		}
		if m.RateLimit != nil || m.Declared != nil {
			out.Methods = append(out.Methods, m)
		}
	}
	return out, nil
}

// GetBuildInfo implements AdminService.
func (s *Server) GetBuildInfo(context.Context, *adminv1.GetBuildInfoRequest) (*adminv1.GetBuildInfoResponse, error) {
	return s.build, nil
}

// ListBackends implements AdminService.
func (s *Server) ListBackends(context.Context, *adminv1.ListBackendsRequest) (*adminv1.ListBackendsResponse, error) {
	out := &adminv1.ListBackendsResponse{}
	for _, b := range s.live.Backends() {
		pb := &adminv1.Backend{
			Name:           b.Name,
			Resolved:       b.Resolved,
			WatchErrors:    b.WatchErrors,
			LastWatchError: b.LastWatchError,
			Services:       s.services[b.Name],
		}
		if !b.LastWatchOK.IsZero() {
			pb.LastWatchOk = timestamppb.New(b.LastWatchOK)
		}
		for _, in := range b.Instances {
			pb.Instances = append(pb.Instances, &adminv1.Instance{Id: in.ID, Address: in.Addr, Calls: in.Calls, Errors: in.Errors})
		}
		out.Backends = append(out.Backends, pb)
	}
	c := s.live.Consul()
	out.Consul = &adminv1.ConsulStatus{Reachable: c.Reachable, Unreachable: durationpb.New(c.Unreachable),
		Outages: c.Outages, LastError: c.LastError}
	if !c.Since.IsZero() {
		out.Consul.Since = timestamppb.New(c.Since)
	}
	return out, nil
}

// GetTraffic implements AdminService.
func (s *Server) GetTraffic(context.Context, *adminv1.GetTrafficRequest) (*adminv1.GetTrafficResponse, error) {
	t := s.live.Traffic()
	out := &adminv1.GetTrafficResponse{
		Time:         timestamppb.New(t.Time),
		Window:       durationpb.New(t.Window),
		ErrorsWindow: durationpb.New(t.ErrorWindow),
	}
	for _, r := range t.Routes {
		rt := &adminv1.RouteTraffic{
			Method:            r.FullMethod,
			Requests:          r.Requests,
			Errors:            r.Errors,
			RequestsPerSecond: r.RequestsPerSecond,
			ErrorRatio:        r.ErrorRatio,
			P50Seconds:        r.P50.Seconds(),
			P99Seconds:        r.P99.Seconds(),
		}
		for _, e := range r.RecentErrors {
			rt.RecentErrors = append(rt.RecentErrors, &adminv1.CodeCount{Code: e.Code.String(), Count: e.Count})
		}
		out.Routes = append(out.Routes, rt)
	}
	return out, nil
}

// buildInfo reads what the Go toolchain recorded in the binary.
func buildInfo(start time.Time) *adminv1.GetBuildInfoResponse {
	out := &adminv1.GetBuildInfoResponse{StartTime: timestamppb.New(start)}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return out
	}
	out.Module, out.Version, out.GoVersion = bi.Main.Path, bi.Main.Version, bi.GoVersion
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			out.Revision = kv.Value
		case "vcs.modified":
			out.Modified = kv.Value == "true"
		}
	}
	return out
}
