package chain_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/internal/certs"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// bufconnAddr is the address of the in-memory connection's peer.
type bufconnAddr struct{}

func (bufconnAddr) Network() string { return "bufconn" }
func (bufconnAddr) String() string  { return "bufconn" }

// The call facts carry the leaf of a verified client certificate chain,
// from whichever door the call came, and nothing else.
func TestCallFactsClientCertificate(t *testing.T) {
	ca, err := certs.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Client("shop", "spiffe://example.org/shop")
	if err != nil {
		t.Fatal(err)
	}
	verified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf.Cert, ca.Cert}}}
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
	tcp := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}
	door := metadata.Pairs(proxy.MDClientCert, string(leaf.Cert.Raw))

	facts := factsOf(t, chain.Config{})
	for _, tc := range []struct {
		name      string
		peer      *peer.Peer
		md        metadata.MD
		transport policy.Transport
		want      bool
	}{
		{"gRPC over TLS, verified", &peer.Peer{Addr: tcp, AuthInfo: credentials.TLSInfo{State: *verified}}, nil, policy.GRPC, true},
		{"gRPC over TLS, presented but not verified", &peer.Peer{Addr: tcp, AuthInfo: credentials.TLSInfo{State: *unverified}}, nil, policy.GRPC, false},
		{"gRPC, plaintext, claiming the REST door's word", &peer.Peer{Addr: tcp}, door, policy.GRPC, false},
		{"gRPC over TLS without a verified chain, claiming the REST door's word", &peer.Peer{Addr: tcp, AuthInfo: credentials.TLSInfo{State: *unverified}}, door, policy.GRPC, false},
		{"REST unary, verified", chain.NewRESTPeer(verified, nil), nil, policy.REST, true},
		{"REST unary, not verified", chain.NewRESTPeer(unverified, nil), nil, policy.REST, false},
		{"REST unary, plaintext", chain.NewRESTPeer(nil, nil), nil, policy.REST, false},
		{"REST stream with the door's word", &peer.Peer{Addr: bufconnAddr{}}, door, policy.REST, true},
		{"REST stream without it", &peer.Peer{Addr: bufconnAddr{}}, nil, policy.REST, false},
		{"REST stream, garbage for a certificate", &peer.Peer{Addr: bufconnAddr{}}, metadata.Pairs(proxy.MDClientCert, "not DER"), policy.REST, false},
	} {
		got := facts(tc.name, peer.NewContext(metadata.NewIncomingContext(context.Background(), tc.md), tc.peer))
		if got.Transport != tc.transport {
			t.Errorf("%s: transport %s, want %s", tc.name, got.Transport, tc.transport)
		}
		if has := got.ClientCert != nil; has != tc.want {
			t.Errorf("%s: client certificate %v, want %v", tc.name, has, tc.want)
		} else if has && !got.ClientCert.Equal(leaf.Cert) {
			t.Errorf("%s: the facts carry another certificate", tc.name)
		}
	}
	if chain.NewRESTPeer(nil, nil) != chain.RESTPeer {
		t.Error("a plaintext REST call's peer is not RESTPeer")
	}
}

// A composite's step is marked in the call facts from the peer the REST
// door's connection gives it, keeping the caller's TLS state; no other
// call is a step, whatever its context holds.
func TestCallFactsStep(t *testing.T) {
	facts := factsOf(t, chain.Config{})
	step := &policy.Step{Composite: "/storefront.v1.StorefrontService/GetOrderDetails", Name: "order"}
	cs := &tls.ConnectionState{Version: tls.VersionTLS13}
	tcp := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}
	for _, tc := range []struct {
		name string
		peer *peer.Peer
		want *policy.Step
	}{
		{"step", chain.NewRESTPeer(nil, step), step},
		{"step over TLS", chain.NewRESTPeer(cs, step), step},
		{"REST call", chain.RESTPeer, nil},
		{"REST call over TLS", chain.NewRESTPeer(cs, nil), nil},
		{"gRPC call whose context carries a step mark", &peer.Peer{Addr: tcp}, nil},
	} {
		if got := facts(tc.name, peer.NewContext(policy.WithStep(context.Background(), step), tc.peer)); got.Step != tc.want {
			t.Errorf("%s: step %v, want %v", tc.name, got.Step, tc.want)
		}
	}
	if p := chain.NewRESTPeer(cs, step); p.AuthInfo.(credentials.TLSInfo).State.Version != tls.VersionTLS13 {
		t.Error("a step's peer lost the caller's TLS state")
	}
}

// The chain's head keeps the door's metadata map in the call, the same
// map, so that the policies after it read it without a walk of the
// context; a door that gave none leaves the call without one.
func TestCallFactsKeepTheDoorsMetadata(t *testing.T) {
	facts := factsOf(t, chain.Config{})
	md := metadata.MD{"x-api-key": {"pk"}}
	tcp := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}
	got := facts("the door's map", peer.NewContext(policy.NewIncomingContext(context.Background(), md), &peer.Peer{Addr: tcp}))
	if got.Incoming == nil || &got.Incoming["x-api-key"][0] != &md["x-api-key"][0] {
		t.Fatalf("the call does not hold the door's map: %v", got)
	}
	ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), md), &peer.Peer{Addr: tcp})
	if got = facts("no map", ctx); got.Incoming != nil {
		t.Errorf("a call whose door gave no map holds %v", got.Incoming)
	}
	if v := got.IncomingValue(ctx, "x-api-key"); len(v) != 1 || v[0] != "pk" {
		t.Errorf("without the door's map the call reads %q from the context, want pk", v)
	}
}

// factsOf binds GetOrder's chain, made with cfg and the test's route table,
// and returns a function that runs it with a context and returns the call
// facts its handler met; the call named name fails the test if the chain
// refuses it or the handler does not run.
func factsOf(t *testing.T, cfg chain.Config) func(name string, ctx context.Context) *policy.Call {
	t.Helper()
	cfg.Routes = table(t)
	var got *policy.Call
	bound := chain.New(cfg).Bind("/orders.v1.OrderService/GetOrder", nil)(func(ctx context.Context, _ any) (any, error) {
		got, _ = policy.FromContext(ctx)
		return nil, nil
	})
	return func(name string, ctx context.Context) *policy.Call {
		t.Helper()
		got = nil
		if _, err := bound(ctx, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got == nil {
			t.Fatalf("%s: the handler did not run", name)
		}
		return got
	}
}
