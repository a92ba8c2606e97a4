package chain

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// errorSourceUnary is the outermost step: it marks every failed call with
// who made the error, and gives gateway-made errors an ErrorInfo.
func errorSourceUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		source := policy.ErrorSource(err)
		if source == policy.SourceGateway {
			err = policy.WithErrorInfo(err)
		}
		_ = grpc.SetTrailer(ctx, metadata.Pairs(policy.ErrorSourceKey, source))
	}
	return resp, err
}

func errorSourceStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil {
		source := policy.ErrorSource(err)
		if source == policy.SourceGateway {
			err = policy.WithErrorInfo(err)
		}
		ss.SetTrailer(metadata.Pairs(policy.ErrorSourceKey, source))
	}
	return err
}

// go-grpc-middleware's recovery, with a handler that logs the panic with
// its stack, counts it, and answers INTERNAL without the panic's value: a
// client learns nothing of the gateway's insides.
func (c *Chain) recoveryUnary() grpc.UnaryServerInterceptor {
	return recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(c.recovered))
}

func (c *Chain) recoveryStream() grpc.StreamServerInterceptor {
	return recovery.StreamServerInterceptor(recovery.WithRecoveryHandlerContext(c.recovered))
}

func (c *Chain) recovered(ctx context.Context, p any) error {
	method, _ := grpc.Method(ctx)
	c.logger.Error("panic in a call; answered INTERNAL", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	for _, pc := range c.panics {
		pc.CountPanic(method)
	}
	return policy.Error(codes.Internal, policy.ReasonInternal, "internal error in the gateway", nil)
}
