package policy

// Encoded is implemented by the messages the gateway hands to policies when
// it holds their wire bytes: the proxy forwards those bytes instead of
// encoding the message again, and a policy that needs a message's size
// reads it here instead of computing it.
//
// A request is also a proto.Message of the method's input type whenever
// validation is on; otherwise, and for every response from a backend, it is
// only its bytes. With interceptors of the embedder's on the chain
// (gateway.WithUnaryInterceptors), messages are the generated Go types
// instead, and do not implement Encoded.
type Encoded interface {
	// WireSize is the length of the message's protobuf encoding. It stays
	// valid after the message is sent, when its bytes are gone.
	WireSize() int
}
