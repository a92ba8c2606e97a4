package gateway

import (
	"errors"
	"testing"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestCodecHandsBuffersOver checks the codec's ownership rules: received
// bytes are sent once as they are, a second send is an error (never an empty
// message), and a decoded request whose bytes are gone is encoded afresh.
func TestCodecHandsBuffersOver(t *testing.T) {
	c := newCodec()
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
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, dec); err != nil || !proto.Equal(dec.Message, want) {
		t.Fatalf("decode: %v, %v", err, dec.Message)
	}
	for i := range 2 { // the received bytes, then the message encoded afresh
		out, err := c.Marshal(dec)
		got := &catalogv1.GetProductRequest{}
		if err != nil || proto.Unmarshal(out.Materialize(), got) != nil || !proto.Equal(got, want) {
			t.Errorf("send %d of a decoded request: %v, %v", i+1, err, got)
		}
	}

	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'A'})}, &decodedMessage{Message: &catalogv1.GetProductRequest{}}); err == nil {
		t.Error("bytes that are no GetProductRequest decoded without error")
	}
}
