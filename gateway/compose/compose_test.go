package compose_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/compose"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	optionsv1 "github.com/portico-gw/portico/gen/portico/options/v1"
	storefrontv1 "github.com/portico-gw/portico/gen/storefront/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

func services(extra ...protoreflect.ServiceDescriptor) []protoreflect.ServiceDescriptor {
	return append([]protoreflect.ServiceDescriptor{
		catalogv1.File_catalog_v1_catalog_proto.Services().Get(0),
		ordersv1.File_orders_v1_orders_proto.Services().Get(0),
		storefrontv1.File_storefront_v1_storefront_proto.Services().Get(0),
	}, extra...)
}

func newComposer(t *testing.T, extra ...protoreflect.ServiceDescriptor) (*compose.Composer, *route.Table, error) {
	t.Helper()
	descs := services(extra...)
	routes, err := route.Build(descs, route.Config{DefaultTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := compose.New(routes, descs)
	return c, routes, err
}

// broken is a service in a file of its own, broken/v1/<name>.proto, whose
// one method GetOrderDetails has the plan c.
func broken(t *testing.T, name string, c *optionsv1.Compose) protoreflect.ServiceDescriptor {
	t.Helper()
	mo := &descriptorpb.MethodOptions{}
	proto.SetExtension(mo, optionsv1.E_Compose, c)
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("broken/v1/" + name + ".proto"), Package: proto.String("broken.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{"storefront/v1/storefront.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("BrokenService"), Method: []*descriptorpb.MethodDescriptorProto{{
			Name: proto.String("GetOrderDetails"), Options: mo,
			InputType: proto.String(".storefront.v1.GetOrderDetailsRequest"), OutputType: proto.String(".storefront.v1.GetOrderDetailsResponse"),
		}}}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Services().Get(0)
}

// step and plan shorten the plans of the tests.
func step(name, method, request string) *optionsv1.ComposeStep {
	return &optionsv1.ComposeStep{Name: name, Method: method, Request: request}
}

const (
	getOrder   = "orders.v1.OrderService/GetOrder"
	getProduct = "catalog.v1.CatalogService/GetProduct"
	okResponse = "GetOrderDetailsResponse{order: order.order}"
)

func TestStartTimeChecks(t *testing.T) {
	forEach := func(s *optionsv1.ComposeStep, list string) *optionsv1.ComposeStep { s.ForEach = list; return s }
	for _, tc := range []struct {
		name string
		plan *optionsv1.Compose
		want []string // in the message, besides the file and the method
	}{
		{"type_error", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			forEach(step("products", getProduct, "catalog.v1.GetProductRequest{id: item.quantity}"), "order.order.items"),
		}, Response: okResponse}, []string{`step "products": request:`, "field 'id'", "string", "int"}},
		{"wrong_request_type", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "catalog.v1.GetProductRequest{id: request.id}"),
		}, Response: okResponse}, []string{`step "order": request:`, "want orders.v1.GetOrderRequest"}},
		{"wrong_response_type", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
		}, Response: "order.order"}, []string{"response:", "want storefront.v1.GetOrderDetailsResponse"}},
		{"unknown_method", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", "orders.v1.OrderService/GetOrders", "orders.v1.GetOrderRequest{id: request.id}"),
		}, Response: okResponse}, []string{`step "order"`, "unknown method orders.v1.OrderService/GetOrders"}},
		{"stream_method", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", "orders.v1.OrderService/WatchOrder", "orders.v1.WatchOrderRequest{id: request.id}"),
		}, Response: okResponse}, []string{`step "order"`, "server-stream", "unary methods only"}},
		{"cycle", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: again.order.id}"),
			step("again", getOrder, "orders.v1.GetOrderRequest{id: order.order.id}"),
		}, Response: okResponse}, []string{"steps form a cycle: order -> again -> order"}},
		{"self_reference", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: order.order.id}"),
		}, Response: okResponse}, []string{"steps form a cycle: order -> order"}},
		{"missing_step", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			forEach(step("products", getProduct, "catalog.v1.GetProductRequest{id: item.product_id}"), "ordr.order.items"),
		}, Response: okResponse}, []string{`step "products": for_each:`, "undeclared reference to 'ordr'"}},
		{"for_each_not_a_list", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			forEach(step("products", getProduct, "catalog.v1.GetProductRequest{id: item.product_id}"), "order.order"),
		}, Response: okResponse}, []string{`step "products": for_each has type orders.v1.Order, want a list`}},
		{"duplicate_name", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
		}, Response: okResponse}, []string{`step "order": two steps have this name`}},
		{"reserved_name", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("request", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
		}, Response: okResponse}, []string{`step "request": "request" is reserved`}},
		{"max_concurrency_over_limit", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			func() *optionsv1.ComposeStep {
				s := forEach(step("products", getProduct, "catalog.v1.GetProductRequest{id: item.product_id}"), "order.order.items")
				s.MaxConcurrency = compose.MaxConcurrencyLimit + 1
				return s
			}(),
		}, Response: okResponse}, []string{`step "products": max_concurrency 65 is over the limit of 64`}},
		{"no_response", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
		}}, []string{"response is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := newComposer(t, broken(t, tc.name, tc.plan))
			if err == nil {
				t.Fatal("New accepted the broken plan")
			}
			msg := err.Error()
			for _, want := range append([]string{"broken/v1/" + tc.name + ".proto", "broken.v1.BrokenService/GetOrderDetails"}, tc.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			t.Logf("%s", msg)
		})
	}
}

func TestExamplePlansCompile(t *testing.T) {
	c, routes, err := newComposer(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"GetOrderDetails", "GetHome"} {
		r, _ := routes.Lookup("/storefront.v1.StorefrontService/" + m)
		if r == nil || c.Handler(r) == nil || r.Backend != "" {
			t.Errorf("%s is not served as a composite: %+v", m, r)
		}
	}
	r, _ := routes.Lookup("/" + getOrder)
	if c.Handler(r) != nil {
		t.Error("GetOrder, a proxied method, has a composite handler")
	}
}

// fakeConn answers the steps' calls in memory.
type fakeConn struct {
	invoke func(ctx context.Context, method string, args, reply any) error
}

func (f *fakeConn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	return f.invoke(ctx, method, args, reply)
}

func (f *fakeConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams")
}

// handler is the composite method's handler over conn, with call facts as
// the chain would set them.
func handler(t *testing.T, method string, conn grpc.ClientConnInterface) func(ctx context.Context, req any) (any, error) {
	t.Helper()
	c, routes, err := newComposer(t)
	if err != nil {
		t.Fatal(err)
	}
	c.Bind(conn)
	r, _ := routes.Lookup("/storefront.v1.StorefrontService/" + method)
	h := c.Handler(r)
	return func(ctx context.Context, req any) (any, error) {
		if _, ok := policy.FromContext(ctx); !ok {
			ctx = policy.NewContext(ctx, &policy.Call{FullMethod: r.FullMethod, Transport: policy.GRPC, ClientIP: "192.0.2.7"})
		}
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-api-key", "k", "x-portico-internal-client-ip", "6.6.6.6"))
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return h(ctx, req)
	}
}

func order(items int) *ordersv1.GetOrderResponse {
	o := &ordersv1.Order{Id: "ord-1"}
	for i := range items {
		o.Items = append(o.Items, &ordersv1.LineItem{ProductId: fmt.Sprintf("prd-%06d", i+1), Quantity: 1})
	}
	return &ordersv1.GetOrderResponse{Order: o}
}

func TestStepsRunAsTheCaller(t *testing.T) {
	var seen sync.Map
	h := handler(t, "GetOrderDetails", &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
		md, _ := metadata.FromOutgoingContext(ctx)
		seen.Store(method, md)
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 10*time.Second || time.Until(dl) < 5*time.Second {
			t.Errorf("%s: deadline %v, want the composite's (10s)", method, dl)
		}
		if s := policy.StepFromContext(ctx); s == nil || s.Composite != "/storefront.v1.StorefrontService/GetOrderDetails" {
			t.Errorf("%s: step mark %+v", method, s)
		}
		if method == "/"+getOrder {
			proto.Merge(reply.(proto.Message), order(1))
		}
		return nil
	}})
	if _, err := h(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"/" + getOrder, "/" + getProduct} {
		v, ok := seen.Load(m)
		if !ok {
			t.Fatalf("%s was not called", m)
		}
		md := v.(metadata.MD)
		if got := md.Get("x-api-key"); len(got) != 1 || got[0] != "k" {
			t.Errorf("%s: credentials %v, want the caller's", m, got)
		}
		if got := md.Get("x-portico-internal-client-ip"); len(got) != 1 || got[0] != "192.0.2.7" {
			t.Errorf("%s: client address %v, want the one the chain found (192.0.2.7), not the one the caller forged", m, got)
		}
	}
}

func TestIndependentStepsRunInParallel(t *testing.T) {
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	h := handler(t, "GetHome", &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
		arrived.Done()
		select { // each call waits for the other: only parallel steps get past this
		case <-both:
		case <-time.After(5 * time.Second):
			return status.Errorf(codes.DeadlineExceeded, "%s: the other step never came", method)
		}
		switch r := reply.(type) {
		case *catalogv1.ListProductsResponse:
			r.Products = []*catalogv1.Product{{Id: "prd-000001"}}
		case *ordersv1.ListOrdersResponse:
			r.Orders = []*ordersv1.Order{{Id: "ord-000001"}}
		}
		return nil
	}})
	resp, err := h(context.Background(), &storefrontv1.GetHomeRequest{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	home := resp.(*storefrontv1.GetHomeResponse)
	if len(home.GetProducts()) != 1 || len(home.GetOrders()) != 1 {
		t.Fatalf("home = %v", home)
	}
}

func TestForEachIsBounded(t *testing.T) {
	const items = 25
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	h := handler(t, "GetOrderDetails", &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
		if method == "/"+getOrder {
			proto.Merge(reply.(proto.Message), order(items))
			return nil
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		id := args.(*catalogv1.GetProductRequest).GetId()
		reply.(*catalogv1.GetProductResponse).Product = &catalogv1.Product{Id: id}
		return nil
	}})
	type result struct {
		resp any
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := h(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
		done <- result{resp, err}
	}()
	testutil.Eventually(t, 5*time.Second, "the for_each step to have 10 calls in flight", func() bool { return inFlight.Load() == compose.DefaultMaxConcurrency })
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if most.Load() != compose.DefaultMaxConcurrency {
		t.Errorf("at most %d calls in flight, want %d", most.Load(), compose.DefaultMaxConcurrency)
	}
	products := r.resp.(*storefrontv1.GetOrderDetailsResponse).GetProducts()
	if len(products) != items {
		t.Fatalf("%d products, want %d", len(products), items)
	}
	for i, p := range products {
		if want := fmt.Sprintf("prd-%06d", i+1); p.GetId() != want {
			t.Errorf("product %d is %s, want %s: answers keep the items' order", i, p.GetId(), want)
		}
	}
}

// TestForEachMaxItems: a for_each step calls its method for at most
// max_items items; a longer list fails the step without a call.
func TestForEachMaxItems(t *testing.T) {
	// conn answers GetOrder with an order of items items, GetProduct with
	// the product, counting its calls.
	conn := func(items int, calls *atomic.Int32) *fakeConn {
		return &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
			if method == "/"+getOrder {
				proto.Merge(reply.(proto.Message), order(items))
				return nil
			}
			calls.Add(1)
			reply.(*catalogv1.GetProductResponse).Product = &catalogv1.Product{Id: args.(*catalogv1.GetProductRequest).GetId()}
			return nil
		}}
	}
	req := &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"}
	t.Run("optional", func(t *testing.T) {
		var calls atomic.Int32
		resp, err := handler(t, "GetOrderDetails", conn(compose.DefaultMaxItems, &calls))(context.Background(), req)
		if n := len(resp.(*storefrontv1.GetOrderDetailsResponse).GetProducts()); err != nil || n != compose.DefaultMaxItems {
			t.Fatalf("%d items: %d products, %v; want all", compose.DefaultMaxItems, n, err)
		}
		calls.Store(0)
		call := &policy.Call{Transport: policy.GRPC, ClientIP: "192.0.2.7"}
		resp, err = handler(t, "GetOrderDetails", conn(compose.DefaultMaxItems+1, &calls))(policy.NewContext(context.Background(), call), req)
		if err != nil || len(resp.(*storefrontv1.GetOrderDetailsResponse).GetProducts()) != 0 || calls.Load() != 0 {
			t.Fatalf("%d items: %v %v after %d GetProduct calls, want the order alone and no call", compose.DefaultMaxItems+1, resp, err, calls.Load())
		}
		if want := "step=products code=FAILED_PRECONDITION failed=101/101"; call.PartialFailure != want {
			t.Errorf("partial failure %q, want %q", call.PartialFailure, want)
		}
	})
	t.Run("required", func(t *testing.T) {
		products := step("products", getProduct, "catalog.v1.GetProductRequest{id: item.product_id}")
		products.ForEach, products.MaxItems = "order.order.items", 2
		c, routes, err := newComposer(t, broken(t, "max_items", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"), products,
		}, Response: "GetOrderDetailsResponse{order: order.order, products: products.map(p, p.product)}"}))
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		c.Bind(conn(3, &calls))
		r, _ := routes.Lookup("/broken.v1.BrokenService/GetOrderDetails")
		_, err = c.Handler(r)(context.Background(), req)
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition || calls.Load() != 0 ||
			st.Message() != `step "products" (catalog.v1.CatalogService/GetProduct): for_each has 3 items, over the step's max_items of 2` {
			t.Fatalf("%v after %d GetProduct calls, want FAILED_PRECONDITION naming the step and no call", err, calls.Load())
		}
		if info := errorInfo(t, st); info.GetReason() != compose.ReasonTooManyItems || info.GetMetadata()["step"] != "products" {
			t.Errorf("ErrorInfo %v", info)
		}
	})
}

func TestFailures(t *testing.T) {
	t.Run("required", func(t *testing.T) {
		h := handler(t, "GetOrderDetails", &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
			return status.Error(codes.NotFound, "order ord-1 not found")
		}})
		_, err := h(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
		st := status.Convert(err)
		if st.Code() != codes.NotFound || !strings.Contains(st.Message(), `step "order"`) {
			t.Fatalf("error %v, want NOT_FOUND naming the step", err)
		}
		info := errorInfo(t, st)
		if info.GetReason() != compose.ReasonStepFailed || info.GetMetadata()["step"] != "order" || info.GetMetadata()["step_method"] != getOrder {
			t.Errorf("ErrorInfo %v", info)
		}
	})
	t.Run("optional", func(t *testing.T) {
		h := handler(t, "GetOrderDetails", &fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
			if method == "/"+getOrder {
				proto.Merge(reply.(proto.Message), order(4))
				return nil
			}
			if id := args.(*catalogv1.GetProductRequest).GetId(); id == "prd-000002" || id == "prd-000004" {
				return status.Error(codes.Unavailable, "no catalog")
			}
			reply.(*catalogv1.GetProductResponse).Product = &catalogv1.Product{Id: args.(*catalogv1.GetProductRequest).GetId()}
			return nil
		}})
		resp, err := h(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
		if err != nil {
			t.Fatal(err)
		}
		d := resp.(*storefrontv1.GetOrderDetailsResponse)
		if d.GetOrder().GetId() != "ord-1" || len(d.GetProducts()) != 2 || d.GetProducts()[1].GetId() != "prd-000003" {
			t.Fatalf("response %v: want the order and the two products that answered", d)
		}
	})
}

// TestExpressionFailure: an expression that fails when evaluated answers
// INTERNAL, COMPOSE_EXPRESSION, with a fixed message naming the step and
// the expression; CEL's words go to the gateway's log only.
func TestExpressionFailure(t *testing.T) {
	const outOfRange = "order.order.items[5].product_id" // the order has one item
	products := step("products", getProduct, "catalog.v1.GetProductRequest{id: item.product_id}")
	products.ForEach = "[order.order.items[5]]"
	for _, tc := range []struct {
		name, step, want string
		plan             *optionsv1.Compose
	}{
		{"request", "products", `step "products" (catalog.v1.CatalogService/GetProduct): the request expression failed; the gateway's log has why`,
			&optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
				step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
				step("products", getProduct, "catalog.v1.GetProductRequest{id: "+outOfRange+"}"),
			}, Response: okResponse}},
		{"for_each", "products", `step "products" (catalog.v1.CatalogService/GetProduct): the for_each expression failed; the gateway's log has why`,
			&optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
				step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"), products,
			}, Response: okResponse}},
		{"response", "", "the response expression failed; the gateway's log has why",
			&optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
				step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
			}, Response: "GetOrderDetailsResponse{order: orders.v1.Order{id: " + outOfRange + "}}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			descs := services(broken(t, "expression_"+tc.name, tc.plan))
			routes, err := route.Build(descs, route.Config{DefaultTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			logs := &testutil.LockedBuffer{}
			c, err := compose.New(routes, descs, compose.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			c.Bind(&fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
				if method == "/"+getOrder {
					proto.Merge(reply.(proto.Message), order(1))
				}
				return nil
			}})
			r, _ := routes.Lookup("/broken.v1.BrokenService/GetOrderDetails")
			_, err = c.Handler(r)(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
			st := status.Convert(err)
			if st.Code() != codes.Internal || st.Message() != tc.want {
				t.Fatalf("error %v, want INTERNAL %q", err, tc.want)
			}
			if info := errorInfo(t, st); info.GetReason() != compose.ReasonExpression || info.GetMetadata()["step"] != tc.step {
				t.Errorf("ErrorInfo %v, want reason %s, step %q", info, compose.ReasonExpression, tc.step)
			}
			log := logs.String()
			if !strings.Contains(log, "expression="+tc.name) || !strings.Contains(log, "index") || (tc.step != "" && !strings.Contains(log, "step="+tc.step)) {
				t.Errorf("gateway log %q does not say which expression failed and why", log)
			}
			t.Logf("%s", log)
		})
	}
}

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", st.Proto())
	return nil
}

func TestCompositesCallingEachOtherInACycle(t *testing.T) {
	method := func(name, calls string) *descriptorpb.MethodDescriptorProto {
		mo := &descriptorpb.MethodOptions{}
		proto.SetExtension(mo, optionsv1.E_Compose, &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
			step("other", "loop.v1.LoopService/"+calls, "GetOrderDetailsRequest{id: request.id}"),
		}, Response: "GetOrderDetailsResponse{order: other.order}"})
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), Options: mo,
			InputType: proto.String(".storefront.v1.GetOrderDetailsRequest"), OutputType: proto.String(".storefront.v1.GetOrderDetailsResponse")}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("loop/v1/loop.proto"), Package: proto.String("loop.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{"storefront/v1/storefront.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("LoopService"),
			Method: []*descriptorpb.MethodDescriptorProto{method("Ping", "Pong"), method("Pong", "Ping")}}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = newComposer(t, fd.Services().Get(0))
	want := "loop/v1/loop.proto: loop.v1.LoopService/Ping: composite methods call each other in a cycle: loop.v1.LoopService/Ping -> loop.v1.LoopService/Pong -> loop.v1.LoopService/Ping"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("New: %v, want %q", err, want)
	}
}

// TestNilLoggerKeepsTheDefault: compose.WithLogger(nil), as a gateway
// without a logger option passes, must not leave the composer without one:
// the first expression failure would panic.
func TestNilLoggerKeepsTheDefault(t *testing.T) {
	descs := services(broken(t, "expression_nil_logger", &optionsv1.Compose{Steps: []*optionsv1.ComposeStep{
		step("order", getOrder, "orders.v1.GetOrderRequest{id: request.id}"),
	}, Response: "GetOrderDetailsResponse{order: orders.v1.Order{id: order.order.items[5].product_id}}"}))
	routes, err := route.Build(descs, route.Config{DefaultTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := compose.New(routes, descs, compose.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	c.Bind(&fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
		proto.Merge(reply.(proto.Message), order(1))
		return nil
	}})
	r, _ := routes.Lookup("/broken.v1.BrokenService/GetOrderDetails")
	_, err = c.Handler(r)(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
	if info := errorInfo(t, status.Convert(err)); info.GetReason() != compose.ReasonExpression {
		t.Fatalf("error %v, want reason %s", err, compose.ReasonExpression)
	}
}
