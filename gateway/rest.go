package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// restConn is the connection grpc-gateway's handlers call. A unary call is
// a function call into the same interceptor chain and proxy that native
// gRPC calls reach through the gRPC server: no encoding, no HTTP/2 framing
// and no goroutine between the REST door and the chain. Streams go over
// the in-memory gRPC connection to the gateway's own server.
type restConn struct {
	proxies map[string]*methodProxy
	streams *grpc.ClientConn
}

var _ grpc.ClientConnInterface = (*restConn)(nil)

// restPeer is the peer of every in-process REST call. Its address tells the
// chain that the x-portico-internal-* metadata was set by the REST door.
var restPeer = &peer.Peer{Addr: restAddr{}}

type restAddr struct{}

func (restAddr) Network() string { return "portico-rest" }
func (restAddr) String() string  { return "portico-rest" }

func (c *restConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p, ok := c.proxies[method]
	if !ok || p.desc != nil {
		return c.streams.Invoke(ctx, method, args, reply, opts...)
	}
	// What a gRPC server would give the handler: the request metadata as
	// incoming and none as outgoing (so a call the chain makes cannot
	// forward the client's credentials), the peer, and a stream to set
	// response metadata on.
	md, _ := metadata.FromOutgoingContext(ctx)
	sts := &restTransportStream{method: method}
	ctx = metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
	ctx = grpc.NewContextWithServerTransportStream(peer.NewContext(ctx, restPeer), sts)

	resp, err := p.call(ctx, args)
	if err == nil {
		err = decodeReply(resp, reply)
	}
	sts.mu.Lock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = sts.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = sts.trailer
		}
	}
	sts.mu.Unlock()
	if err != nil {
		// As a gRPC server would send it: a status, Unknown for anything else.
		return status.Convert(err).Err()
	}
	return nil
}

func (c *restConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.streams.NewStream(ctx, desc, method, opts...)
}

// limitBody refuses REST bodies over MaxRequestBytes: at once, with 413,
// when the request says its length, and otherwise when reading passes the
// limit (grpc-gateway then answers 400 with the reader's error). Without
// it a client could make the gateway hold any amount of JSON in memory.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxRequestBytes {
			err := Error(codes.ResourceExhausted, ReasonBadRequest,
				fmt.Sprintf("request body of %d bytes is over the limit of %d", r.ContentLength, MaxRequestBytes), nil)
			writeStatus(w, status.Convert(err), http.StatusRequestEntityTooLarge, "gateway")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// decodeReply fills grpc-gateway's reply from the backend's response.
func decodeReply(resp, reply any) error {
	out, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "reply of type %T is not a protobuf message", reply)
	}
	switch r := resp.(type) {
	case nil:
		// An interceptor answered OK with no message: the empty message, as
		// a gRPC server would send.
	case *rawMessage:
		if r.gone() {
			return status.Error(codes.Internal, "the backend's response was already sent")
		}
		err := proto.Unmarshal(contiguous(r.data), out) // copies what it keeps
		r.release()
		if err != nil {
			return Error(codes.Internal, ReasonInternal,
				"backend response is not a valid "+string(out.ProtoReflect().Descriptor().FullName())+": "+err.Error(), nil)
		}
	case proto.Message:
		// An interceptor answered with a message of its own.
		if r.ProtoReflect().Descriptor() != out.ProtoReflect().Descriptor() {
			return status.Errorf(codes.Internal, "response is a %s, not a %s",
				r.ProtoReflect().Descriptor().FullName(), out.ProtoReflect().Descriptor().FullName())
		}
		proto.Merge(out, r)
	default:
		return status.Errorf(codes.Internal, "response of type %T is not a protobuf message", resp)
	}
	return nil
}

// restTransportStream collects the response metadata that the chain and
// the proxy set with grpc.SetHeader, grpc.SendHeader and grpc.SetTrailer.
type restTransportStream struct {
	method string

	mu              sync.Mutex
	header, trailer metadata.MD
}

func (s *restTransportStream) Method() string { return s.method }

func (s *restTransportStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	s.header = metadata.Join(s.header, md)
	s.mu.Unlock()
	return nil
}

func (s *restTransportStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *restTransportStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	s.trailer = metadata.Join(s.trailer, md)
	s.mu.Unlock()
	return nil
}
