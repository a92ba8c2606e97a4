package discovery

import (
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/resolver"
)

func marked(id string, port int, meta map[string]string) *api.ServiceEntry {
	e := entry(id, "127.0.0.1", port)
	e.Service.Meta = meta
	return e
}

// The TLS mark of an instance (meta portico-tls) travels on its address;
// a changed mark is a change of state, which makes a new connection.
func TestResolverCarriesTheTLSMark(t *testing.T) {
	fleet := func(bMark string) []*api.ServiceEntry {
		return []*api.ServiceEntry{
			marked("a", 1, map[string]string{TLSMeta: "true"}),
			marked("b", 2, map[string]string{TLSMeta: bMark}),
			marked("c", 3, nil),
			marked("d", 4, map[string]string{TLSMeta: "yes please"}), // not a bool: no mark
		}
	}
	h := &fakeHealth{results: []fakeResult{
		{entries: fleet("false"), index: 5},
		{entries: fleet("false"), index: 6}, // nothing changed: no update
		{entries: fleet("true"), index: 7},  // b moved to TLS
	}}
	cc, _ := build(t, h, "consul:///catalog")
	cc.waitFor(t, "two states", func(s []resolver.State, _ []error) bool { return len(s) >= 2 })
	states, _ := cc.snapshot()
	if len(states) != 2 {
		t.Fatalf("got %d states, want 2 (the same marks twice are no change)", len(states))
	}
	type mark struct{ on, marked bool }
	marks := func(s resolver.State) map[string]mark {
		out := map[string]mark{}
		for _, ep := range s.Endpoints {
			on, ok := InstanceTLS(ep.Addresses[0].Attributes)
			out[InstanceID(ep)] = mark{on, ok}
		}
		return out
	}
	want := map[string]mark{"a": {true, true}, "b": {false, true}, "c": {}, "d": {}}
	for id, m := range marks(states[0]) {
		if m != want[id] {
			t.Errorf("first state: %s has mark %+v, want %+v", id, m, want[id])
		}
	}
	if got := marks(states[1])["b"]; got != (mark{true, true}) {
		t.Errorf("after b moved to TLS its mark is %+v, want on", got)
	}
}
