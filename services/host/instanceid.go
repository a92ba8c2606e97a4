package host

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// InstanceIDHeader is the response metadata key that names the instance
// that served a call: a header on an answer, a trailer on an error.
const InstanceIDHeader = "x-instance-id"

// A failed call names its instance in a trailer, not a header: an error
// whose answer has no headers (trailers-only, in gRPC's terms) is one a
// client's retry policy may retry (gRFC A6). Response headers commit the
// call, and a header set before a failure would make every failure of the
// example services final. SetHeader and SetTrailer only fail once the
// status is sent, which cannot have happened yet, so their errors are
// ignored rather than turned into a failed call over a diagnostic header.

func unaryInstanceID(id string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(InstanceIDHeader, id)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			_ = grpc.SetTrailer(ctx, md)
			return nil, err
		}
		// A unary handler's headers go out with its response, after this.
		_ = grpc.SetHeader(ctx, md)
		return resp, nil
	}
}

func streamInstanceID(id string) grpc.StreamServerInterceptor {
	md := metadata.Pairs(InstanceIDHeader, id)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		s := &idStream{ServerStream: ss, md: md}
		err := handler(srv, s)
		if err != nil && !s.sent() {
			ss.SetTrailer(md)
		}
		return err
	}
}

// idStream sets the instance header just before the stream's headers go
// out: with its first message, or when the handler sends them.
type idStream struct {
	grpc.ServerStream
	md   metadata.MD
	once sync.Once
}

func (s *idStream) header() {
	s.once.Do(func() { _ = s.ServerStream.SetHeader(s.md) })
}

func (s *idStream) sent() bool {
	sent := true
	s.once.Do(func() { sent = false })
	return sent
}

func (s *idStream) SendMsg(m any) error {
	s.header()
	return s.ServerStream.SendMsg(m)
}

func (s *idStream) SendHeader(md metadata.MD) error {
	s.header()
	return s.ServerStream.SendHeader(md)
}
