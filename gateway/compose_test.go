package gateway_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/compose"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/stats"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	optionsv1 "github.com/portico-gw/portico/gen/portico/options/v1"
	"github.com/portico-gw/portico/gen/registry"
	storefrontv1 "github.com/portico-gw/portico/gen/storefront/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// readerKey belongs to consumer "reader", who has no scope.
const readerKey = "pk_test_reader_5d1e4c3b2a19f8e7d6c5b4a39281706f"

// composeWorld is a world whose GetOrder needs scope orders.read, which
// the test key has and readerKey has not, with the access log in logs.
func composeWorld(t *testing.T, logs *testutil.LockedBuffer, opts ...worldOpt) *world {
	t.Helper()
	return newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(stats.WithAccessLog(slog.New(slog.NewJSONHandler(logs, nil))))},
		append([]worldOpt{func(cfg *gateway.Config) {
			cfg.Auth.APIKeys[0].Scopes = append(cfg.Auth.APIKeys[0].Scopes, "orders.read")
			cfg.Auth.APIKeys = append(cfg.Auth.APIKeys, auth.APIKeyConfig{Consumer: "reader", SHA256: auth.HashAPIKey(readerKey)})
			sc := cfg.Services["orders.v1.OrderService"]
			sc.Methods = map[string]gateway.MethodConfig{"GetOrder": {PolicyConfig: gateway.PolicyConfig{Scopes: []string{"orders.read"}}}}
			cfg.Services["orders.v1.OrderService"] = sc
		}}, opts...)...)
}

// placeOrder places an order of one each of the products and returns its id.
func (w *world) placeOrder(products ...string) string {
	w.t.Helper()
	var items []*ordersv1.LineItem
	for _, p := range products {
		items = append(items, &ordersv1.LineItem{ProductId: p, Quantity: 1})
	}
	resp, err := w.ordersClient().CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{Items: items})
	if err != nil {
		w.t.Fatal(err)
	}
	return resp.GetOrder().GetId()
}

func (w *world) storefront() storefrontv1.StorefrontServiceClient {
	return storefrontv1.NewStorefrontServiceClient(w.conn)
}

// as is the world seen by the caller with key.
func (w *world) as(key string) *world {
	c := w.anon()
	c.key, c.conn = key, dial(w.t, w.gw.GRPCAddr(), key)
	return c
}

// restStepInfo is the ErrorInfo of a REST error body: reason and metadata.
func restStepInfo(body map[string]any) (string, map[string]any) {
	details, _ := body["details"].([]any)
	for _, d := range details {
		m, _ := d.(map[string]any)
		if m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			r, _ := m["reason"].(string)
			md, _ := m["metadata"].(map[string]any)
			return r, md
		}
	}
	return "", nil
}

func grpcStepInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// accessLines are the JSON access log lines for method.
func accessLines(logs *testutil.LockedBuffer, method string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "call" && m["method"] == method {
			out = append(out, m)
		}
	}
	return out
}

const (
	getOrderDetails = "/storefront.v1.StorefrontService/GetOrderDetails"
	partialHeader   = "X-Portico-Partial-Failure"
)

func TestCompositeOrderDetails(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	w := composeWorld(t, logs)
	catalogHost := w.startCatalog()
	ordersHost := w.startOrders()
	products := []string{"prd-000001", "prd-000002", "prd-000003"}
	id := w.placeOrder(products...)
	path := "/v1/orders/" + id + "/details"
	ctx := context.Background()
	req := &storefrontv1.GetOrderDetailsRequest{Id: id}

	t.Run("the order and one product per item", func(t *testing.T) {
		r := w.rest("GET", path, nil)
		if r.Status != 200 || field(r.Body, "order", "id") != id {
			t.Fatalf("REST: %d %s", r.Status, r.Raw)
		}
		got, _ := r.Body["products"].([]any)
		if len(got) != len(products) {
			t.Fatalf("REST: %d products, want %d: %s", len(got), len(products), r.Raw)
		}
		for i, p := range got {
			if p.(map[string]any)["id"] != products[i] {
				t.Errorf("REST: product %d is %v, want %s", i, p, products[i])
			}
		}
		if h := r.Header.Get(partialHeader); h != "" {
			t.Errorf("REST: partial failure %q on a call that had none", h)
		}
		var trailer metadata.MD
		resp, err := w.storefront().GetOrderDetails(ctx, req, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatalf("gRPC: %v", err)
		}
		if resp.GetOrder().GetId() != id || len(resp.GetProducts()) != len(products) || resp.GetProducts()[2].GetId() != products[2] {
			t.Fatalf("gRPC: %v", resp)
		}
		if v := trailer.Get(compose.PartialFailureKey); len(v) > 0 {
			t.Errorf("gRPC: partial failure %v on a call that had none", v)
		}
		// Each step is a call of its method, marked as the composite's step.
		testutil.Eventually(t, 5*time.Second, "six GetProduct steps in the access log", func() bool {
			n := 0
			for _, l := range accessLines(logs, "/catalog.v1.CatalogService/GetProduct") {
				if l["step_of"] == getOrderDetails && l["step"] == "products" && l["consumer"] == testConsumer {
					n++
				}
			}
			return n == 2*len(products)
		})
	})

	t.Run("two independent steps", func(t *testing.T) {
		r := w.rest("GET", "/v1/home?pageSize=2", nil)
		prods, _ := r.Body["products"].([]any)
		ords, _ := r.Body["orders"].([]any)
		if r.Status != 200 || len(prods) != 2 || len(ords) != 1 {
			t.Fatalf("REST: %d %s, want two products and the caller's order", r.Status, r.Raw)
		}
		home, err := w.storefront().GetHome(ctx, &storefrontv1.GetHomeRequest{PageSize: 2})
		if err != nil || len(home.GetProducts()) != 2 || len(home.GetOrders()) != 1 || home.GetOrders()[0].GetId() != id {
			t.Fatalf("gRPC: %v %v", home, err)
		}
	})

	t.Run("shown with its steps", func(t *testing.T) {
		var b strings.Builder
		if err := route.Print(&b, w.gw.Routes()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "storefront.v1.StorefrontService/GetOrderDetails is composite") ||
			!regexp.MustCompile(`step products +catalog.v1.CatalogService/GetProduct +for_each order.order.items, optional`).MatchString(b.String()) {
			t.Errorf("-routes does not show the steps:\n%s", b.String())
		}
		resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/routes")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Routes []struct {
				Method, Backend string
				Steps           []struct{ Name, Method, ForEach string }
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		for _, r := range body.Routes {
			if r.Method == getOrderDetails {
				if len(r.Steps) != 2 || r.Steps[0].Name != "order" || r.Steps[1].ForEach != "order.order.items" || r.Backend != "" {
					t.Errorf("admin API: %+v", r)
				}
				return
			}
		}
		t.Errorf("admin API: no route %s", getOrderDetails)
	})

	t.Run("no credentials", func(t *testing.T) {
		a := w.anon()
		if r := a.rest("GET", path, nil); r.Status != 401 {
			t.Errorf("REST: %d %s, want 401", r.Status, r.Raw)
		}
		if _, err := a.storefront().GetOrderDetails(ctx, req); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC: %v, want UNAUTHENTICATED", err)
		}
	})

	t.Run("a scope one step needs", func(t *testing.T) {
		rd := w.as(readerKey)
		r := rd.rest("GET", path, nil)
		reason, md := restStepInfo(r.Body)
		if r.Status != 403 || md["step"] != "order" || md["step_method"] != "orders.v1.OrderService/GetOrder" ||
			!strings.Contains(field(r.Body, "message").(string), `step "order"`) {
			t.Errorf("REST: %d %s, want 403 naming step order", r.Status, r.Raw)
		}
		_, err := rd.storefront().GetOrderDetails(ctx, req)
		info := grpcStepInfo(err)
		if status.Code(err) != codes.PermissionDenied || info.GetMetadata()["step"] != "order" || info.GetReason() != reason {
			t.Errorf("gRPC: %v %v, want PERMISSION_DENIED naming step order, reason %s", err, info, reason)
		}
		t.Logf("REST: %d %s", r.Status, r.Raw)
	})

	t.Run("every catalog instance stopped", func(t *testing.T) {
		stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		catalogHost.Stop(stopCtx)
		w.waitRoutedExactly(w.catalog)
		want := "step=products code=UNAVAILABLE failed=3/3"
		r := w.rest("GET", path, nil)
		if got, _ := r.Body["products"].([]any); r.Status != 200 || field(r.Body, "order", "id") != id || len(got) != 0 {
			t.Fatalf("REST: %d %s, want the order with no product", r.Status, r.Raw)
		}
		if h := r.Header.Get(partialHeader); h != want {
			t.Errorf("REST: %s: %q, want %q", partialHeader, h, want)
		}
		var trailer metadata.MD
		resp, err := w.storefront().GetOrderDetails(ctx, req, grpc.Trailer(&trailer))
		if err != nil || resp.GetOrder().GetId() != id || len(resp.GetProducts()) != 0 {
			t.Fatalf("gRPC: %v %v, want the order with no product", resp, err)
		}
		if v := trailer.Get(compose.PartialFailureKey); len(v) != 1 || v[0] != want {
			t.Errorf("gRPC: trailer %s: %v, want %q", compose.PartialFailureKey, v, want)
		}
		testutil.Eventually(t, 5*time.Second, "the partial failure in the access log", func() bool {
			n := 0
			for _, l := range accessLines(logs, getOrderDetails) {
				if l["partial_failure"] == want && l["code"] == "OK" {
					n++
				}
			}
			return n == 2
		})
		t.Logf("REST: %d %s: %s %s", r.Status, partialHeader, r.Header.Get(partialHeader), r.Raw)
	})

	t.Run("the orders backend stopped", func(t *testing.T) {
		stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ordersHost.Stop(stopCtx)
		w.waitRoutedExactly(w.orders)
		r := w.rest("GET", path, nil)
		reason, md := restStepInfo(r.Body)
		if r.Status != 503 || reason != policy.ReasonNoHealthyBackend || md["step"] != "order" {
			t.Errorf("REST: %d %s, want 503 NO_HEALTHY_BACKEND naming step order", r.Status, r.Raw)
		}
		if src := r.Header.Get("X-Portico-Error-Source"); src != policy.SourceGateway {
			t.Errorf("REST: error source %q, want gateway", src)
		}
		_, err := w.storefront().GetOrderDetails(ctx, req)
		if info := grpcStepInfo(err); status.Code(err) != codes.Unavailable || info.GetMetadata()["step"] != "order" {
			t.Errorf("gRPC: %v %v, want UNAVAILABLE naming step order", err, info)
		}
		t.Logf("REST: %d %s", r.Status, r.Raw)
	})
}

// TestCompositeStepRateLimit: a step's call is charged to its method's rate
// limit, per call, for the composite's caller.
func TestCompositeStepRateLimit(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	w := composeWorld(t, logs, func(cfg *gateway.Config) {
		sc := cfg.Services["catalog.v1.CatalogService"]
		sc.Methods = map[string]gateway.MethodConfig{"GetProduct": {PolicyConfig: gateway.PolicyConfig{
			RateLimit: &policy.RateLimit{Requests: 4, Period: time.Hour, Burst: 4}}}}
		cfg.Services["catalog.v1.CatalogService"] = sc
	})
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001", "prd-000002", "prd-000003")
	ctx := context.Background()

	// Three items: three of the four calls the limit allows.
	r := w.rest("GET", "/v1/orders/"+id+"/details", nil)
	if got, _ := r.Body["products"].([]any); r.Status != 200 || len(got) != 3 || r.Header.Get(partialHeader) != "" {
		t.Fatalf("REST: %d %s %q, want three products", r.Status, r.Raw, r.Header.Get(partialHeader))
	}
	// One call left: one product, two refused by the limit.
	var trailer metadata.MD
	resp, err := w.storefront().GetOrderDetails(ctx, &storefrontv1.GetOrderDetailsRequest{Id: id}, grpc.Trailer(&trailer))
	if err != nil || len(resp.GetProducts()) != 1 {
		t.Fatalf("gRPC: %v %v, want one product", resp, err)
	}
	if v := trailer.Get(compose.PartialFailureKey); len(v) != 1 || v[0] != "step=products code=RESOURCE_EXHAUSTED failed=2/3" {
		t.Errorf("gRPC: partial failure %v, want two calls refused by the rate limit", v)
	}
	// The caller's own call of the method meets the same, empty bucket.
	if d := w.rest("GET", "/v1/products/prd-000001", nil); d.Status != 429 {
		t.Errorf("GetProduct after the composites: %d %s, want 429", d.Status, d.Raw)
	}
}

// TestCompositeBrokenPlanStopsTheGateway: a plan that does not check keeps
// the gateway from being built, with a message naming file, method, step.
func TestCompositeBrokenPlanStopsTheGateway(t *testing.T) {
	mo := &descriptorpb.MethodOptions{}
	proto.SetExtension(mo, optionsv1.E_Compose, &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
		{Name: "order", Method: "orders.v1.OrderService/GetOrder", Request: "orders.v1.GetOrderRequest{id: request.id}"},
		{Name: "products", Method: "catalog.v1.CatalogService/GetProduct", ForEach: "order.order.items", Request: "catalog.v1.GetProductRequest{id: item.quantity}"},
	}, Response: "GetOrderDetailsResponse{order: order.order}"})
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("shop/v1/shop.proto"), Package: proto.String("shop.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{"storefront/v1/storefront.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("ShopService"), Method: []*descriptorpb.MethodDescriptorProto{{
			Name: proto.String("GetOrderDetails"), Options: mo,
			InputType: proto.String(".storefront.v1.GetOrderDetailsRequest"), OutputType: proto.String(".storefront.v1.GetOrderDetailsResponse"),
		}}}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	shop := gateway.Service{Descriptor: fd.Services().Get(0),
		RegisterHTTP: func(context.Context, *runtime.ServeMux, grpc.ClientConnInterface) error { return nil }}
	_, err = gateway.New(gateway.Config{}, append(registry.Services(), shop))
	want := `shop/v1/shop.proto: shop.v1.ShopService/GetOrderDetails: step "products": request:`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "field 'id' is 'string' but provided type is 'int'") {
		t.Fatalf("New: %v, want an error that says %q and the type error", err, want)
	}
	t.Logf("%v", err)
}

// TestCompositeSpans: each step is a span of its method's under the
// composite's span, in the caller's trace.
func TestCompositeSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(stats.WithTracerProvider(tp))})
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001", "prd-000002")
	const traceID = "33333333333333333333333333333333"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-3333333333333333-01")
	if _, err := w.storefront().GetOrderDetails(ctx, &storefrontv1.GetOrderDetailsRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	var composite string
	children := map[string]int{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() != traceID || s.SpanKind != trace.SpanKindServer {
			continue
		}
		if s.Name == getOrderDetails[1:] {
			composite = s.SpanContext.SpanID().String()
		}
	}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() == traceID && s.SpanKind == trace.SpanKindServer && s.Parent.SpanID().String() == composite {
			children[s.Name]++
		}
	}
	if composite == "" || children["orders.v1.OrderService/GetOrder"] != 1 || children["catalog.v1.CatalogService/GetProduct"] != 2 {
		t.Fatalf("composite span %q with step spans %v, want GetOrder once and GetProduct twice under it", composite, children)
	}
}

// TestCompositeClientCertificate: a caller whose only credential is its
// client certificate is the same caller to every step, over both doors.
func TestCompositeClientCertificate(t *testing.T) {
	m := newMTLSWorld(t)
	// The recorder's orders backend answers GetOrder UNIMPLEMENTED: a step
	// that got there was admitted as the shop; one that did not was refused.
	_, err := storefrontv1.NewStorefrontServiceClient(m.grpcConn(t, m.shop)).GetOrderDetails(context.Background(),
		&storefrontv1.GetOrderDetailsRequest{Id: "ord-000001"})
	if info := grpcStepInfo(err); status.Code(err) != codes.Unimplemented || info.GetMetadata()["step"] != "order" {
		t.Errorf("gRPC: %v, want the backend's UNIMPLEMENTED for step order", err)
	}
	code, body := m.restDo(t, m.restClient(m.shop, false), "GET", "/v1/orders/ord-000001/details", "", nil)
	if code != 501 || !strings.Contains(string(body), `step \"order\"`) {
		t.Errorf("REST: %d %s, want the backend's 501 for step order", code, body)
	}
}

// TestCompositeStepMaxTimeout: a step meets its own method's max_timeout,
// as a call of that method at either door does: GetProduct capped at
// 100ms against a catalog that takes 400ms fails within the composite's
// 5s, and the optional products step says so.
func TestCompositeStepMaxTimeout(t *testing.T) {
	w := composeWorld(t, &testutil.LockedBuffer{}, func(cfg *gateway.Config) {
		sc := cfg.Services["catalog.v1.CatalogService"]
		sc.Methods = map[string]gateway.MethodConfig{"GetProduct": {Timeout: 100 * time.Millisecond, MaxTimeout: 100 * time.Millisecond}}
		cfg.Services["catalog.v1.CatalogService"] = sc
	})
	catalogHost := w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001")
	if err := catalogHost.SetFaults(host.Faults{Delay: 400 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if d := w.rest("GET", "/v1/products/prd-000001", nil); d.Status != 504 {
		t.Fatalf("GetProduct called directly: %d %s, want 504", d.Status, d.Raw)
	}
	const want = "step=products code=DEADLINE_EXCEEDED failed=1/1"
	r := w.rest("GET", "/v1/orders/"+id+"/details", nil)
	if got, _ := r.Body["products"].([]any); r.Status != 200 || len(got) != 0 || r.Header.Get(partialHeader) != want {
		t.Errorf("REST: %d %q %s, want the order without its product and %q", r.Status, r.Header.Get(partialHeader), r.Raw, want)
	}
	var trailer metadata.MD
	resp, err := w.storefront().GetOrderDetails(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: id}, grpc.Trailer(&trailer))
	if v := trailer.Get(compose.PartialFailureKey); err != nil || len(resp.GetProducts()) != 0 || len(v) != 1 || v[0] != want {
		t.Errorf("gRPC: %v %v %v, want the order without its product and %q", resp, err, v, want)
	}
}

// mdCatalog is the real catalog, remembering the metadata of the last
// GetProduct it served.
type mdCatalog struct {
	catalogv1.CatalogServiceServer
	mu   sync.Mutex
	last metadata.MD
}

func (c *mdCatalog) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c.mu.Lock()
	c.last = md
	c.mu.Unlock()
	return c.CatalogServiceServer.GetProduct(ctx, req)
}

func (c *mdCatalog) take() metadata.MD {
	c.mu.Lock()
	defer c.mu.Unlock()
	md := c.last
	c.last = nil
	return md
}

// TestCompositeStepForwardedFor: a step's backend sees the caller's hops
// as a direct call's backend does (the gRPC caller's real address joins
// x-forwarded-for), and none of the x-portico-* keys the caller forged,
// which the step's chain would otherwise believe (the route in its log).
func TestCompositeStepForwardedFor(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	w := composeWorld(t, logs)
	rec := &mdCatalog{CatalogServiceServer: catalog.NewServer()}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, rec) })
	w.startOrders()
	id := w.placeOrder("prd-000001")
	forged := []string{proxy.MDRoute, "GET /forged", proxy.MDClientCert, "forged", proxy.MDClientIP, "6.6.6.7", "x-forwarded-for", "6.6.6.6"}
	ctx := metadata.AppendToOutgoingContext(context.Background(), forged...)
	rec.take()

	if _, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Fatal(err)
	}
	direct := rec.take()
	if _, err := w.storefront().GetOrderDetails(ctx, &storefrontv1.GetOrderDetailsRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	step := rec.take()
	if got, want := step.Get("x-forwarded-for"), direct.Get("x-forwarded-for"); len(want) != 1 || want[0] != "6.6.6.6, 127.0.0.1" || !slices.Equal(got, want) {
		t.Errorf("gRPC: x-forwarded-for %v at the step's backend, %v at the direct call's, want both [6.6.6.6, 127.0.0.1]", got, want)
	}
	for _, k := range []string{proxy.MDRoute, proxy.MDClientCert, proxy.MDClientIP} {
		if v := step.Get(k); len(v) > 0 {
			t.Errorf("gRPC: the step's backend got %s: %q", k, v)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the step's access log line", func() bool {
		for _, l := range accessLines(logs, "/catalog.v1.CatalogService/GetProduct") {
			if l["step"] == "products" {
				if l["route"] != nil || l["client_ip"] != "127.0.0.1" {
					t.Errorf("the step's access log line: route %v, client_ip %v, want none and the caller's", l["route"], l["client_ip"])
				}
				return true
			}
		}
		return false
	})

	// Over REST, grpc-gateway adds the hop, for both.
	if r := w.restFrom("6.6.6.6", "GET", "/v1/products/prd-000001"); r.Status != 200 {
		t.Fatalf("REST: %d %s", r.Status, r.Raw)
	}
	direct = rec.take()
	if r := w.restFrom("6.6.6.6", "GET", "/v1/orders/"+id+"/details"); r.Status != 200 {
		t.Fatalf("REST: %d %s", r.Status, r.Raw)
	}
	if got, want := rec.take().Get("x-forwarded-for"), direct.Get("x-forwarded-for"); len(want) != 1 || !slices.Equal(got, want) {
		t.Errorf("REST: x-forwarded-for %v at the step's backend, want the direct call's %v", got, want)
	}

	// gRPC-Web and Connect: the caller's real hop joins its x-forwarded-for
	// as at the other doors, so a backend that believes the last hop is
	// not told the address the caller wrote.
	hdr := map[string]string{"X-Api-Key": testAPIKey, "X-Forwarded-For": "6.6.6.6"}
	for protocol, opts := range webProtocols {
		if _, err := webClient[catalogv1.GetProductRequest, catalogv1.GetProductResponse](w, "/catalog.v1.CatalogService/GetProduct", opts).
			CallUnary(context.Background(), webRequest(&catalogv1.GetProductRequest{Id: "prd-000001"}, hdr)); err != nil {
			t.Fatalf("%s: %v", protocol, err)
		}
		if got := rec.take().Get("x-forwarded-for"); len(got) != 1 || got[0] != "6.6.6.6, 127.0.0.1" {
			t.Errorf("%s: x-forwarded-for %v at the backend, want [6.6.6.6, 127.0.0.1]", protocol, got)
		}
		if _, err := webClient[storefrontv1.GetOrderDetailsRequest, storefrontv1.GetOrderDetailsResponse](w, getOrderDetails, opts).
			CallUnary(context.Background(), webRequest(&storefrontv1.GetOrderDetailsRequest{Id: id}, hdr)); err != nil {
			t.Fatalf("%s: %v", protocol, err)
		}
		if got := rec.take().Get("x-forwarded-for"); len(got) != 1 || got[0] != "6.6.6.6, 127.0.0.1" {
			t.Errorf("%s: x-forwarded-for %v at the step's backend, want [6.6.6.6, 127.0.0.1]", protocol, got)
		}
	}
}

// TestCompositeStepValidation: a step's request meets its method's
// validation: a plan that asks ListProducts for more than its page_size
// allows (100) fails with the step's INVALID_ARGUMENT, naming the step.
func TestCompositeStepValidation(t *testing.T) {
	mo := &descriptorpb.MethodOptions{}
	proto.SetExtension(mo, optionsv1.E_Compose, &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
		{Name: "products", Method: "catalog.v1.CatalogService/ListProducts", Request: "catalog.v1.ListProductsRequest{page_size: request.page_size * 3}"},
	}, Response: "GetHomeResponse{products: products.products}"})
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("stepcheck/v1/stepcheck.proto"), Package: proto.String("stepcheck.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{"storefront/v1/storefront.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("StepCheckService"), Method: []*descriptorpb.MethodDescriptorProto{{
			Name: proto.String("GetHome"), Options: mo,
			InputType: proto.String(".storefront.v1.GetHomeRequest"), OutputType: proto.String(".storefront.v1.GetHomeResponse"),
		}}}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	// gRPC-Web finds a service's schema in the global registry.
	if _, err := protoregistry.GlobalFiles.FindFileByPath(fd.Path()); err != nil {
		if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
			t.Fatal(err)
		}
	}
	stepcheck := gateway.Service{Descriptor: fd.Services().Get(0),
		RegisterHTTP: func(context.Context, *runtime.ServeMux, grpc.ClientConnInterface) error { return nil }}
	w := newWorldOf(t, false, append(registry.Services(), stepcheck), nil)
	w.startCatalog()
	const method = "/stepcheck.v1.StepCheckService/GetHome"
	ctx := context.Background()

	// 3 x 30 = 90 passes; 3 x 40 = 120 does not (the composite's own rule
	// allows up to 50).
	if err := w.conn.Invoke(ctx, method, &storefrontv1.GetHomeRequest{PageSize: 30}, &storefrontv1.GetHomeResponse{}); err != nil {
		t.Fatalf("page_size 30: %v", err)
	}
	err = w.conn.Invoke(ctx, method, &storefrontv1.GetHomeRequest{PageSize: 40}, &storefrontv1.GetHomeResponse{})
	info := grpcStepInfo(err)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || info.GetMetadata()["step"] != "products" ||
		!strings.Contains(st.Message(), `step "products" (catalog.v1.CatalogService/ListProducts)`) {
		t.Fatalf("page_size 40: %v %v, want INVALID_ARGUMENT naming step products", err, info)
	}
	found := false
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 && br.GetFieldViolations()[0].GetField() == "page_size" {
			found = true
		}
	}
	if !found {
		t.Errorf("no BadRequest naming page_size in %v", status.Convert(err).Proto())
	}
	t.Logf("%v", err)
}

// TestCompositePublicStepAuthenticated: a composite open to anyone cannot
// read what its caller could not: an anonymous caller's order step meets
// GetOrder's authentication and fails the call UNAUTHENTICATED, naming it.
func TestCompositePublicStepAuthenticated(t *testing.T) {
	w := composeWorld(t, &testutil.LockedBuffer{}, func(cfg *gateway.Config) {
		cfg.Services["storefront.v1.StorefrontService"] = gateway.ServiceConfig{PolicyConfig: gateway.PolicyConfig{Access: "public"}}
	})
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001")
	a := w.anon()
	r := a.rest("GET", "/v1/orders/"+id+"/details", nil)
	if _, md := restStepInfo(r.Body); r.Status != 401 || md["step"] != "order" || !strings.Contains(field(r.Body, "message").(string), `step "order"`) {
		t.Errorf("REST: %d %s, want 401 naming step order", r.Status, r.Raw)
	}
	_, err := a.storefront().GetOrderDetails(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: id})
	if info := grpcStepInfo(err); status.Code(err) != codes.Unauthenticated || info.GetMetadata()["step"] != "order" {
		t.Errorf("gRPC: %v %v, want UNAUTHENTICATED naming step order", err, info)
	}
	t.Logf("REST: %d %s", r.Status, r.Raw)
}

// composeGoroutines counts the goroutines running compose's code: the
// composite's handler and its steps.
func composeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := goruntime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/portico-gw/portico/gateway/compose.") {
			count++
		}
	}
	return count
}

// TestCompositeCallerCancels: a caller that goes away mid-call ends the
// composite's step calls and goroutines, long before any deadline would.
func TestCompositeCallerCancels(t *testing.T) {
	w := composeWorld(t, &testutil.LockedBuffer{}, func(cfg *gateway.Config) {
		for _, s := range []string{"storefront.v1.StorefrontService", "catalog.v1.CatalogService"} {
			sc := cfg.Services[s]
			sc.Timeout, sc.MaxTimeout = time.Minute, time.Minute
			cfg.Services[s] = sc
		}
	})
	catalogHost := w.startCatalog()
	w.startOrders()
	products := []string{"prd-000001", "prd-000002", "prd-000003", "prd-000004"}
	id := w.placeOrder(products...)
	if err := catalogHost.SetFaults(host.Faults{HangRate: 1}); err != nil {
		t.Fatal(err)
	}
	const getProduct = "/catalog.v1.CatalogService/GetProduct"
	before := catalogHost.Received(getProduct)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := w.storefront().GetOrderDetails(ctx, &storefrontv1.GetOrderDetailsRequest{Id: id})
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, "every product step at the catalog", func() bool {
		return catalogHost.Received(getProduct)-before == int64(len(products))
	})
	if n := composeGoroutines(); n < len(products) {
		t.Fatalf("%d goroutines in compose with %d steps in flight: the count does not see them", n, len(products))
	}
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("the caller's call: %v, want CANCELED", err)
	}
	testutil.Eventually(t, 10*time.Second, "no goroutine left in compose", func() bool { return composeGoroutines() == 0 })
}

// TestCompositeStepRateLimitHeaders: a required step refused by its rate
// limit answers the composite's caller as a direct call would: 429 with
// Retry-After and the RateLimit-* numbers (trailers over gRPC), each once
// over REST though the composite's own limit set its numbers as headers.
func TestCompositeStepRateLimitHeaders(t *testing.T) {
	w := composeWorld(t, &testutil.LockedBuffer{}, func(cfg *gateway.Config) {
		sc := cfg.Services["orders.v1.OrderService"]
		m := sc.Methods["GetOrder"]
		m.RateLimit = &policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}
		sc.Methods["GetOrder"] = m
		cfg.Services["orders.v1.OrderService"] = sc
		cfg.Services["storefront.v1.StorefrontService"] = gateway.ServiceConfig{PolicyConfig: gateway.PolicyConfig{
			RateLimit: &policy.RateLimit{Requests: 100, Period: time.Hour, Burst: 100}}}
	})
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001")
	path := "/v1/orders/" + id + "/details"
	if r := w.rest("GET", path, nil); r.Status != 200 {
		t.Fatalf("first call: %d %s", r.Status, r.Raw)
	}
	direct := w.rest("GET", "/v1/orders/"+id, nil)
	r := w.rest("GET", path, nil)
	if _, md := restStepInfo(r.Body); r.Status != 429 || md["step"] != "order" {
		t.Fatalf("REST: %d %s, want 429 naming step order", r.Status, r.Raw)
	}
	for _, h := range []string{"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"} {
		got, want := r.Header.Values(h), direct.Header.Values(h)
		if len(got) != 1 || len(want) != 1 || (h != "Retry-After" && h != "RateLimit-Reset" && got[0] != want[0]) {
			t.Errorf("REST: %s: %q, want the step's refusal's, as the direct call's %q", h, got, want)
		}
	}
	var trailer metadata.MD
	_, err := w.storefront().GetOrderDetails(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: id}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted || len(trailer.Get("retry-after")) != 1 || len(trailer.Get("ratelimit-limit")) != 1 {
		t.Errorf("gRPC: %v, trailers %v: want RESOURCE_EXHAUSTED with retry-after and ratelimit-limit", err, trailer)
	}
	t.Logf("REST: %d Retry-After %q RateLimit-Remaining %q", r.Status, r.Header.Get("Retry-After"), r.Header.Get("RateLimit-Remaining"))
}

// TestCompositePartialFailureAlwaysLogged: access log sampling drops OK
// lines, but never a composite's that carries a partial failure.
func TestCompositePartialFailureAlwaysLogged(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(
		stats.WithAccessLog(slog.New(slog.NewJSONHandler(logs, nil))), stats.WithAccessLogSample(0))})
	catalogHost := w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001")
	if r := w.rest("GET", "/v1/orders/"+id+"/details", nil); r.Status != 200 || r.Header.Get(partialHeader) != "" {
		t.Fatalf("healthy: %d %q %s", r.Status, r.Header.Get(partialHeader), r.Raw)
	}
	if err := catalogHost.SetFaults(host.Faults{FailRate: 1}); err != nil {
		t.Fatal(err)
	}
	r := w.rest("GET", "/v1/orders/"+id+"/details", nil)
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get(partialHeader), "step=products code=UNAVAILABLE") {
		t.Fatalf("catalog failing: %d %q %s, want a partial failure", r.Status, r.Header.Get(partialHeader), r.Raw)
	}
	testutil.Eventually(t, 5*time.Second, "the partial failure's line in the access log", func() bool {
		for _, l := range accessLines(logs, getOrderDetails) {
			if l["code"] == "OK" && l["partial_failure"] == r.Header.Get(partialHeader) {
				return true
			}
		}
		return false
	})
	for _, l := range accessLines(logs, getOrderDetails) {
		if l["partial_failure"] == nil {
			t.Errorf("an OK line without a partial failure was logged at sample 0: %v", l)
		}
	}
}

// A composite's own access log line names no backend instance and no
// attempts: its steps reach the backends, each as a call of its own, even
// when the steps' routes keep no access log and so no line of their own.
func TestCompositeLineHasNoStepInstance(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(
		stats.WithAccessLog(slog.New(slog.NewJSONHandler(logs, nil))),
		stats.WithoutAccessLog("catalog.v1.CatalogService", "orders.v1.OrderService"))})
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001", "prd-000002")
	if r := w.rest("GET", "/v1/orders/"+id+"/details", nil); r.Status != 200 {
		t.Fatalf("REST: %d %s", r.Status, r.Raw)
	}
	if _, err := w.storefront().GetOrderDetails(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: id}); err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	var lines []map[string]any
	testutil.Eventually(t, 5*time.Second, "both doors' GetOrderDetails lines in the access log", func() bool {
		lines = accessLines(logs, getOrderDetails)
		return len(lines) == 2
	})
	for _, l := range lines {
		if l["instance"] != nil || l["attempts"] != nil {
			t.Errorf("the composite's line carries a step's backend call: %v", l)
		}
	}
	if n := len(accessLines(logs, "/catalog.v1.CatalogService/GetProduct")); n != 0 {
		t.Errorf("%d lines of a quiet step's route", n)
	}
}

// A composite method's own rate limit shows on its answer at both doors: a
// composite call never reaches the proxy, which sends the numbers with a
// backend's headers.
func TestCompositeCarriesItsRateLimitHeaders(t *testing.T) {
	w := composeWorld(t, &testutil.LockedBuffer{}, func(cfg *gateway.Config) {
		cfg.Services["storefront.v1.StorefrontService"] = gateway.ServiceConfig{PolicyConfig: gateway.PolicyConfig{
			RateLimit: &policy.RateLimit{Requests: 100, Period: time.Hour, Burst: 100}}}
	}, grpcNumbers)
	w.startCatalog()
	w.startOrders()
	id := w.placeOrder("prd-000001")
	r := w.rest("GET", "/v1/orders/"+id+"/details", nil)
	if r.Status != 200 {
		t.Fatalf("REST: %d %s", r.Status, r.Raw)
	}
	if got := r.Header.Values("RateLimit-Limit"); len(got) != 1 || got[0] != "100" {
		t.Errorf("REST composite: RateLimit-Limit = %v, want [100]", got)
	}
	var h metadata.MD
	if _, err := w.storefront().GetOrderDetails(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: id}, grpc.Header(&h)); err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	if got := h.Get("ratelimit-limit"); len(got) != 1 || got[0] != "100" {
		t.Errorf("gRPC composite: ratelimit-limit = %v, want [100]", got)
	}
}
