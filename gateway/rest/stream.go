package rest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A REST stream's errors are the same google.rpc.Status JSON as a unary
// call's. grpc-gateway ends a stream that fails with one more chunk, which
// it builds as {"error": status} and hands to the marshaler; the door's
// marshaler writes the status alone, the SSE marshaler (package web) as an
// "error" event. A stream that fails before its first message (refused by
// the chain: a trailers-only response) gets the HTTP status of its code
// and the headers of the trailers, as a unary call does.

// streamCall is a REST stream in flight: where its answer goes, and the
// trailers its gRPC stream ended with. A unary call without a binding
// (the chain runs whole, in conn) travels as one too, for its TLS state.
type streamCall struct {
	w       http.ResponseWriter
	trailer metadata.MD
	tls     *tls.ConnectionState
}

type streamKey struct{}

func streamFrom(ctx context.Context) *streamCall {
	sc, _ := ctx.Value(streamKey{}).(*streamCall)
	return sc
}

// recordingStream keeps the trailers of a stream that ends in an error,
// for streamError.
type recordingStream struct {
	grpc.ClientStream
	call *streamCall
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		s.call.trailer = s.ClientStream.Trailer()
	}
	return err
}

// streamError is the mux's stream error handler: the status to write, made
// the gateway's (with an ErrorInfo) unless the backend sent it, with the
// trailers as headers while the answer has not started.
func (d *Door) streamError(ctx context.Context, err error) *status.Status {
	source := policy.SourceGateway
	if sc := streamFrom(ctx); sc != nil {
		if v := sc.trailer.Get(policy.ErrorSourceKey); len(v) > 0 {
			source = v[0]
		}
		// The trailers as headers: a policy may have set a value both ways.
		proxy.ForwardTrailers(sc.w.Header(), sc.trailer)
		sc.w.Header().Set("X-Portico-Error-Source", source)
	}
	if source == policy.SourceGateway {
		err = policy.WithErrorInfo(err)
	}
	return status.Convert(err)
}

// ErrorChunk is the status in grpc-gateway's stream error chunk, or nil
// when v is not one.
func ErrorChunk(v any) *spb.Status {
	m, ok := v.(map[string]proto.Message)
	if !ok || len(m) != 1 {
		return nil
	}
	st, _ := m["error"].(*spb.Status)
	return st
}

// ResultChunk reports whether v is grpc-gateway's chunk of one stream
// message ({"result": message}).
func ResultChunk(v any) bool {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return false
	}
	_, ok = m["result"]
	return ok
}
