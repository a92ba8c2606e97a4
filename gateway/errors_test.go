package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"log/slog"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/host"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// failure is what a client learns about a failed call: the code, the
// ErrorInfo reason and who made the error.
type failure struct {
	code   codes.Code
	reason string
	source string
	msg    string
}

func (o failure) String() string {
	return fmt.Sprintf("%s/%s from %s (%q)", o.code, o.reason, o.source, o.msg)
}

func grpcFailure(err error, trailer metadata.MD) failure {
	st := status.Convert(err)
	o := failure{code: st.Code(), msg: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			o.reason = info.GetReason()
		}
	}
	if v := trailer.Get(policy.ErrorSourceKey); len(v) > 0 {
		o.source = v[0]
	}
	return o
}

func restFailure(r restResponse) failure {
	o := failure{source: r.Header.Get("X-Portico-Error-Source")}
	if c, ok := r.Body["code"].(float64); ok {
		o.code = codes.Code(c)
	}
	o.msg, _ = r.Body["message"].(string)
	o.reason, _ = errorInfo(r.Body)
	return o
}

// rawCodec sends and receives bytes as they are: a client that sends what
// is not a protobuf message of the method's type.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// notAMessage claims a 5-byte field 1 and ends after one byte.
var notAMessage = []byte{0x0a, 0x05, 'A'}

// resettingListener breaks, with a TCP reset, the connection a call came in
// on: a backend instance that dies or is cut off in the middle of a call.
type resettingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[string]*net.TCPConn
}

func (l *resettingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tcp, ok := c.(*net.TCPConn); ok {
		l.mu.Lock()
		l.conns[tcp.RemoteAddr().String()] = tcp
		l.mu.Unlock()
	}
	return c, err
}

func (l *resettingListener) reset(ctx context.Context) {
	p, _ := peer.FromContext(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.conns[p.Addr.String()]; c != nil {
		_ = c.SetLinger(0) // close sends RST, not FIN
		_ = c.Close()
	}
}

// resettingOrders answers ListOrders, and resets the connection of every
// GetOrder and of every WatchOrder after its first message.
type resettingOrders struct {
	ordersv1.UnimplementedOrderServiceServer
	lis *resettingListener
}

func (o *resettingOrders) ListOrders(context.Context, *ordersv1.ListOrdersRequest) (*ordersv1.ListOrdersResponse, error) {
	return &ordersv1.ListOrdersResponse{}, nil
}

func (o *resettingOrders) GetOrder(ctx context.Context, _ *ordersv1.GetOrderRequest) (*ordersv1.GetOrderResponse, error) {
	o.lis.reset(ctx)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (o *resettingOrders) WatchOrder(req *ordersv1.WatchOrderRequest, ss grpc.ServerStreamingServer[ordersv1.WatchOrderResponse]) error {
	if err := ss.Send(&ordersv1.WatchOrderResponse{Order: &ordersv1.Order{Id: req.GetId()}}); err != nil {
		return err
	}
	o.lis.reset(ss.Context())
	<-ss.Context().Done()
	return ss.Context().Err()
}

// TestSameErrorOnEveryPath runs the failures the gateway itself answers
// over REST, gRPC unary calls and gRPC streams, and demands the same
// reason and error source everywhere, and the same code (an unknown REST
// path is NOT_FOUND, HTTP's word for it; an unknown gRPC method is
// UNIMPLEMENTED, gRPC's). No message may carry a socket address.
func TestSameErrorOnEveryPath(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) { c.RateLimit.Mode = "off" })
	w.startCatalog()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &resettingListener{Listener: lis, conns: map[string]*net.TCPConn{}}
	w.startHostWith(host.Config{Name: w.orders, Listener: rl,
		Register: func(s *grpc.Server) { ordersv1.RegisterOrderServiceServer(s, &resettingOrders{lis: rl}) }})
	orders := w.ordersClient()
	// After a reset the gateway reconnects; each case starts on a ready
	// connection, so it meets the reset and not the reconnection.
	ready := func() {
		testutil.Eventually(t, 20*time.Second, "the gateway to reach the orders instance again", func() bool {
			_, err := orders.ListOrders(context.Background(), &ordersv1.ListOrdersRequest{})
			return err == nil
		})
	}
	grpcUnary := func(method string, req any) failure {
		var trailer metadata.MD
		var resp []byte
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := w.conn.Invoke(ctx, method, req, &resp, grpc.Trailer(&trailer), grpc.ForceCodecV2(rawCodec{}))
		return grpcFailure(err, trailer)
	}
	grpcStream := func(method string, req any) failure {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cs, err := w.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			return grpcFailure(err, nil)
		}
		if err = cs.SendMsg(req); err == nil {
			_ = cs.CloseSend()
			for err == nil {
				var m []byte
				err = cs.RecvMsg(&m)
			}
		}
		return grpcFailure(err, cs.Trailer())
	}
	orderBytes := mustMarshal(t, &ordersv1.GetOrderRequest{Id: "ord-1"})
	watchBytes := mustMarshal(t, &ordersv1.WatchOrderRequest{Id: "ord-1"})

	type path struct {
		name string
		call func() failure
	}
	for _, tc := range []struct {
		name  string
		want  failure
		paths []path
		setup func()
	}{
		{
			name: "malformed message", want: failure{code: codes.InvalidArgument, reason: policy.ReasonBadRequest, source: policy.SourceGateway},
			paths: []path{
				{"rest", func() failure { return restFailure(w.rest("POST", "/v1/products", `{"product": {"sku": `)) }},
				{"grpc unary", func() failure { return grpcUnary("/catalog.v1.CatalogService/GetProduct", &notAMessage) }},
				{"grpc stream", func() failure { return grpcStream("/orders.v1.OrderService/WatchOrder", &notAMessage) }},
			},
		},
		{
			name: "unknown method", want: failure{code: codes.Unimplemented, reason: policy.ReasonNoRoute, source: policy.SourceGateway},
			paths: []path{
				{"rest", func() failure {
					o := restFailure(w.rest("GET", "/v1/no-such-thing", nil))
					if o.code == codes.NotFound {
						o.code = codes.Unimplemented // HTTP's 404 for an unknown path
					}
					return o
				}},
				{"grpc unary", func() failure { return grpcUnary("/catalog.v1.CatalogService/NoSuchMethod", &orderBytes) }},
				{"grpc stream", func() failure { return grpcStream("/no.such.v1.Service/Watch", &watchBytes) }},
			},
		},
		{
			name: "backend reset", want: failure{code: codes.Unavailable, reason: policy.ReasonBackendUnreachable, source: policy.SourceGateway},
			setup: ready,
			paths: []path{
				{"rest", func() failure { return restFailure(w.rest("GET", "/v1/orders/ord-1", nil)) }},
				{"grpc unary", func() failure { return grpcUnary("/orders.v1.OrderService/GetOrder", &orderBytes) }},
				{"grpc stream", func() failure { return grpcStream("/orders.v1.OrderService/WatchOrder", &watchBytes) }},
			},
		},
	} {
		for _, p := range tc.paths {
			if tc.setup != nil {
				tc.setup()
			}
			got := p.call()
			t.Logf("%s over %s: %v", tc.name, p.name, got)
			if got.code != tc.want.code || got.reason != tc.want.reason || got.source != tc.want.source {
				t.Errorf("%s over %s: %v, want %v", tc.name, p.name, got, tc.want)
			}
			if strings.Contains(got.msg, "127.0.0.1") || strings.Contains(got.msg, rl.Addr().String()) {
				t.Errorf("%s over %s: the message leaks an address: %q", tc.name, p.name, got.msg)
			}
		}
	}
}

// TestPanicAnswersInternal injects a panic into the chain through an
// embedder's interceptor, once per door and kind of call: each answers
// INTERNAL, is counted and logged with its stack, and the gateway goes on
// serving the next call.
func TestPanicAnswersInternal(t *testing.T) {
	var panics sync.Map // full method -> already panicked
	once := func(method string) {
		if _, done := panics.LoadOrStore(method, true); !done {
			panic("injected by the test for " + method)
		}
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*catalogv1.GetProductRequest); ok {
			once(r.GetId())
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		once(info.FullMethod)
		return handler(srv, ss)
	}
	logs := &testutil.LockedBuffer{}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithUnaryInterceptors(unary), gateway.WithStreamInterceptors(stream),
		gateway.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))})
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))

	// gRPC unary, twice.
	for i, want := range []codes.Code{codes.Internal, codes.OK} {
		var trailer metadata.MD
		_, err := w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Trailer(&trailer))
		if got := grpcFailure(err, trailer); got.code != want || (want == codes.Internal && (got.reason != policy.ReasonInternal || got.source != policy.SourceGateway || strings.Contains(got.msg, "injected"))) {
			t.Errorf("grpc unary call %d: %v, want %v", i+1, got, want)
		}
	}
	// REST unary, twice.
	for i, want := range []int{http.StatusInternalServerError, http.StatusOK} {
		if r := w.rest("GET", "/v1/products/prd-000002", nil); r.Status != want || strings.Contains(string(r.Raw), "injected") {
			t.Errorf("rest call %d: %d %s, want %d", i+1, r.Status, r.Raw, want)
		}
	}
	// A gRPC stream, twice.
	order, err := w.ordersClient().CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []codes.Code{codes.Internal, codes.OK} {
		ws, err := w.ordersClient().WatchOrder(context.Background(), &ordersv1.WatchOrderRequest{Id: order.GetOrder().GetId()})
		if err == nil {
			_, err = ws.Recv()
		}
		if status.Code(err) != want {
			t.Errorf("grpc stream %d: %v, want %v", i+1, err, want)
		}
	}
	m, _ := scrape(t, w)
	if got := m[`portico_panics_total{method="GetProduct",service="catalog.v1.CatalogService"}`]; got != 2 {
		t.Errorf("portico_panics_total for GetProduct = %v, want 2", got)
	}
	if got := m[`portico_panics_total{method="WatchOrder",service="orders.v1.OrderService"}`]; got != 1 {
		t.Errorf("portico_panics_total for WatchOrder = %v, want 1", got)
	}
	if got := m[`portico_requests_total{code="Internal",method="GetProduct",service="catalog.v1.CatalogService",transport="grpc"}`]; got != 1 {
		t.Errorf("the panicked gRPC call is counted %v times as INTERNAL, want 1", got)
	}
	if got := m[`portico_requests_in_flight{method="GetProduct",service="catalog.v1.CatalogService",transport="rest"}`]; got != 0 {
		t.Errorf("in flight after a panic = %v, want 0", got)
	}
	if log := logs.String(); !strings.Contains(log, "injected by the test") || !strings.Contains(log, "goroutine") {
		t.Errorf("the panic was not logged with its stack:\n%s", log)
	}
}

// TestRefusedCallsAreCounted: what the doors refuse before the chain runs
// is still a call, in portico_requests_total and the access log, under a
// bounded route label.
func TestRefusedCallsAreCounted(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	if r := w.rest("GET", "/v1/no/such/path/"+strings.Repeat("x", 40), nil); r.Status != http.StatusNotFound {
		t.Fatalf("unknown path: %d %s", r.Status, r.Raw)
	}
	if r := w.rest("POST", "/v1/products", `{"product": `); r.Status != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d %s", r.Status, r.Raw)
	}
	big := `{"product": {"name": "` + strings.Repeat("x", 5<<20) + `"}}`
	if r := w.rest("POST", "/v1/products", big); r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d %s", r.Status, r.Raw)
	}
	var resp []byte
	if err := w.conn.Invoke(context.Background(), "/catalog.v1.CatalogService/NoSuchMethod", &notAMessage, &resp, grpc.ForceCodecV2(rawCodec{})); status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown gRPC method: %v", err)
	}

	m, text := scrape(t, w)
	for series, want := range map[string]float64{
		`portico_requests_total{code="NotFound",method="unmatched",service="unmatched",transport="rest"}`:                            1,
		`portico_requests_total{code="ResourceExhausted",method="unmatched",service="unmatched",transport="rest"}`:                   1,
		`portico_requests_total{code="Unimplemented",method="unmatched",service="unmatched",transport="grpc"}`:                       1,
		`portico_requests_total{code="InvalidArgument",method="CreateProduct",service="catalog.v1.CatalogService",transport="rest"}`: 1,
	} {
		if got := m[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if strings.Contains(text, "no/such/path") || strings.Contains(text, "NoSuchMethod") {
		t.Error("/metrics carries a path or method the client chose")
	}
}

// TestGzip: clients may compress with gzip, over gRPC unary calls and
// streams; the gateway decompresses, forwards, and answers compressed.
func TestGzip(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))
	gz := grpc.UseCompressor(gzip.Name)
	resp, err := w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}, gz)
	if err != nil || resp.GetProduct().GetId() != "prd-000001" {
		t.Fatalf("gzip unary: %v %v", resp, err)
	}
	order, err := w.ordersClient().CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}}, gz)
	if err != nil {
		t.Fatalf("gzip unary to orders: %v", err)
	}
	ws, err := w.ordersClient().WatchOrder(context.Background(), &ordersv1.WatchOrderRequest{Id: order.GetOrder().GetId()}, gz)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ws.Recv(); err != nil || m.GetOrder().GetId() != order.GetOrder().GetId() {
		t.Fatalf("gzip stream: %v %v", m, err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
