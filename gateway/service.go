package gateway

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Service is one proto service that the gateway serves. The generated
// package gen/registry lists every service compiled from proto/; nothing
// else needs writing to add one.
type Service struct {
	// Descriptor describes the service and carries its Portico options.
	Descriptor protoreflect.ServiceDescriptor
	// RegisterHTTP registers the service's REST routes: the generated
	// grpc-gateway Register<Service>HandlerClient, calling through conn.
	RegisterHTTP func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error
}
