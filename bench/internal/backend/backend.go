// Package backend is the service every benchmarked path calls: the catalog
// and orders APIs answered from canned messages (package fixture), so the
// backend costs the same, and little, whichever path the call took.
package backend

import (
	"context"

	"github.com/portico-gw/portico/bench/internal/fixture"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Register adds both services to s.
func Register(s *grpc.Server) {
	catalogv1.RegisterCatalogServiceServer(s, newCatalog())
	ordersv1.RegisterOrderServiceServer(s, newOrders())
}

type catalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	get  *catalogv1.GetProductResponse
	page *catalogv1.ListProductsResponse
}

func newCatalog() *catalog {
	return &catalog{get: &catalogv1.GetProductResponse{Product: fixture.Product(1)}, page: fixture.Page()}
}

// The canned responses are only read: grpc-go marshals them on the way out.
func (c *catalog) GetProduct(context.Context, *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	return c.get, nil
}

func (c *catalog) ListProducts(context.Context, *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	return c.page, nil
}

// CreateProduct echoes the product with an id and timestamps, as a store would.
func (c *catalog) CreateProduct(_ context.Context, req *catalogv1.CreateProductRequest) (*catalogv1.CreateProductResponse, error) {
	p := proto.CloneOf(req.GetProduct())
	if p == nil {
		p = &catalogv1.Product{}
	}
	p.Id = "prd-900001"
	p.CreateTime = timestamppb.Now()
	p.UpdateTime = p.CreateTime
	return &catalogv1.CreateProductResponse{Product: p}, nil
}

type orders struct {
	ordersv1.UnimplementedOrderServiceServer
	updates []*ordersv1.WatchOrderResponse
}

func newOrders() *orders {
	o := &orders{}
	for i := range fixture.StreamLength {
		o.updates = append(o.updates, fixture.OrderUpdate(i))
	}
	return o
}

// WatchOrder sends StreamLength updates at once and ends.
func (o *orders) WatchOrder(_ *ordersv1.WatchOrderRequest, ss grpc.ServerStreamingServer[ordersv1.WatchOrderResponse]) error {
	for _, u := range o.updates {
		if err := ss.Send(u); err != nil {
			return err
		}
	}
	return nil
}
