package compose_test

import (
	"context"
	"fmt"
	"time"

	"github.com/portico-gw/portico/gateway/compose"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	storefrontv1 "github.com/portico-gw/portico/gen/storefront/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The plan of storefront.v1.StorefrontService/GetOrderDetails, compiled
// from its proto option and run over a connection that answers in memory.
// In the gateway, that connection is the REST door's, into each step's
// method chain.
func Example() {
	descs := []protoreflect.ServiceDescriptor{
		catalogv1.File_catalog_v1_catalog_proto.Services().Get(0),
		ordersv1.File_orders_v1_orders_proto.Services().Get(0),
		storefrontv1.File_storefront_v1_storefront_proto.Services().Get(0),
	}
	routes, err := route.Build(descs, route.Config{DefaultTimeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	plans, err := compose.New(routes, descs)
	if err != nil {
		panic(err) // a plan that does not check: the gateway would not start
	}
	plans.Bind(&fakeConn{invoke: func(ctx context.Context, method string, args, reply any) error {
		switch r := reply.(type) {
		case *ordersv1.GetOrderResponse:
			r.Order = &ordersv1.Order{Id: args.(*ordersv1.GetOrderRequest).GetId(), Items: []*ordersv1.LineItem{
				{ProductId: "prd-000001", Quantity: 2}, {ProductId: "prd-000002", Quantity: 1}}}
		case *catalogv1.GetProductResponse:
			id := args.(*catalogv1.GetProductRequest).GetId()
			r.Product = &catalogv1.Product{Id: id, Name: "product " + id}
		}
		return nil
	}})
	r, _ := routes.Lookup("/storefront.v1.StorefrontService/GetOrderDetails")
	resp, err := plans.Handler(r)(context.Background(), &storefrontv1.GetOrderDetailsRequest{Id: "ord-000001"})
	if err != nil {
		panic(err)
	}
	d := resp.(*storefrontv1.GetOrderDetailsResponse)
	fmt.Println(d.GetOrder().GetId())
	for _, p := range d.GetProducts() {
		fmt.Println(p.GetName())
	}
	// Output:
	// ord-000001
	// product prd-000001
	// product prd-000002
}
