package chain_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// step is a fake policy that records the order of the chain, and may
// panic or refuse.
type step struct {
	name  string
	trace *[]string
	mu    *sync.Mutex
	panic bool
}

func (s step) record(ctx context.Context) {
	c, _ := policy.FromContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.trace = append(*s.trace, s.name+":"+string(c.Transport))
}

func (s step) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.record(ctx)
		if s.panic {
			panic("test panic in " + s.name)
		}
		return h(ctx, req)
	}
}

func (s step) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		s.record(ss.Context())
		if s.panic {
			panic("test panic in " + s.name)
		}
		return h(srv, ss)
	}
}

// reader is a policy that reads requests.
type reader struct{ step }

func (reader) ReadsRequests() {}

// counter counts panics and refusals.
type counter struct {
	step
	panics   []string
	refusals []string
}

func (c *counter) CountPanic(m string) { c.panics = append(c.panics, m) }
func (c *counter) Refused(_ context.Context, call *policy.Call, err error, _ int) {
	c.refusals = append(c.refusals, string(call.Transport)+" "+status.Code(err).String())
}

func table(t *testing.T) *route.Table {
	t.Helper()
	tbl, err := route.Build([]protoreflect.ServiceDescriptor{ordersv1.File_orders_v1_orders_proto.Services().ByName("OrderService")}, route.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestBindOrderAndDecodePlace(t *testing.T) {
	var trace []string
	mu := &sync.Mutex{}
	mk := func(name string) step { return step{name: name, trace: &trace, mu: mu} }
	decode := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		trace = append(trace, "decode")
		return h(ctx, req)
	}
	extra := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		trace = append(trace, "embedder")
		return h(ctx, req)
	}
	c := chain.New(chain.Config{Routes: table(t),
		Policies: []chain.Policy{mk("stats"), mk("auth"), reader{mk("validate")}, mk("fifth")},
		Unary:    []grpc.UnaryServerInterceptor{extra}})
	bound := c.Bind("/orders.v1.OrderService/GetOrder", decode)(func(ctx context.Context, req any) (any, error) {
		trace = append(trace, "proxy")
		return "ok", nil
	})
	ctx := peer.NewContext(context.Background(), chain.RESTPeer)
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(proxy.MDRoute, "GET /v1/orders/{id}", proxy.MDClientIP, "203.0.113.7"))
	if resp, err := bound(ctx, nil); resp != "ok" || err != nil {
		t.Fatalf("bound chain: %v %v", resp, err)
	}
	if got := strings.Join(trace, " "); got != "stats:rest auth:rest decode validate:rest fifth:rest embedder proxy" {
		t.Errorf("order: %s", got)
	}
	if c.Mode(false) != proxy.Typed || c.Mode(true) != proxy.ForPolicies {
		t.Errorf("modes: unary %v stream %v, want Typed and ForPolicies", c.Mode(false), c.Mode(true))
	}
	if m := chain.New(chain.Config{Routes: table(t), Policies: []chain.Policy{mk("stats")}}).Mode(false); m != proxy.AsBytes {
		t.Errorf("nothing reads requests: mode %v, want AsBytes", m)
	}

	// A method the chain has no route for is a wiring mistake: INTERNAL.
	_, err := c.Bind("/orders.v1.OrderService/Nope", nil)(func(context.Context, any) (any, error) { return nil, nil })(ctx, nil)
	if status.Code(err) != codes.Internal {
		t.Errorf("unrouted method: %v, want INTERNAL", err)
	}
}

func TestCallFacts(t *testing.T) {
	trusted, _ := clientip.Parse([]string{"10.0.0.0/8"})
	facts := factsOf(t, chain.Config{Trusted: trusted})
	// A gRPC client behind a trusted proxy, which also tries to pass as the REST door.
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.1.1.1"), Port: 5}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-forwarded-for", "198.51.100.4", proxy.MDClientIP, "1.1.1.1", proxy.MDRoute, "GET /forged"))
	if got := facts("a forged REST door's word", ctx); got.Transport != policy.GRPC || got.ClientIP != "198.51.100.4" || got.HTTPRoute != "" || got.Backend != "orders" ||
		got.Input.FullName() != "orders.v1.GetOrderRequest" || got.Policy == nil {
		t.Errorf("facts: %+v", got)
	}
}

// serve runs a real gRPC server with the chain's server options, the
// health service (not routed) and a routed WatchOrder that answers at once.
func serve(t *testing.T, c *chain.Chain) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(c.ServerOptions(proxy.DecodeStream)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	srv.RegisterService(&grpc.ServiceDesc{ServiceName: "orders.v1.OrderService", HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "WatchOrder", ServerStreams: true, Handler: func(any, grpc.ServerStream) error { return nil }}}}, struct{}{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestServer(t *testing.T) {
	var trace []string
	cnt := &counter{step: step{name: "refusing", trace: &trace, mu: &sync.Mutex{}, panic: true}}
	conn := serve(t, chain.New(chain.Config{Routes: table(t), Policies: []chain.Policy{cnt}}))
	ctx := t.Context()

	// The gateway's own services do not meet the policies.
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health: %v", err)
	}
	// A routed stream does, and a panic there answers INTERNAL and is counted.
	var trailer metadata.MD
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/orders.v1.OrderService/WatchOrder", grpc.Trailer(&trailer))
	if err == nil {
		_ = cs.SendMsg(&ordersv1.WatchOrderRequest{})
		_ = cs.CloseSend()
		err = cs.RecvMsg(&ordersv1.WatchOrderResponse{})
	}
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "test panic") || trailer.Get(policy.ErrorSourceKey)[0] != "gateway" {
		t.Errorf("panicking stream: %v, trailer %v", err, trailer)
	}
	if strings.Join(cnt.panics, ",") != "/orders.v1.OrderService/WatchOrder" {
		t.Errorf("panics counted: %v", cnt.panics)
	}
	// An unknown method: UNIMPLEMENTED, NO_ROUTE, from the gateway, counted.
	trailer = nil
	err = conn.Invoke(ctx, "/orders.v1.OrderService/Nope", &ordersv1.GetOrderRequest{}, &ordersv1.GetOrderResponse{}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if st.Code() != codes.Unimplemented || reason != policy.ReasonNoRoute || trailer.Get(policy.ErrorSourceKey)[0] != "gateway" {
		t.Errorf("unknown method: %v (%s), trailer %v", err, reason, trailer)
	}
	if strings.Join(cnt.refusals, ",") != "grpc Unimplemented" {
		t.Errorf("refusals: %v", cnt.refusals)
	}
}
