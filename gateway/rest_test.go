package gateway

import (
	"testing"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestDecodeReply covers what the REST door can get back from the chain:
// the backend's bytes, a message an interceptor made, or something wrong,
// which must be an error and never a panic.
func TestDecodeReply(t *testing.T) {
	want := &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: "prd-1", Name: "Mug"}}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	raw := &rawMessage{data: mem.BufferSlice{mem.SliceBuffer(b)}, size: len(b)}
	got := &catalogv1.GetProductResponse{}
	if err := decodeReply(raw, got); err != nil || !proto.Equal(got, want) {
		t.Errorf("bytes: %v, %v", got, err)
	}
	if raw.data != nil {
		t.Error("the reply's buffers were not released")
	}

	got = &catalogv1.GetProductResponse{}
	if err := decodeReply(want, got); err != nil || !proto.Equal(got, want) {
		t.Errorf("an interceptor's message: %v, %v", got, err)
	}

	got = &catalogv1.GetProductResponse{}
	if err := decodeReply(nil, got); err != nil || !proto.Equal(got, &catalogv1.GetProductResponse{}) {
		t.Errorf("OK with no message: %v, %v; want the empty message, as a gRPC server sends", got, err)
	}

	for name, resp := range map[string]any{
		"a message of another type": &catalogv1.ListProductsResponse{},
		"not a message":             "hello",
		"bytes that do not decode":  &rawMessage{data: mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'A'})}, size: 3},
		"bytes already sent":        raw, // released above: must not read as an empty message
	} {
		if err := decodeReply(resp, &catalogv1.GetProductResponse{}); status.Code(err) != codes.Internal {
			t.Errorf("%s: got %v, want INTERNAL", name, err)
		}
	}
}
