package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/certs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Client certificates as credentials, through the chain's real call facts:
// what reaches the policy is what a gRPC connection's TLS handshake (or the
// REST door) leaves in the peer.

const (
	shopURI  = "spiffe://example.org/shop"
	shopDNS  = "shop.internal.example.org"
	otherURI = "spiffe://example.org/unmapped"
)

// certWorld is a policy with client certificates, API keys and an HS256
// issuer, bound in a chain to the catalog's routes.
type certWorld struct {
	policy  *Policy
	chain   *chain.Chain
	ca      *certs.CA
	mapped  *certs.Leaf // carries shopURI
	byDNS   *certs.Leaf // carries shopDNS in upper case
	both    *certs.Leaf // carries the names of two entries
	unknown *certs.Leaf // carries otherURI, which no entry names
}

func newCertWorld(t *testing.T) *certWorld {
	t.Helper()
	p, err := New(Config{
		JWT:     []IssuerConfig{{Issuer: hmacIssuer, Audiences: []string{audience}, HS256Secret: hmacSecret}},
		APIKeys: []APIKeyConfig{{Consumer: "reader", SHA256: HashAPIKey(readOnlyKey)}},
		ClientCertificates: []ClientCertConfig{
			{Consumer: "shop", URISAN: shopURI, Scopes: []string{"catalog.write"}},
			{Consumer: "shop-dns", DNSSAN: shopDNS, Scopes: []string{"catalog.write"}},
		},
	}, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	routes, err := route.Build([]protoreflect.ServiceDescriptor{catalogv1.File_catalog_v1_catalog_proto.Services().ByName("CatalogService")}, route.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	w := &certWorld{policy: p, chain: chain.New(chain.Config{Routes: routes, Policies: []chain.Policy{p}}), ca: ca}
	for leaf, names := range map[**certs.Leaf][]string{
		&w.mapped:  {shopURI},
		&w.byDNS:   {strings.ToUpper(shopDNS)},
		&w.both:    {shopDNS, shopURI}, // the DNS entry comes second in the config
		&w.unknown: {otherURI, "unmapped.example.org"},
	} {
		if *leaf, err = ca.Client("client", names...); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// verified is the TLS state of a handshake that verified leaf.
func (w *certWorld) verified(leaf *certs.Leaf) *tls.ConnectionState {
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert},
		VerifiedChains: [][]*x509.Certificate{{leaf.Cert, w.ca.Cert}}}
}

// presented is the TLS state of a handshake where the client sent leaf but
// nothing verified it (a listener that does not require verification).
func presented(leaf *certs.Leaf) *tls.ConnectionState {
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
}

// call runs method through the chain as a gRPC call over a connection
// with TLS state cs (nil: plaintext) and metadata md.
func (w *certWorld) call(t *testing.T, method string, cs *tls.ConnectionState, md metadata.MD) outcome {
	t.Helper()
	var call *policy.Call
	bound := w.chain.Bind("/catalog.v1.CatalogService/"+method, nil)(func(ctx context.Context, _ any) (any, error) {
		call, _ = policy.FromContext(ctx)
		return "ok", nil
	})
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}}
	if cs != nil {
		p.AuthInfo = grpccreds.TLSInfo{State: *cs}
	}
	rec := &chainStream{}
	ctx := grpc.NewContextWithServerTransportStream(peer.NewContext(metadata.NewIncomingContext(t.Context(), md), p), rec)
	_, err := bound(ctx, nil)
	if call == nil {
		call = &policy.Call{}
	}
	return outcomeOf(err, rec.md, call, err == nil)
}

// chainStream is the transport stream the chain writes to: headers (the
// challenge) and trailers (the error source).
type chainStream struct {
	headerRecorder
}

func (s *chainStream) SetTrailer(metadata.MD) error { return nil }

func TestClientCertificateIsACredential(t *testing.T) {
	w := newCertWorld(t)
	for _, tc := range []struct {
		name     string
		leaf     *certs.Leaf
		consumer string
		subject  string
	}{
		{"URI SAN", w.mapped, "shop", shopURI},
		{"DNS SAN, any case", w.byDNS, "shop-dns", shopDNS},
		{"names of two entries: the first entry wins", w.both, "shop", shopURI},
	} {
		got := w.call(t, "CreateProduct", w.verified(tc.leaf), nil)
		id := got.identity
		if got.code != codes.OK || id == nil || id.Consumer != tc.consumer || id.Subject != tc.subject ||
			id.Method != KindClientCertificate || !id.HasScope("catalog.write") {
			t.Errorf("%s: %s %s %q, identity %+v; want OK as %s (%s) with catalog.write", tc.name, got.code, got.reason, got.message, id, tc.consumer, tc.subject)
		}
	}
	// A public method: the caller is still identified.
	if got := w.call(t, "GetProduct", w.verified(w.mapped), nil); got.code != codes.OK || got.identity == nil || got.identity.Consumer != "shop" {
		t.Errorf("public method: %s, identity %+v", got.code, got.identity)
	}
}

func TestUnverifiedClientCertificateIsNoCredential(t *testing.T) {
	w := newCertWorld(t)
	for name, cs := range map[string]*tls.ConnectionState{
		"presented, not verified":          presented(w.mapped),
		"verified chains empty, not nil":   {PeerCertificates: []*x509.Certificate{w.mapped.Cert}, VerifiedChains: [][]*x509.Certificate{}},
		"TLS without a client certificate": {},
	} {
		got := w.call(t, "CreateProduct", cs, nil)
		if got.code != codes.Unauthenticated || got.reason != ReasonMissing || got.identity != nil {
			t.Errorf("%s: %s %s, identity %+v; want UNAUTHENTICATED %s", name, got.code, got.reason, got.identity, ReasonMissing)
		}
		if strings.Contains(got.message, "not mapped") {
			t.Errorf("%s: %q speaks of a certificate that was never verified", name, got.message)
		}
	}
	// Nor does a gRPC client's metadata pass for the REST door's word on a
	// certificate: only the in-memory connection's calls carry it.
	md := metadata.Pairs(proxy.MDClientCert, string(w.mapped.Cert.Raw))
	if got := w.call(t, "CreateProduct", nil, md); got.code != codes.Unauthenticated || got.identity != nil {
		t.Errorf("certificate in metadata from a TCP client: %s, identity %+v", got.code, got.identity)
	}
}

func TestUnmappedClientCertificateIsAnonymous(t *testing.T) {
	w := newCertWorld(t)
	got := w.call(t, "CreateProduct", w.verified(w.unknown), nil)
	if got.code != codes.Unauthenticated || got.reason != ReasonMissing || !strings.Contains(got.message, "not mapped to a consumer") {
		t.Errorf("authenticated method: %s %s %q; want UNAUTHENTICATED %s saying the certificate is not mapped", got.code, got.reason, got.message, ReasonMissing)
	}
	if got := w.call(t, "GetProduct", w.verified(w.unknown), nil); got.code != codes.OK || got.identity != nil {
		t.Errorf("public method: %s, identity %+v; want OK and anonymous", got.code, got.identity)
	}
	if got := w.call(t, "CreateProduct", nil, nil); !strings.Contains(got.message, "client certificate") {
		t.Errorf("no credentials at all: %q does not mention client certificates", got.message)
	}
}

// A token or API key, when sent, is the credential, whatever the
// certificate: a connection's certificate may be shared by the callers of
// an intermediary, each sending its own token.
func TestTokenOrKeyWinsOverClientCertificate(t *testing.T) {
	w := newCertWorld(t)
	cs := w.verified(w.mapped)
	got := w.call(t, "GetProduct", cs, keyHeader(readOnlyKey))
	if got.code != codes.OK || got.identity == nil || got.identity.Consumer != "reader" || got.identity.Method != KindAPIKey {
		t.Errorf("key and certificate: %s, identity %+v; want the key's consumer", got.code, got.identity)
	}
	// The key lacks the scope the certificate has: the key decides.
	if got := w.call(t, "CreateProduct", cs, keyHeader(readOnlyKey)); got.code != codes.PermissionDenied || got.reason != ReasonInsufficientScope {
		t.Errorf("key without the scope, certificate with it: %s %s; want PERMISSION_DENIED", got.code, got.reason)
	}
	tok := hmacSign(t, []byte(hmacSecret), nil)
	if got := w.call(t, "CreateProduct", cs, bearer(tok)); got.code != codes.OK || got.identity == nil || got.identity.Method != KindJWT {
		t.Errorf("token and certificate: %s %s, identity %+v; want the token's identity", got.code, got.reason, got.identity)
	}
	// Bad credentials fail even with a good certificate: it does not stand in.
	for name, md := range map[string]metadata.MD{
		"unknown key": keyHeader("pk_guess"),
		"bad token":   bearer("a.b.c"),
		"malformed":   metadata.Pairs(authorizationKey, "Basic x"),
	} {
		if got := w.call(t, "CreateProduct", cs, md); got.code != codes.Unauthenticated || got.reason == ReasonMissing {
			t.Errorf("%s with a good certificate: %s %s; want UNAUTHENTICATED for the bad credential", name, got.code, got.reason)
		}
	}
}

// A certificate is no guess: a call whose only credential is one spends
// no failure budget and is not refused for want of it.
func TestClientCertificateAndFailureBudget(t *testing.T) {
	p, _, _ := budgetPolicy(t, func(c *Config) {
		c.ClientCertificates = []ClientCertConfig{{Consumer: "shop", URISAN: shopURI, Scopes: []string{"catalog.write"}}}
	})
	ca, err := certs.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Client("c", shopURI)
	if err != nil {
		t.Fatal(err)
	}
	const ip = "203.0.113.9"
	for range 25 {
		authorizeFrom(t, p, ip, write, badKey)
	}
	if got := authorizeFrom(t, p, ip, write, badKey); got.code != codes.ResourceExhausted {
		t.Fatalf("budget not spent: %s", got.code)
	}
	ctx, call := newCall(t.Context(), write, nil, policy.GRPC)
	call.ClientIP, call.ClientCert = ip, leaf.Cert
	if err := p.Authorize(ctx, func(metadata.MD) error { return nil }); err != nil || call.Identity == nil || call.Identity.Consumer != "shop" {
		t.Errorf("certificate from a spent address: %v, identity %+v; want the certificate's consumer", err, call.Identity)
	}
}

func TestClientCertificateConfig(t *testing.T) {
	for name, cc := range map[string]ClientCertConfig{
		"no consumer":       {URISAN: shopURI},
		"'#' in consumer":   {Consumer: "a#b", URISAN: shopURI},
		"no name":           {Consumer: "shop"},
		"both names":        {Consumer: "shop", URISAN: shopURI, DNSSAN: shopDNS},
		"relative URI":      {Consumer: "shop", URISAN: "example.org/shop"},
		"wildcard DNS name": {Consumer: "shop", DNSSAN: "*.example.org"},
		"URI as DNS name":   {Consumer: "shop", DNSSAN: shopURI},
	} {
		if _, err := New(Config{ClientCertificates: []ClientCertConfig{cc}}); err == nil {
			t.Errorf("%s: New accepted %+v", name, cc)
		}
	}
	twice := []ClientCertConfig{{Consumer: "a", DNSSAN: shopDNS}, {Consumer: "b", DNSSAN: strings.ToUpper(shopDNS)}}
	if _, err := New(Config{ClientCertificates: twice}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("one DNS name for two consumers: %v", err)
	}
	both := []ClientCertConfig{{Consumer: "shop", URISAN: shopURI}, {Consumer: "shop", DNSSAN: shopDNS}}
	if _, err := New(Config{ClientCertificates: both}); err != nil {
		t.Errorf("a consumer with two certificate names: %v", err)
	}
}

func TestCredentialKinds(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{}, nil},
		{Config{APIKeys: []APIKeyConfig{{Consumer: "a", SHA256: HashAPIKey("k")}}}, []string{KindAPIKey}},
		{Config{ClientCertificates: []ClientCertConfig{{Consumer: "a", URISAN: shopURI}},
			JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, HS256Secret: hmacSecret}}}, []string{KindJWT, KindClientCertificate}},
	} {
		p, err := New(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.CredentialKinds(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: kinds %v, want %v", tc.cfg, got, tc.want)
		}
	}
	// A Consul prefix is API keys too, before any is loaded.
	consul, err := api.NewClient(api.DefaultConfig()) // no I/O until used
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{APIKeysConsulPrefix: "portico/apikeys/"}, WithConsul(consul))
	if err != nil || !slices.Equal(p.CredentialKinds(), []string{KindAPIKey}) {
		t.Errorf("Consul prefix: %v, kinds %v", err, p.CredentialKinds())
	}
}
