package micro_test

import (
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/bench/internal/fixture"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// marshaler is the REST door's JSON codec, with the gateway's options
// (gateway.New): unpopulated fields emitted, unknown fields refused.
func marshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
}

// BenchmarkJSON encodes each example response and decodes each example
// request body, as the REST door does, and the same messages in protobuf
// for scale.
func BenchmarkJSON(b *testing.B) {
	m := marshaler()
	messages := []struct {
		name string
		msg  proto.Message
	}{
		{"get", &catalogv1.GetProductResponse{Product: fixture.Product(1)}},
		{"list", fixture.Page()},
		{"create", &catalogv1.CreateProductResponse{Product: fixture.NewProduct()}},
		{"stream-message", fixture.OrderUpdate(1)},
	}
	for _, c := range messages {
		js, err := m.Marshal(c.msg)
		if err != nil {
			b.Fatal(err)
		}
		pb, err := proto.Marshal(c.msg)
		if err != nil {
			b.Fatal(err)
		}
		measure(b, "encode/"+c.name, len(js), func() error { _, err := m.Marshal(c.msg); return err })
		measure(b, "decode/"+c.name, len(js), func() error { return m.Unmarshal(js, c.msg.ProtoReflect().New().Interface()) })
		measure(b, "proto-encode/"+c.name, len(pb), func() error { _, err := proto.Marshal(c.msg); return err })
		measure(b, "proto-decode/"+c.name, len(pb), func() error { return proto.Unmarshal(pb, c.msg.ProtoReflect().New().Interface()) })
	}
	// The create body as a REST client sends it: the product alone.
	body, err := protojson.Marshal(fixture.NewProduct())
	if err != nil {
		b.Fatal(err)
	}
	measure(b, "decode/create-body", len(body), func() error { return m.Unmarshal(body, new(catalogv1.Product)) })
}

// measure runs op as a sub-benchmark that handles size bytes per call.
func measure(b *testing.B, name string, size int, op func() error) {
	b.Run(name, func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
