package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// backendError tells apart what a backend answered from what went wrong on
// the way to it. A status the backend sent passes through, marked as the
// backend's. A failure of the hop is the gateway's error, with a message
// that names the backend and nothing of its sockets; the detail, which
// grpc-go's own messages carry (addresses included), goes to the log.
//
// header and trailer are the response metadata received, before filtering;
// reached says whether a backend instance was picked.
func (m *Method) backendError(ctx context.Context, err error, reached bool, header, trailer metadata.MD) error {
	st := status.Convert(err)
	meta := map[string]string{"backend": m.route.Backend}
	switch {
	case st.Code() == codes.DeadlineExceeded && deadlineReached(ctx):
		return policy.Error(codes.DeadlineExceeded, policy.ReasonDeadline,
			fmt.Sprintf("deadline exceeded waiting for backend %q", m.route.Backend), meta)
	case ctx.Err() != nil && st.Code() == codes.Canceled:
		return status.Error(codes.Canceled, "call canceled by the client")
	case !reached && st.Code() == codes.Unavailable:
		m.logger.Debug("no backend instance reachable", "method", m.route.FullMethod, "backend", m.route.Backend, "error", st.Message())
		return policy.Error(codes.Unavailable, policy.ReasonNoHealthyBackend,
			fmt.Sprintf("no healthy instance of backend %q is reachable", m.route.Backend), meta)
	case madeLocally(st, header, trailer):
		m.logger.Warn("backend connection failed during a call", "method", m.route.FullMethod, "backend", m.route.Backend,
			"code", st.Code().String(), "error", st.Message())
		return policy.Error(codes.Unavailable, policy.ReasonBackendUnreachable,
			fmt.Sprintf("the connection to backend %q failed during the call", m.route.Backend), meta)
	}
	return &policy.BackendError{Status: st}
}

// madeLocally reports a status that grpc-go made on the gateway's side of a
// backend connection (reset, EOF, RST_STREAM, a reply that is not gRPC)
// rather than one the backend sent. grpc-go records trailer metadata only
// from a valid gRPC status frame, and a real trailers-only reply always
// carries content-type there, so a status with trailer metadata is the
// backend's. One with neither response headers nor trailers never got a
// gRPC answer. Only headers followed by a status without trailer metadata
// is ambiguous through grpc-go's API: there, grpc-go's own messages tell.
// (A client stats.Handler's InTrailer event would decide it exactly, at
// about 23 allocations a call on every call; the ambiguous case is rare.)
func madeLocally(st *status.Status, header, trailer metadata.MD) bool {
	switch {
	case st.Code() == codes.OK || st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded:
		return false
	case len(trailer) > 0:
		return false
	case header == nil:
		return true
	}
	msg := st.Message()
	for _, prefix := range localMessages {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// localMessages start the statuses grpc-go v1.85 makes itself when a
// connection or stream breaks after the backend's headers arrived
// (internal/transport/http2_client.go, rpc_util.go's toRPCErr).
var localMessages = []string{
	"error reading from server",
	"transport is closing",
	"closing transport due to",
	"the connection is draining",
	"stream terminated by RST_STREAM",
	"server closed the stream without sending trailers",
	"unexpected EOF",
	"connection error",
	"keepalive ping failed",
}

// deadlineSlack is how close to the call's deadline a DEADLINE_EXCEEDED
// counts as that deadline firing. The backend gets the same deadline and its
// timer may fire a moment before ours; either way it is the call's deadline,
// not something the backend decided.
const deadlineSlack = 20 * time.Millisecond

func deadlineReached(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < deadlineSlack
}
