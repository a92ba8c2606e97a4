package proxy

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"testing"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

func TestIncomingHTTPHeaderNeverTakesPorticoKeys(t *testing.T) {
	for _, h := range []string{"X-Portico-Consumer", "X-Portico-Internal-Route", "x-portico-scopes"} {
		if k, ok := IncomingHTTPHeader(h); ok {
			t.Errorf("IncomingHTTPHeader(%q) forwarded as %q", h, k)
		}
	}
	for in, want := range map[string]string{"X-Api-Key": "x-api-key", "Traceparent": "traceparent"} {
		if k, ok := IncomingHTTPHeader(in); !ok || k != want {
			t.Errorf("IncomingHTTPHeader(%s) = %q %v, want %q", in, k, ok, want)
		}
	}
}

func TestOutgoingHTTPHeader(t *testing.T) {
	for in, want := range map[string]string{
		"x-instance-id": "X-Instance-Id", "retry-after": "Retry-After", "ratelimit-remaining": "Ratelimit-Remaining",
		"www-authenticate": "Www-Authenticate", "other": "Grpc-Metadata-other",
	} {
		if got, ok := OutgoingHTTPHeader(in); !ok || got != want {
			t.Errorf("OutgoingHTTPHeader(%s) = %q %v, want %q", in, got, ok, want)
		}
	}
	for _, k := range []string{policy.ErrorSourceKey, "content-type", "grpc-status"} {
		if got, ok := OutgoingHTTPHeader(k); ok {
			t.Errorf("OutgoingHTTPHeader(%s) = %q, want dropped", k, got)
		}
	}
}

// A backend gets the caller's metadata less the hop's, the credentials and
// any x-portico-* key, plus the verified identity; the same whether the
// proxy reads the door's own map (policy.Incoming, or the one the call
// keeps), which it leaves as it was, or a copy through grpc-go.
func TestOutgoingContext(t *testing.T) {
	for _, way := range []struct {
		name     string
		outgoing func(ctx context.Context, in metadata.MD) context.Context
	}{
		{"through grpc-go", func(ctx context.Context, _ metadata.MD) context.Context { return OutgoingContext(ctx) }},
		{"the door's map", func(ctx context.Context, in metadata.MD) context.Context {
			c, _ := policy.FromContext(ctx)
			return (&Method{mode: AsBytes}).outgoingContext(policy.WithIncoming(ctx, in), c)
		}},
		{"the map the call keeps", func(ctx context.Context, in metadata.MD) context.Context {
			c, ok := policy.FromContext(ctx)
			if !ok {
				c = &policy.Call{}
			}
			c.Incoming = in
			// The context's own metadata is empty: what reaches the backend
			// can only have come from the call's map.
			return (&Method{mode: AsBytes}).outgoingContext(metadata.NewIncomingContext(ctx, metadata.MD{}), c)
		}},
	} {
		t.Run(way.name, func(t *testing.T) {
			in := metadata.Pairs("authorization", "Bearer t", "x-api-key", "k", "x-portico-consumer", "forged",
				"x-portico-internal-route", "GET /x", "grpc-timeout", "1S", "content-type", "application/grpc",
				"x-request-id", "r1", "traceparent", "00-abc")
			before := in.Copy()
			ctx := metadata.NewIncomingContext(context.Background(), in)
			ctx = policy.NewContext(ctx, &policy.Call{Identity: &policy.Identity{Consumer: "shop", Subject: "josé", Scopes: []string{"a", "b c"}}})
			out, _ := metadata.FromOutgoingContext(way.outgoing(ctx, in))
			want := map[string]string{"x-request-id": "r1", "traceparent": "00-abc",
				"x-portico-consumer": "shop", "x-portico-subject": "jos%C3%A9", "x-portico-scopes": "a b%20c"}
			if len(out) != len(want) {
				t.Errorf("outgoing metadata %v, want exactly %v", out, want)
			}
			for k, v := range want {
				if got := out.Get(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %v, want %q", k, got, v)
				}
			}
			// A gRPC client's own address joins x-forwarded-for.
			xff := metadata.Pairs("x-forwarded-for", "198.51.100.1")
			pctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), xff),
				&peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("203.0.113.5"), Port: 4000}})
			out, _ = metadata.FromOutgoingContext(way.outgoing(pctx, xff))
			if got := out.Get("x-forwarded-for"); len(got) != 1 || got[0] != "198.51.100.1, 203.0.113.5" {
				t.Errorf("x-forwarded-for = %v, want the client's address appended", got)
			}
			// So does a gRPC-Web or Connect client's, a "tcp" address that
			// grpc-go's ServeHTTP gives as a string; the in-memory
			// connection's hop is in already.
			for addr, want := range map[net.Addr]string{
				namedAddr{"tcp", "[::ffff:203.0.113.6]:4000"}: "198.51.100.1, 203.0.113.6",
				namedAddr{"bufconn", "bufconn"}:               "198.51.100.1",
			} {
				pctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), xff), &peer.Peer{Addr: addr})
				out, _ = metadata.FromOutgoingContext(way.outgoing(pctx, xff))
				if got := out.Get("x-forwarded-for"); len(got) != 1 || got[0] != want {
					t.Errorf("peer %s: x-forwarded-for = %v, want %q", addr, got, want)
				}
			}
			// Anonymous: no identity keys at all, even forged ones.
			out, _ = metadata.FromOutgoingContext(way.outgoing(metadata.NewIncomingContext(context.Background(), in), in))
			if v := out.Get("x-portico-consumer"); len(v) != 0 {
				t.Errorf("anonymous call forwards consumer %v", v)
			}
			// The door's map is as it was.
			if !reflect.DeepEqual(in, before) || xff.Get("x-forwarded-for")[0] != "198.51.100.1" || len(xff) != 1 {
				t.Errorf("the incoming metadata changed: %v, want %v", in, before)
			}
		})
	}
}

// A composite's step sends the caller's metadata, credentials kept, less
// every x-portico-* key, plus the address the chain found and the
// caller's hop.
func TestStepMetadata(t *testing.T) {
	in := metadata.Pairs("x-api-key", "k", "x-portico-internal-route", "GET /x", "x-portico-internal-client-ip", "6.6.6.7",
		"x-portico-internal-client-cert-bin", "forged", "x-forwarded-for", "6.6.6.6")
	ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), in),
		&peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("203.0.113.5"), Port: 4000}})
	md := StepMetadata(policy.NewContext(ctx, &policy.Call{ClientIP: "203.0.113.5"}))
	want := metadata.Pairs("x-api-key", "k", MDClientIP, "203.0.113.5", "x-forwarded-for", "6.6.6.6, 203.0.113.5")
	if !reflect.DeepEqual(md, want) {
		t.Errorf("StepMetadata = %v, want %v", md, want)
	}
}

func TestHeaderSafe(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "josé": "jos%C3%A9", "a b": "a%20b", "100%": "100%25", "tab\t": "tab%09",
	} {
		if got := headerSafe(in); got != want {
			t.Errorf("headerSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDropHopMD(t *testing.T) {
	md := dropHopMD(metadata.Pairs("content-type", "application/grpc", policy.ErrorSourceKey, "gateway",
		"grpc-status", "0", "x-instance-id", "i1"))
	if len(md) != 1 || md.Get("x-instance-id")[0] != "i1" {
		t.Errorf("dropHopMD = %v, want only x-instance-id", md)
	}
}

// namedAddr is a net.Addr of any network.
type namedAddr struct{ network, addr string }

func (a namedAddr) Network() string { return a.network }
func (a namedAddr) String() string  { return a.addr }

// ForwardHeaders names and canonicalizes as Header.Add would, adds to a
// header already there, and leaves the metadata's values as they were
// when the headers are added to afterwards.
func TestForwardHeaders(t *testing.T) {
	backing := make([]string, 1, 4) // room to append into, as a joined MD has
	backing[0] = "3"
	md := metadata.MD{"ratelimit-limit": backing, "other-key": {"a", "b"}, "grpc-status": {"0"}, "x-empty": nil}
	h := http.Header{"Grpc-Metadata-Other-Key": {"before"}}
	ForwardHeaders(h, md, OutgoingHTTPHeader)
	want := http.Header{"Ratelimit-Limit": {"3"}, "Grpc-Metadata-Other-Key": {"before", "a", "b"}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("headers %v, want %v", h, want)
	}
	h.Add("Ratelimit-Limit", "4")
	if got := backing[:2]; got[1] != "" {
		t.Errorf("adding to the header wrote into the metadata: %q", got)
	}
	if got := md["ratelimit-limit"]; len(got) != 1 || got[0] != "3" {
		t.Errorf("metadata now %q, want [3]", got)
	}
}
