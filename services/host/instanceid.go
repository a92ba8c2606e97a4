package host

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// InstanceIDHeader is the response header metadata key that names the
// instance that served a call.
const InstanceIDHeader = "x-instance-id"

// Both interceptors set the header before the handler runs: headers set
// afterwards would be lost when the handler has already sent them, and
// setting them first means they go out on errors too. SetHeader only fails
// once headers are sent, which cannot have happened yet, so its error is
// ignored rather than turned into a failed call over a diagnostic header.

func unaryInstanceID(id string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs(InstanceIDHeader, id))
		return handler(ctx, req)
	}
}

func streamInstanceID(id string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		_ = ss.SetHeader(metadata.Pairs(InstanceIDHeader, id))
		return handler(srv, ss)
	}
}
