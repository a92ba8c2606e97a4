package host_test

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
)

// Start without a Consul client serves the service and nothing else, which is
// how tests run a backend in-process.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	h, err := host.Start(ctx, host.Config{
		Name: "catalog",
		Register: func(s *grpc.Server) {
			catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer())
		},
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Stop(ctx)

	conn, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	var header metadata.MD
	resp, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(ctx,
		&catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&header))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetProduct().GetName())
	fmt.Println(header.Get(host.InstanceIDHeader)[0] == h.ID())
	// Output:
	// The Go Programming Language
	// true
}
