package gateway

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"
)

// The proxy moves messages as bytes. A backend's response is never decoded
// on the native gRPC path, and a request only when a policy reads its
// fields; what was received is what is sent on, so nothing is encoded twice.

// rawMessage is a message the proxy holds only as its wire bytes.
type rawMessage struct{ b []byte }

func (m *rawMessage) WireBytes() []byte { return m.b }

// decodedMessage is a request that a policy reads: the decoded message, for
// the policies, and the bytes it was decoded from, for the backend.
type decodedMessage struct {
	protobuf.Message
	b []byte
}

func (m *decodedMessage) WireBytes() []byte { return m.b }

// codec is the "proto" codec of the gateway's gRPC server and of its
// connections to backends. rawMessage and decodedMessage travel as the bytes
// they hold; every other message (health, reflection, a REST request built
// by grpc-gateway) goes through grpc-go's own proto codec.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (codec) Name() string { return proto.Name }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *rawMessage:
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	case *decodedMessage:
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *rawMessage:
		m.b = data.Materialize()
		return nil
	case *decodedMessage:
		m.b = data.Materialize()
		if err := protobuf.Unmarshal(m.b, m.Message); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		return nil
	}
	return c.proto.Unmarshal(data, v)
}
