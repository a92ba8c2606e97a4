package compose

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	storefrontv1 "github.com/portico-gw/portico/gen/storefront/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// orderConn answers GetOrder with an order of one item, and nothing else.
type orderConn struct{ grpc.ClientConnInterface }

func (orderConn) Invoke(_ context.Context, method string, _, reply any, _ ...grpc.CallOption) error {
	if method == "/orders.v1.OrderService/GetOrder" {
		proto.Merge(reply.(proto.Message), &ordersv1.GetOrderResponse{Order: &ordersv1.Order{Id: "ord-1",
			Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}}})
	}
	return nil
}

// TestForEachValueNotAList: a for_each whose value is not a list (which
// the start-time check rules out, so a program swapped in here) fails its
// step as an expression's failure instead of panicking in the step's
// goroutine, which would end the gateway.
func TestForEachValueNotAList(t *testing.T) {
	descs := []protoreflect.ServiceDescriptor{
		catalogv1.File_catalog_v1_catalog_proto.Services().Get(0),
		ordersv1.File_orders_v1_orders_proto.Services().Get(0),
		storefrontv1.File_storefront_v1_storefront_proto.Services().Get(0),
	}
	routes, err := route.Build(descs, route.Config{DefaultTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(routes, descs, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	c.Bind(orderConn{})
	env, err := cel.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile("42")
	if iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	notAList, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := routes.Lookup("/storefront.v1.StorefrontService/GetOrderDetails")
	for _, s := range c.plans[r.FullMethod].steps {
		if s.name == "products" {
			s.forEach = notAList
		}
	}
	call := &policy.Call{FullMethod: r.FullMethod, Transport: policy.GRPC}
	resp, err := c.Handler(r)(policy.NewContext(context.Background(), call), &storefrontv1.GetOrderDetailsRequest{Id: "ord-1"})
	if err != nil || resp.(*storefrontv1.GetOrderDetailsResponse).GetOrder().GetId() != "ord-1" {
		t.Fatalf("%v %v, want the order", resp, err)
	}
	if want := "step=products code=INTERNAL failed=1/1"; call.PartialFailure != want {
		t.Errorf("partial failure %q, want %q", call.PartialFailure, want)
	}
}
