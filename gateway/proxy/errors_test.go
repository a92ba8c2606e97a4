package proxy

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The statuses below are what grpc-go v1.85 gives a client in each case
// (measured against real servers and raw HTTP/2 peers): whether a backend
// sent the status must be told from the response metadata, and, only when
// headers came without trailer metadata, from grpc-go's own messages.
func TestMadeLocally(t *testing.T) {
	ct := metadata.Pairs("content-type", "application/grpc")
	for _, tc := range []struct {
		name            string
		st              *status.Status
		header, trailer metadata.MD
		local           bool
	}{
		{"trailers-only UNAVAILABLE from the backend", status.New(codes.Unavailable, "deliberate"), nil, ct, false},
		{"INTERNAL from the backend with trailer metadata", status.New(codes.Internal, "oops"), ct, metadata.Pairs("x-a", "1"), false},
		{"backend status after headers", status.New(codes.Unavailable, "deliberate"), ct, metadata.MD{}, false},
		{"reset before any answer", status.New(codes.Unavailable, "error reading from server: connection reset by peer"), nil, metadata.MD{}, true},
		{"EOF after headers", status.New(codes.Unavailable, "error reading from server: EOF"), ct, metadata.MD{}, true},
		{"RST_STREAM after headers", status.New(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), ct, metadata.MD{}, true},
		{"no trailers", status.New(codes.Internal, "server closed the stream without sending trailers"), ct, metadata.MD{}, true},
		{"not a gRPC reply", status.New(codes.Unavailable, "unexpected HTTP status code received from server: 503"), nil, nil, true},
		{"the client canceled", status.New(codes.Canceled, "context canceled"), nil, nil, false},
		{"a deadline", status.New(codes.DeadlineExceeded, "context deadline exceeded"), nil, nil, false},
	} {
		if got := madeLocally(tc.st, tc.header, tc.trailer); got != tc.local {
			t.Errorf("%s: madeLocally = %v, want %v", tc.name, got, tc.local)
		}
	}
}
