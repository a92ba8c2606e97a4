package proxy

import (
	"errors"
	"testing"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestCodecHandsBuffersOver checks the codec's ownership rules: received
// bytes are sent once as they are, a second send is an error (never an empty
// message), and a decoded request whose bytes are gone is encoded afresh.
func TestCodecHandsBuffersOver(t *testing.T) {
	c := Codec()
	want := &catalogv1.GetProductRequest{Id: "prd-000001"}
	b, _ := proto.Marshal(want)

	raw := &rawMessage{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, raw); err != nil || raw.WireSize() != len(b) {
		t.Fatalf("unmarshal: %v, size %d", err, raw.WireSize())
	}
	out, err := c.Marshal(raw)
	if err != nil || string(out.Materialize()) != string(b) {
		t.Fatalf("marshal: %v, %q", err, out.Materialize())
	}
	if _, err := c.Marshal(raw); !errors.Is(err, errSentTwice) {
		t.Errorf("second send: %v, want errSentTwice", err)
	}
	if raw.WireSize() != len(b) {
		t.Errorf("size after send = %d, want %d", raw.WireSize(), len(b))
	}

	dec := &decodedMessage{Message: &catalogv1.GetProductRequest{}}
	dec.hold(mem.BufferSlice{mem.SliceBuffer(b)})
	if err := dec.decodeInto(dec.Message); err != nil || !proto.Equal(dec.Message, want) {
		t.Fatalf("decode: %v, %v", err, dec.Message)
	}
	for i := range 2 { // the received bytes, then the message encoded afresh
		out, err := c.Marshal(dec)
		got := &catalogv1.GetProductRequest{}
		if err != nil || proto.Unmarshal(out.Materialize(), got) != nil || !proto.Equal(got, want) {
			t.Errorf("send %d of a decoded request: %v, %v", i+1, err, got)
		}
	}

	bad := &rawMessage{}
	bad.hold(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'A'})})
	if err := bad.decodeInto(&catalogv1.GetProductRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bytes that are no GetProductRequest: %v, want INVALID_ARGUMENT", err)
	}
}

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
	if err := DecodeReply(raw, got); err != nil || !proto.Equal(got, want) {
		t.Errorf("bytes: %v, %v", got, err)
	}
	if raw.data != nil {
		t.Error("the reply's buffers were not released")
	}

	got = &catalogv1.GetProductResponse{}
	if err := DecodeReply(want, got); err != nil || !proto.Equal(got, want) {
		t.Errorf("an interceptor's message: %v, %v", got, err)
	}

	got = &catalogv1.GetProductResponse{}
	if err := DecodeReply(nil, got); err != nil || !proto.Equal(got, &catalogv1.GetProductResponse{}) {
		t.Errorf("OK with no message: %v, %v; want the empty message, as a gRPC server sends", got, err)
	}

	for name, resp := range map[string]any{
		"a message of another type": &catalogv1.ListProductsResponse{},
		"not a message":             "hello",
		"bytes that do not decode":  &rawMessage{data: mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'A'})}, size: 3},
		"bytes already sent":        raw, // released above: must not read as an empty message
	} {
		if err := DecodeReply(resp, &catalogv1.GetProductResponse{}); status.Code(err) != codes.Internal {
			t.Errorf("%s: got %v, want INTERNAL", name, err)
		}
	}
}
