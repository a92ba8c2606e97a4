package gateway

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"
)

// The proxy moves messages as bytes. A backend's response is never decoded
// on the native gRPC path, and a request only when a policy reads its
// fields; what was received is what is sent on, so nothing is encoded twice.
//
// Nor is anything copied: a received message keeps a reference to grpc-go's
// pooled receive buffers, and sending it hands that reference to grpc-go,
// which frees it once the bytes are written. A message the proxy drops (a
// call refused by a policy) leaves its buffers to the garbage collector
// instead of the pool.

// rawMessage is a message the proxy holds only as its wire bytes.
type rawMessage struct {
	data mem.BufferSlice // nil once sent
	size int
}

func (m *rawMessage) WireSize() int { return m.size }

// hold keeps a reference to received buffers (grpc-go frees its own after
// Unmarshal returns).
func (m *rawMessage) hold(data mem.BufferSlice) {
	data.Ref()
	m.data, m.size = data, data.Len()
}

// take hands the buffers over to be sent; grpc-go frees them once written.
func (m *rawMessage) take() (mem.BufferSlice, error) {
	if m.gone() {
		return nil, errSentTwice
	}
	data := m.data
	m.data = nil
	return data, nil
}

// release gives the buffers back to grpc-go's pool, for a message that
// will not be sent.
func (m *rawMessage) release() {
	m.data.Free()
	m.data = nil
}

// gone reports a message whose bytes were sent or released.
func (m *rawMessage) gone() bool { return m.data == nil && m.size > 0 }

// decodedMessage is a request that a policy reads: the decoded message, for
// the policies, and the bytes it was decoded from, for the backend.
type decodedMessage struct {
	protobuf.Message
	rawMessage
}

// errSentTwice would mean a proxy bug: a message's bytes go out once.
var errSentTwice = errors.New("gateway: a proxied message was sent twice")

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
		return m.take()
	case *decodedMessage:
		if m.data == nil {
			// Its bytes are gone (or there never were any): encode the
			// message itself.
			return c.proto.Marshal(m.Message)
		}
		return m.take()
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *rawMessage:
		m.hold(data)
		return nil
	case *decodedMessage:
		if err := protobuf.Unmarshal(contiguous(data), m.Message); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		m.hold(data)
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// contiguous returns data's bytes in one slice, copying only when they span
// several buffers (grpc-go reads a message into one buffer when it can).
func contiguous(data mem.BufferSlice) []byte {
	if len(data) == 1 {
		return data[0].ReadOnlyData()
	}
	return data.Materialize()
}
