package policy

import (
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
