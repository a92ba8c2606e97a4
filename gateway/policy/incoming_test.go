package policy

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"
)

// BenchmarkIncomingValue reads a key of a call's metadata as the policies
// do, through the context, where the gRPC door's map sits below the values
// grpc-go and the chain add (ten here), and from the call, where the
// chain's head keeps it.
func BenchmarkIncomingValue(b *testing.B) {
	md := metadata.MD{"x-api-key": {"pk"}, "content-type": {"application/grpc"}, "user-agent": {"grpc-go"}}
	ctx := WithIncoming(metadata.NewIncomingContext(context.Background(), md), md)
	type k int
	for i := range 10 {
		ctx = context.WithValue(ctx, k(i), i)
	}
	c := &Call{Incoming: md}
	b.Run("context", func(b *testing.B) {
		for b.Loop() {
			if len(IncomingValue(ctx, "authorization")) != 0 {
				b.Fatal("a value for a key the call lacks")
			}
		}
	})
	b.Run("call", func(b *testing.B) {
		for b.Loop() {
			if len(c.IncomingValue(ctx, "authorization")) != 0 {
				b.Fatal("a value for a key the call lacks")
			}
		}
	})
}
