package policy

import (
	"context"
	"reflect"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestCallHeaderIsMergedOnceAndForgotten(t *testing.T) {
	var c Call
	if md := c.MergeHeader(nil); md != nil {
		t.Fatalf("MergeHeader with nothing kept = %v, want nil", md)
	}
	c.AddHeader(metadata.Pairs("ratelimit-limit", "10"))
	c.AddHeader(metadata.Pairs("ratelimit-limit", "20", "retry-after", "1"))
	backend := metadata.Pairs("x-instance-id", "a")
	got := c.MergeHeader(backend)
	want := metadata.MD{"ratelimit-limit": {"10", "20"}, "retry-after": {"1"}, "x-instance-id": {"a"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MergeHeader = %v, want %v", got, want)
	}
	if md := c.TakeHeader(); md != nil {
		t.Errorf("after MergeHeader, TakeHeader = %v, want nil: the header goes out once", md)
	}
	c.AddHeader(metadata.Pairs("ratelimit-remaining", "3"))
	if got := c.MergeHeader(metadata.MD{}); !reflect.DeepEqual(got, metadata.Pairs("ratelimit-remaining", "3")) {
		t.Errorf("MergeHeader into no backend headers = %v, want the kept header", got)
	}
}

// A call reads its metadata from the door's map the chain's head kept in
// it, and from the context only when there was none.
func TestCallIncomingValue(t *testing.T) {
	door := metadata.MD{"x-api-key": {"from the call"}}
	ctx := NewIncomingContext(context.Background(), metadata.MD{"x-api-key": {"from the context"}})
	for _, tc := range []struct {
		name string
		c    *Call
		want string
	}{
		{"kept by the head", &Call{Incoming: door}, "from the call"},
		{"none kept", &Call{}, "from the context"},
		{"no call", nil, "from the context"},
	} {
		if got := tc.c.IncomingValue(ctx, "x-api-key"); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := (&Call{Incoming: door}).IncomingValue(ctx, "authorization"); got != nil {
		t.Errorf("a key the call lacks: %q, want none (and no look in the context)", got)
	}
}
