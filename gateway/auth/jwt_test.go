package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/internal/testjwks"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The signed-token matrix of the gateway's policy tests, without Consul or
// a gateway: a real JWKS endpoint on loopback, real signatures, and the
// policy's two interceptors, which must agree on every case.

const (
	jwksIssuer    = "https://issuer.test"
	rsaOnlyIssuer = "https://rsa-only.test" // same keys, RS256 only
	hmacIssuer    = "https://hmac.test"
	audience      = "portico"
	hmacSecret    = "0123456789abcdef0123456789abcdef-shared"
	testKey       = "pk_test-key"
	readOnlyKey   = "pk_read-only-key"
)

// signer mints tokens with one key under one kid.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

type signers struct{ rs, es, ed, forger, rotated signer }

// keys is generated once: RSA key generation is slow, and under -race
// slower still.
var keys = sync.OnceValue(func() signers {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	return signers{
		rs:      signer{"rsa-1", jwt.SigningMethodRS256, rsaKey},
		es:      signer{"ec-1", jwt.SigningMethodES256, ecKey},
		ed:      signer{"ed-1", jwt.SigningMethodEdDSA, edKey},
		forger:  signer{"rsa-1", jwt.SigningMethodRS256, otherRSA}, // a published kid, another key
		rotated: signer{"rsa-2", jwt.SigningMethodRS256, otherRSA}, // published only by some tests
	}
})

type claims map[string]any

// sign returns a token of jwksIssuer for alice with scope catalog.write,
// changed by c: a nil value deletes the claim.
func sign(t *testing.T, s signer, c claims) string {
	t.Helper()
	return signWithHeader(t, s, nil, c)
}

// signWithHeader is sign with extra JOSE header parameters.
func signWithHeader(t *testing.T, s signer, header map[string]any, c claims) string {
	t.Helper()
	now := time.Now()
	base := jwt.MapClaims{"iss": jwksIssuer, "aud": audience, "sub": "alice", "scope": "catalog.write",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for k, v := range c {
		if v == nil {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	tok := jwt.NewWithClaims(s.method, base)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	for k, v := range header {
		tok.Header[k] = v
	}
	var key any = s.key
	if s.method == jwt.SigningMethodNone {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	raw, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// hmacSign returns a token of hmacIssuer for bob signed with secret.
func hmacSign(t *testing.T, secret []byte, c claims) string {
	t.Helper()
	base := jwt.MapClaims{"iss": hmacIssuer, "aud": audience, "sub": "bob", "scope": "catalog.write",
		"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range c {
		base[k] = v
	}
	raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, base).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// startPolicy builds and starts a policy with a JWKS issuer on jwksURL,
// the same keys under an RS256-only issuer, an HS256 issuer and two API
// keys; change adjusts the config first.
func startPolicy(t *testing.T, jwksURL string, change func(*Config)) *Policy {
	t.Helper()
	cfg := Config{
		Leeway: 10 * time.Second,
		JWT: []IssuerConfig{
			{Issuer: jwksIssuer, Audiences: []string{audience}, JWKSURL: jwksURL},
			{Issuer: rsaOnlyIssuer, Audiences: []string{audience}, JWKSURL: jwksURL, Algorithms: []string{"RS256"}},
			{Issuer: hmacIssuer, Audiences: []string{audience}, HS256Secret: hmacSecret},
		},
		APIKeys: []APIKeyConfig{
			{Consumer: "shop", SHA256: HashAPIKey(testKey), Scopes: []string{"catalog.write"}},
			{Consumer: "reader", SHA256: HashAPIKey(readOnlyKey)},
		},
		// The matrix fails far more often than a client address may; the
		// budget has tests of its own (failures_test.go).
		FailureLimit: &policy.RateLimit{},
	}
	if change != nil {
		change(&cfg)
	}
	p, err := New(cfg, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// outcome is what a caller of either interceptor sees.
type outcome struct {
	code      codes.Code
	policy    string // ErrorInfo metadata "policy"
	reason    string // ErrorInfo reason
	message   string
	challenge string           // WWW-Authenticate
	identity  *policy.Identity // stored in the call
	handled   bool             // the handler ran
}

func outcomeOf(err error, challenge metadata.MD, call *policy.Call, handled bool) outcome {
	o := outcome{code: status.Code(err), message: status.Convert(err).Message(), identity: call.Identity, handled: handled}
	o.policy, o.reason = policy.Rejection(err)
	if v := challenge.Get(challengeKey); len(v) > 0 {
		o.challenge = v[len(v)-1]
	}
	return o
}

func newCall(ctx context.Context, pol *policy.Policy, md metadata.MD, transport policy.Transport) (context.Context, *policy.Call) {
	call := &policy.Call{FullMethod: "/catalog.v1.CatalogService/CreateProduct", Service: "catalog.v1.CatalogService",
		Method: "CreateProduct", Backend: "catalog", Policy: pol, Transport: transport}
	return policy.NewContext(metadata.NewIncomingContext(ctx, md), call), call
}

// headerRecorder is the transport stream grpc.SetHeader writes to. It
// embeds the interface: what it does not fake, the policy does not call.
type headerRecorder struct {
	grpc.ServerTransportStream
	md metadata.MD
}

func (h *headerRecorder) Method() string { return "/catalog.v1.CatalogService/CreateProduct" }
func (h *headerRecorder) SetHeader(md metadata.MD) error {
	h.md = metadata.Join(h.md, md)
	return nil
}

func callUnary(t *testing.T, p *Policy, pol *policy.Policy, md metadata.MD) outcome {
	t.Helper()
	ctx, call := newCall(t.Context(), pol, md, policy.GRPC)
	rec := &headerRecorder{}
	ctx = grpc.NewContextWithServerTransportStream(ctx, rec)
	handled := false
	_, err := p.UnaryServerInterceptor()(ctx, "req", &grpc.UnaryServerInfo{FullMethod: call.FullMethod},
		func(context.Context, any) (any, error) { handled = true; return "resp", nil })
	return outcomeOf(err, rec.md, call, handled)
}

// serverStream is the stream the stream interceptor sees. Its context
// carries the transport stream, as a grpc-go server stream's does.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

func callStream(t *testing.T, p *Policy, pol *policy.Policy, md metadata.MD) outcome {
	t.Helper()
	ctx, call := newCall(t.Context(), pol, md, policy.REST)
	rec := &headerRecorder{}
	ss := &serverStream{ctx: grpc.NewContextWithServerTransportStream(ctx, rec)}
	handled := false
	err := p.StreamServerInterceptor()(nil, ss, &grpc.StreamServerInfo{FullMethod: call.FullMethod, IsServerStream: true},
		func(any, grpc.ServerStream) error { handled = true; return nil })
	return outcomeOf(err, rec.md, call, handled)
}

func bearer(tok string) metadata.MD  { return metadata.Pairs(authorizationKey, "Bearer "+tok) }
func keyHeader(k string) metadata.MD { return metadata.Pairs(APIKeyHeader, k) }

func TestJWTMatrix(t *testing.T) {
	s := keys()
	jwks := testjwks.New(t)
	for _, k := range []signer{s.rs, s.es, s.ed} {
		jwks.Publish(k.kid, k.key.Public())
	}
	p := startPolicy(t, jwks.URL, nil)

	write := &policy.Policy{Access: policy.Authenticated, Scopes: []string{"catalog.write"}}
	public := &policy.Policy{Access: policy.Public}
	now := time.Now()
	// Algorithm confusion: HS256 keyed with the RSA public key the JWKS
	// publishes, under the RSA key's kid.
	pubDER, err := x509.MarshalPKIXPublicKey(s.rs.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	confused := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": jwksIssuer, "aud": audience, "sub": "eve",
			"scope": "catalog.write", "exp": now.Add(time.Hour).Unix()})
		tok.Header["kid"] = s.rs.kid
		raw, err := tok.SignedString(pubDER)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}()
	const alice, bob = jwksIssuer + "#alice", hmacIssuer + "#bob"

	cases := []struct {
		name     string
		pol      *policy.Policy
		md       metadata.MD
		code     codes.Code
		reason   string
		msg      string // part of the message
		consumer string // the identity stored on success, "" for none
	}{
		{"public method without credentials", public, nil, codes.OK, "", "", ""},
		{"no credentials", write, nil, codes.Unauthenticated, ReasonMissing, "credentials required", ""},
		{"not a bearer scheme", write, metadata.Pairs(authorizationKey, "Basic YWxpY2U6cHc="), codes.Unauthenticated, ReasonMalformed, "Bearer", ""},
		{"two authorization headers", write, metadata.Pairs(authorizationKey, "Bearer a", authorizationKey, "Bearer b"), codes.Unauthenticated, ReasonMalformed, "exactly one", ""},
		{"not a JWT", write, bearer("abc.def.ghi"), codes.Unauthenticated, ReasonInvalidToken, "malformed", ""},

		{"RS256", write, bearer(sign(t, s.rs, nil)), codes.OK, "", "", alice},
		{"ES256", write, bearer(sign(t, s.es, nil)), codes.OK, "", "", alice},
		{"EdDSA", write, bearer(sign(t, s.ed, nil)), codes.OK, "", "", alice},
		{"HS256 from the shared-secret issuer", write, bearer(hmacSign(t, []byte(hmacSecret), nil)), codes.OK, "", "", bob},
		{"RS256 from the RS256-only issuer", write, bearer(sign(t, s.rs, claims{"iss": rsaOnlyIssuer})), codes.OK, "", "", rsaOnlyIssuer + "#alice"},
		{"scp claim as a list", write, bearer(sign(t, s.rs, claims{"scope": nil, "scp": []string{"catalog.write"}})), codes.OK, "", "", alice},
		{"audience list naming the gateway", write, bearer(sign(t, s.rs, claims{"aud": []string{"billing", audience}})), codes.OK, "", "", alice},
		{"expired within the leeway", write, bearer(sign(t, s.rs, claims{"exp": now.Add(-2 * time.Second).Unix()})), codes.OK, "", "", alice},
		{"token on a public method", public, bearer(sign(t, s.rs, nil)), codes.OK, "", "", alice},

		{"bad signature", write, bearer(sign(t, s.forger, nil)), codes.Unauthenticated, ReasonInvalidToken, "signature is invalid", ""},
		{"HS256 with the wrong secret", write, bearer(hmacSign(t, []byte("another-secret-another-secret-xx"), nil)), codes.Unauthenticated, ReasonInvalidToken, "signature is invalid", ""},
		{"expired", write, bearer(sign(t, s.rs, claims{"exp": now.Add(-time.Minute).Unix()})), codes.Unauthenticated, ReasonExpired, "expired", ""},
		{"no exp", write, bearer(sign(t, s.rs, claims{"exp": nil})), codes.Unauthenticated, ReasonInvalidToken, `lacks the required claim "exp"`, ""},
		{"not valid yet", write, bearer(sign(t, s.rs, claims{"nbf": now.Add(time.Hour).Unix()})), codes.Unauthenticated, ReasonInvalidToken, "not valid yet", ""},
		{"issued in the future", write, bearer(sign(t, s.rs, claims{"iat": now.Add(time.Hour).Unix()})), codes.Unauthenticated, ReasonInvalidToken, "issued in the future", ""},
		{"wrong audience", write, bearer(sign(t, s.rs, claims{"aud": "billing"})), codes.Unauthenticated, ReasonWrongAudience, "audience", ""},
		{"no audience", write, bearer(sign(t, s.rs, claims{"aud": nil})), codes.Unauthenticated, ReasonInvalidToken, `lacks the required claim "aud"`, ""},
		{"empty audience", write, bearer(sign(t, s.rs, claims{"aud": ""})), codes.Unauthenticated, ReasonInvalidToken, `lacks the required claim "aud"`, ""},
		{"no audience and no exp", write, bearer(sign(t, s.rs, claims{"aud": nil, "exp": nil})), codes.Unauthenticated, ReasonInvalidToken, `lacks the required claims "aud", "exp"`, ""},
		{"untrusted issuer", write, bearer(sign(t, s.rs, claims{"iss": "https://evil.test"})), codes.Unauthenticated, ReasonInvalidToken, "issuer is not trusted", ""},
		{"no issuer", write, bearer(sign(t, s.rs, claims{"iss": nil})), codes.Unauthenticated, ReasonInvalidToken, "issuer is not trusted", ""},
		{"unknown kid", write, bearer(sign(t, signer{"nope-9", jwt.SigningMethodRS256, s.rotated.key}, nil)), codes.Unauthenticated, ReasonUnknownKey, `"nope-9" is unknown`, ""},
		{"alg none", write, bearer(sign(t, signer{"", jwt.SigningMethodNone, nil}, nil)), codes.Unauthenticated, ReasonInvalidToken, `"none" is not accepted`, ""},
		{"algorithm confusion", write, bearer(confused), codes.Unauthenticated, ReasonInvalidToken, `"HS256" is not accepted`, ""},
		{"foreign algorithm for the issuer", write, bearer(sign(t, s.es, claims{"iss": rsaOnlyIssuer})), codes.Unauthenticated, ReasonInvalidToken, `"ES256" is not accepted`, ""},
		{"public-key token for the HS256 issuer", write, bearer(sign(t, s.rs, claims{"iss": hmacIssuer})), codes.Unauthenticated, ReasonInvalidToken, `"RS256" is not accepted`, ""},
		{"no consumer claim", write, bearer(sign(t, s.rs, claims{"sub": nil})), codes.Unauthenticated, ReasonInvalidToken, `no "sub" claim`, ""},
		{"bad token on a public method", public, bearer(sign(t, s.rs, claims{"exp": now.Add(-time.Minute).Unix()})), codes.Unauthenticated, ReasonExpired, "expired", ""},
		{"valid token missing scope", write, bearer(sign(t, s.rs, claims{"scope": "orders"})), codes.PermissionDenied, ReasonInsufficientScope, `missing scope "catalog.write"`, ""},

		{"valid API key", write, keyHeader(testKey), codes.OK, "", "", "shop"},
		{"API key without the scope", write, keyHeader(readOnlyKey), codes.PermissionDenied, ReasonInsufficientScope, `missing scope "catalog.write"`, ""},
		{"unknown API key", write, keyHeader("pk_not-a-real-key"), codes.Unauthenticated, ReasonInvalidAPIKey, "API key is not valid", ""},
		{"bad API key on a public method", public, keyHeader("pk_not-a-real-key"), codes.Unauthenticated, ReasonInvalidAPIKey, "API key is not valid", ""},
		{"two API keys", write, metadata.Pairs(APIKeyHeader, testKey, APIKeyHeader, testKey), codes.Unauthenticated, ReasonMalformed, "exactly one", ""},
		{"a bad token wins over a good API key", write, metadata.Join(bearer(sign(t, s.forger, nil)), keyHeader(testKey)), codes.Unauthenticated, ReasonInvalidToken, "signature is invalid", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			unary := callUnary(t, p, tc.pol, tc.md)
			stream := callStream(t, p, tc.pol, tc.md)
			for door, got := range map[string]outcome{"unary": unary, "stream": stream} {
				if got.code != tc.code || got.reason != tc.reason || !strings.Contains(got.message, tc.msg) {
					t.Errorf("%s: got %s %s %q, want %s %s containing %q", door, got.code, got.reason, got.message, tc.code, tc.reason, tc.msg)
				}
				checkOutcome(t, door, got, tc.code, tc.reason, tc.consumer, tc.md)
			}
			if unary.message != stream.message || unary.challenge != stream.challenge {
				t.Errorf("the doors differ: unary %q %q, stream %q %q", unary.message, unary.challenge, stream.message, stream.challenge)
			}
		})
	}
}

// checkOutcome checks what every case shares: who rejected, the challenge,
// the identity, and that no credential is echoed.
func checkOutcome(t *testing.T, door string, got outcome, code codes.Code, reason, consumer string, md metadata.MD) {
	t.Helper()
	if got.handled != (code == codes.OK) {
		t.Errorf("%s: handler ran = %v with code %s", door, got.handled, code)
	}
	if code != codes.OK && got.policy != PolicyName {
		t.Errorf("%s: ErrorInfo names policy %q, want %q", door, got.policy, PolicyName)
	}
	switch id := got.identity; {
	case consumer == "" && id != nil:
		t.Errorf("%s: identity %+v stored, want none", door, id)
	case consumer != "" && (id == nil || id.Consumer != consumer || !id.HasScope("catalog.write")):
		t.Errorf("%s: identity %+v, want consumer %q with scope catalog.write", door, id, consumer)
	}
	switch {
	case code == codes.OK && got.challenge != "":
		t.Errorf("%s: challenge %q on success", door, got.challenge)
	case code == codes.Unauthenticated && reason == ReasonMissing && got.challenge != realm:
		t.Errorf("%s: WWW-Authenticate = %q, want %q", door, got.challenge, realm)
	case code == codes.Unauthenticated && reason == ReasonMalformed && !strings.HasPrefix(got.challenge, realm+`, error="invalid_request"`):
		t.Errorf("%s: WWW-Authenticate = %q, want invalid_request", door, got.challenge)
	case code == codes.Unauthenticated && reason != ReasonMissing && reason != ReasonMalformed && !strings.HasPrefix(got.challenge, realm+`, error="invalid_token"`):
		t.Errorf("%s: WWW-Authenticate = %q, want invalid_token", door, got.challenge)
	case code == codes.PermissionDenied && got.challenge != realm+`, error="insufficient_scope", scope="catalog.write"`:
		t.Errorf("%s: 403 challenge = %q", door, got.challenge)
	}
	for _, cred := range append(md.Get(authorizationKey), md.Get(APIKeyHeader)...) {
		cred = strings.TrimPrefix(cred, "Bearer ")
		if len(cred) > 12 && strings.Contains(got.message+got.challenge, cred) {
			t.Errorf("%s: a credential is echoed back: %q %q", door, got.message, got.challenge)
		}
	}
}

func TestJWKSRotation(t *testing.T) {
	s := keys()
	write := &policy.Policy{Access: policy.Authenticated, Scopes: []string{"catalog.write"}}

	t.Run("a new kid is fetched on its first token", func(t *testing.T) {
		jwks := testjwks.New(t)
		jwks.Publish(s.rs.kid, s.rs.key.Public())
		p := startPolicy(t, jwks.URL, nil)
		if n := jwks.Fetches(); n != 2 { // one per JWKS issuer, at Start
			t.Fatalf("%d fetches at start, want 2", n)
		}
		jwks.Publish(s.rotated.kid, s.rotated.key.Public())
		if got := callUnary(t, p, write, bearer(sign(t, s.rotated, nil))); got.code != codes.OK {
			t.Fatalf("first token of the rotated key: %s %s %q (%d fetches)", got.code, got.reason, got.message, jwks.Fetches())
		}
		if got := callStream(t, p, write, bearer(sign(t, s.rotated, nil))); got.code != codes.OK {
			t.Fatalf("second token of the rotated key: %s %s %q", got.code, got.reason, got.message)
		}
		if n := jwks.Fetches(); n != 3 {
			t.Errorf("%d fetches, want 3: one refetch for the new kid, then the cached key", n)
		}
	})

	t.Run("refetches on unknown kids are capped", func(t *testing.T) {
		jwks := testjwks.New(t)
		jwks.Publish(s.rs.kid, s.rs.key.Public())
		p := startPolicy(t, jwks.URL, func(c *Config) { c.JWT[0].UnknownKIDInterval = time.Hour })
		unknown := bearer(sign(t, signer{"nope-1", jwt.SigningMethodRS256, s.rotated.key}, nil))
		before := jwks.Fetches()
		if got := callUnary(t, p, write, unknown); got.code != codes.Unauthenticated || got.reason != ReasonUnknownKey {
			t.Fatalf("unknown kid: %s %s %q", got.code, got.reason, got.message)
		}
		if n := jwks.Fetches() - before; n != 1 {
			t.Fatalf("an unknown kid caused %d refetches, want 1", n)
		}
		// The budget is spent: a key published now is not fetched, and
		// the call fails at once instead of waiting an hour.
		jwks.Publish(s.rotated.kid, s.rotated.key.Public())
		start := time.Now()
		for range 3 {
			if got := callStream(t, p, write, bearer(sign(t, s.rotated, nil))); got.code != codes.Unauthenticated || got.reason != ReasonUnknownKey {
				t.Fatalf("kid published after the budget was spent: %s %s %q", got.code, got.reason, got.message)
			}
		}
		if n := jwks.Fetches() - before; n != 1 {
			t.Errorf("%d refetches, want 1: the cap let more through", n)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("refused calls took %v: they waited for the refetch budget", d)
		}
		// Known keys are unaffected.
		if got := callUnary(t, p, write, bearer(sign(t, s.rs, nil))); got.code != codes.OK {
			t.Errorf("known kid after the cap: %s %s %q", got.code, got.reason, got.message)
		}
	})

	t.Run("keys not loaded before Start", func(t *testing.T) {
		jwks := testjwks.New(t)
		jwks.Publish(s.rs.kid, s.rs.key.Public())
		p, err := New(Config{JWT: []IssuerConfig{{Issuer: jwksIssuer, Audiences: []string{audience}, JWKSURL: jwks.URL}}})
		if err != nil {
			t.Fatal(err)
		}
		got := callUnary(t, p, write, bearer(sign(t, s.rs, nil)))
		if got.code != codes.Unauthenticated || got.reason != ReasonUnknownKey || !strings.Contains(got.message, "not loaded yet") {
			t.Errorf("before Start: %s %s %q", got.code, got.reason, got.message)
		}
		if n := jwks.Fetches(); n != 0 {
			t.Errorf("New fetched the JWKS %d times: it must do no I/O", n)
		}
	})

	t.Run("JWKS down at start", func(t *testing.T) {
		down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}))
		t.Cleanup(down.Close)
		// Start does not fail: a JWKS that is down must not stop the gateway.
		p := startPolicy(t, down.URL, nil)
		got := callUnary(t, p, write, bearer(sign(t, s.rs, nil)))
		if got.code != codes.Unauthenticated || got.reason != ReasonUnknownKey {
			t.Errorf("token while the JWKS is down: %s %s %q", got.code, got.reason, got.message)
		}
		// The HS256 issuer and API keys still work.
		if got := callUnary(t, p, write, bearer(hmacSign(t, []byte(hmacSecret), nil))); got.code != codes.OK {
			t.Errorf("HS256 while the JWKS is down: %s %s %q", got.code, got.reason, got.message)
		}
	})
}

func TestCriticalHeaderExtensions(t *testing.T) {
	s := keys()
	jwks := testjwks.New(t)
	jwks.Publish(s.rs.kid, s.rs.key.Public())
	p := startPolicy(t, jwks.URL, nil)
	write := &policy.Policy{Access: policy.Authenticated, Scopes: []string{"catalog.write"}}
	for _, tc := range []struct {
		name   string
		signer signer
		header map[string]any
		msg    string
	}{
		{"b64 marked critical", s.rs, map[string]any{"crit": []string{"b64"}, "b64": false}, `"crit": "b64"`},
		{"an extension we have never heard of", s.rs, map[string]any{"crit": []string{"exp-2", "x-mine"}, "exp-2": 1}, `"crit": "exp-2,x-mine"`},
		{"an empty list", s.rs, map[string]any{"crit": []string{}}, `critical ("crit")`},
		{"not a list", s.rs, map[string]any{"crit": "b64"}, `critical ("crit")`},
		{"null", s.rs, map[string]any{"crit": nil}, `critical ("crit")`},
		// Refused before the key lookup: an unknown kid refetches nothing.
		{"with an unknown kid", signer{"nope-crit", jwt.SigningMethodRS256, s.rotated.key}, map[string]any{"crit": []string{"b64"}}, `"crit": "b64"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := jwks.Fetches()
			md := bearer(signWithHeader(t, tc.signer, tc.header, nil))
			for door, got := range map[string]outcome{"unary": callUnary(t, p, write, md), "stream": callStream(t, p, write, md)} {
				if got.code != codes.Unauthenticated || got.reason != ReasonInvalidToken || !strings.Contains(got.message, tc.msg) ||
					!strings.Contains(got.message, "the gateway supports none") {
					t.Errorf("%s: %s %s %q, want UNAUTHENTICATED %s naming %s", door, got.code, got.reason, got.message, ReasonInvalidToken, tc.msg)
				}
				checkOutcome(t, door, got, codes.Unauthenticated, ReasonInvalidToken, "", md)
			}
			if n := jwks.Fetches() - before; n != 0 {
				t.Errorf("a token with crit caused %d JWKS fetches", n)
			}
		})
	}
	// The same token without crit passes: the refusal is crit's alone.
	if got := callUnary(t, p, write, bearer(signWithHeader(t, s.rs, map[string]any{"x-note": "hi"}, nil))); got.code != codes.OK {
		t.Errorf("token with an extra, non-critical header parameter: %s %s %q", got.code, got.reason, got.message)
	}
}

func TestMaxTokenLifetime(t *testing.T) {
	s := keys()
	jwks := testjwks.New(t)
	jwks.Publish(s.rs.kid, s.rs.key.Public())
	p := startPolicy(t, jwks.URL, func(c *Config) {
		c.JWT[0].MaxTokenLifetime = time.Hour // jwksIssuer; rsaOnlyIssuer has none
	})
	write := &policy.Policy{Access: policy.Authenticated, Scopes: []string{"catalog.write"}}
	now := time.Now()
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	for _, tc := range []struct {
		name string
		c    claims
		msg  string // "" for success
	}{
		{"within the maximum", claims{"iat": at(0), "exp": at(30 * time.Minute)}, ""},
		{"exactly the maximum", claims{"iat": at(0), "exp": at(time.Hour)}, ""},
		{"a second too long", claims{"iat": at(0), "exp": at(time.Hour + time.Second)},
			"token lifetime (exp - iat) of 1h0m1s exceeds this issuer's maximum of 1h0m0s"},
		{"a day", claims{"iat": at(0), "exp": at(24 * time.Hour)}, "lifetime (exp - iat) of 24h0m0s exceeds"},
		// Issued long ago and nearly expired: still a token minted to live
		// too long.
		{"old and nearly expired", claims{"iat": at(-3 * time.Hour), "exp": at(10 * time.Minute)}, "lifetime (exp - iat) of 3h10m0s exceeds"},
		{"no iat, expiring within the maximum", claims{"iat": nil, "exp": at(50 * time.Minute)}, ""},
		{"no iat, expiring beyond it", claims{"iat": nil, "exp": at(2 * time.Hour)},
			"beyond this issuer's maximum lifetime of 1h0m0s"}, // "token has no iat and expires in 2h0m0s, ..."
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := bearer(sign(t, s.rs, tc.c))
			for door, got := range map[string]outcome{"unary": callUnary(t, p, write, md), "stream": callStream(t, p, write, md)} {
				if tc.msg == "" {
					if got.code != codes.OK {
						t.Errorf("%s: %s %s %q, want OK", door, got.code, got.reason, got.message)
					}
					continue
				}
				if got.code != codes.Unauthenticated || got.reason != ReasonInvalidToken || !strings.Contains(got.message, tc.msg) {
					t.Errorf("%s: %s %s %q, want UNAUTHENTICATED %s containing %q", door, got.code, got.reason, got.message, ReasonInvalidToken, tc.msg)
				}
				checkOutcome(t, door, got, codes.Unauthenticated, ReasonInvalidToken, "", md)
			}
		})
	}
	t.Run("default: no maximum", func(t *testing.T) {
		md := bearer(sign(t, s.rs, claims{"iss": rsaOnlyIssuer, "iat": at(0), "exp": at(365 * 24 * time.Hour)}))
		if got := callUnary(t, p, write, md); got.code != codes.OK {
			t.Errorf("a year-long token of an issuer without a maximum: %s %s %q", got.code, got.reason, got.message)
		}
	})
	t.Run("an expired token is told it expired, not that it lived too long", func(t *testing.T) {
		md := bearer(sign(t, s.rs, claims{"iat": at(-48 * time.Hour), "exp": at(-time.Hour)}))
		if got := callUnary(t, p, write, md); got.reason != ReasonExpired {
			t.Errorf("expired long-lived token: %s %s %q", got.code, got.reason, got.message)
		}
	})
	t.Run("a negative maximum is refused", func(t *testing.T) {
		_, err := New(Config{JWT: []IssuerConfig{{Issuer: hmacIssuer, Audiences: []string{audience}, HS256Secret: hmacSecret, MaxTokenLifetime: -time.Hour}}})
		if err == nil || !strings.Contains(err.Error(), "max_token_lifetime") {
			t.Errorf("New: %v", err)
		}
	})
}
