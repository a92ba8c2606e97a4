package servers

import (
	"context"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// GRPCGateway is the REST baseline: grpc-gateway's generated handlers with
// its default options, dialling the backend directly, no policies. With
// tc it is also the peer of Portico's REST door over TLS: the same
// handlers behind net/http and Go's crypto/tls, the TLS stack Portico uses.
func GRPCGateway(ctx context.Context, backendAddr string, tc *tlsconfig.Config, readyPath string) error {
	mux, err := NewGRPCGateway(ctx, backendAddr)
	if err != nil {
		return err
	}
	return serveREST(ctx, mux, tc, readyPath)
}

// NewGRPCGateway is the bare grpc-gateway mux; its connections to the
// backend close when ctx ends.
func NewGRPCGateway(ctx context.Context, backendAddr string) (http.Handler, error) {
	mux := runtime.NewServeMux()
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if err := catalogv1.RegisterCatalogServiceHandlerFromEndpoint(ctx, mux, backendAddr, dial); err != nil {
		return nil, err
	}
	if err := ordersv1.RegisterOrderServiceHandlerFromEndpoint(ctx, mux, backendAddr, dial); err != nil {
		return nil, err
	}
	return mux, nil
}
