package proxy

import (
	"errors"
	"fmt"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	protobuf "google.golang.org/protobuf/proto"
)

// The proxy moves messages as bytes. A backend's response is never decoded
// on the native gRPC path, and a request only when a policy reads its
// fields (the decode steps in proxy.go); what was received is what is sent
// on, so nothing is encoded twice.
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

var _ policy.Encoded = (*rawMessage)(nil)

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

// decodeInto decodes the bytes into out. Bytes that are not a message of
// the method's input type are the caller's mistake, on every door and
// every kind of call: INVALID_ARGUMENT, never grpc-go's bare INTERNAL.
func (m *rawMessage) decodeInto(out protobuf.Message) error {
	return m.decode(protobuf.UnmarshalOptions{}, out)
}

// decodeNew is decodeInto for a message just made, which has nothing to
// reset: protobuf.Unmarshal's reset of it was a sixth of the decode step.
func (m *rawMessage) decodeNew(out protobuf.Message) error {
	return m.decode(protobuf.UnmarshalOptions{Merge: true}, out)
}

func (m *rawMessage) decode(opts protobuf.UnmarshalOptions, out protobuf.Message) error {
	if err := opts.Unmarshal(contiguous(m.data), out); err != nil {
		return policy.Error(codes.InvalidArgument, policy.ReasonBadRequest,
			fmt.Sprintf("request is not a valid %s: %v", out.ProtoReflect().Descriptor().FullName(), err), nil)
	}
	return nil
}

// decodedMessage is a request that a policy reads: the decoded message, for
// the policies, and the bytes it was decoded from, for the backend.
type decodedMessage struct {
	protobuf.Message
	rawMessage
}

// errSentTwice would mean a proxy bug: a message's bytes go out once.
var errSentTwice = errors.New("proxy: a proxied message was sent twice")

// Codec is the "proto" codec of the gateway's gRPC server and of its
// connections to backends. The proxy's messages travel as the bytes they
// hold; every other message (health, reflection, a REST request built by
// grpc-gateway, the generated types of typed mode) goes through grpc-go's
// own proto codec.
func Codec() encoding.CodecV2 { return codec{proto: encoding.GetCodecV2(proto.Name)} }

type codec struct{ proto encoding.CodecV2 }

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
	if m, ok := v.(*rawMessage); ok {
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

// DecodeReply fills reply, the message grpc-gateway wants to write as JSON,
// from what the chain returned: the backend's bytes, or a message an
// interceptor made. Anything else is INTERNAL, never a panic.
func DecodeReply(resp, reply any) error {
	out, ok := reply.(protobuf.Message)
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
		err := protobuf.Unmarshal(contiguous(r.data), out) // copies what it keeps
		r.release()
		if err != nil {
			return policy.Error(codes.Internal, policy.ReasonInternal,
				"backend response is not a valid "+string(out.ProtoReflect().Descriptor().FullName())+": "+err.Error(), nil)
		}
	case protobuf.Message:
		// An interceptor answered with a message of its own.
		if r.ProtoReflect().Descriptor() != out.ProtoReflect().Descriptor() {
			return status.Errorf(codes.Internal, "response is a %s, not a %s",
				r.ProtoReflect().Descriptor().FullName(), out.ProtoReflect().Descriptor().FullName())
		}
		protobuf.Merge(out, r)
	default:
		return status.Errorf(codes.Internal, "response of type %T is not a protobuf message", resp)
	}
	return nil
}
