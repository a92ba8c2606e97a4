package gateway_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testjwks"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	testIssuer   = "https://issuer.test"
	hmacIssuer   = "https://hmac.test"
	testAudience = "portico"
	hmacSecret   = "0123456789abcdef0123456789abcdef-shared"
)

// signer mints tokens.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func newSigners(t *testing.T) map[string]signer {
	t.Helper()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	return map[string]signer{
		"RS256":   {"rsa-1", jwt.SigningMethodRS256, rsaKey},
		"ES256":   {"ec-1", jwt.SigningMethodES256, ecKey},
		"EdDSA":   {"ed-1", jwt.SigningMethodEdDSA, edKey},
		"forger":  {"rsa-1", jwt.SigningMethodRS256, otherRSA}, // same kid, wrong key
		"rotated": {"rsa-2", jwt.SigningMethodRS256, otherRSA}, // published later
	}
}

type claims map[string]any

func token(t *testing.T, s signer, c claims) string {
	t.Helper()
	now := time.Now()
	base := jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "alice", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for k, v := range c {
		if v == nil {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	tok := jwt.NewWithClaims(s.method, base)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func hmacToken(t *testing.T, secret []byte, c claims) string {
	t.Helper()
	base := jwt.MapClaims{"iss": hmacIssuer, "aud": testAudience, "sub": "bob", "exp": time.Now().Add(time.Hour).Unix(), "scope": "catalog.write"}
	for k, v := range c {
		base[k] = v
	}
	raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, base).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// outcome is what a client sees, reduced to what both transports share.
type outcome struct {
	code    codes.Code
	reason  string
	message string
	fields  []string // BadRequest field paths
	header  string   // WWW-Authenticate
}

type request struct {
	method  string // gRPC method name of catalog or orders
	headers map[string]string
	body    proto.Message
}

var restRoutes = map[string]struct{ verb, path string }{
	"GetProduct":    {"GET", "/v1/products/prd-000001"},
	"ListProducts":  {"GET", "/v1/products"},
	"CreateProduct": {"POST", "/v1/products"},
	"CreateOrder":   {"POST", "/v1/orders"},
	"ListOrders":    {"GET", "/v1/orders"},
}

// callREST sends the request over REST. The body is the proto message in
// JSON; for CreateProduct only its product field, as the route says.
func callREST(t *testing.T, w *world, req request) (outcome, []byte) {
	t.Helper()
	route := restRoutes[req.method]
	var body string
	if req.body != nil {
		m := req.body
		if cp, ok := m.(*catalogv1.CreateProductRequest); ok {
			m = cp.GetProduct()
		}
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
	}
	hr, _ := http.NewRequest(route.verb, w.base+route.path, strings.NewReader(body))
	for k, v := range req.headers {
		hr.Header.Set(k, v)
	}
	resp, err := httpClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	out := outcome{code: codes.OK, header: resp.Header.Get("WWW-Authenticate")}
	if resp.StatusCode != 200 {
		var st struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Type            string `json:"@type"`
				Reason          string `json:"reason"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("REST error body is not a Status: %s", raw)
		}
		out.code, out.message = codes.Code(st.Code), st.Message
		if want := runtime.HTTPStatusFromCode(out.code); resp.StatusCode != want {
			t.Errorf("HTTP status %d for %s, want %d", resp.StatusCode, out.code, want)
		}
		for _, d := range st.Details {
			if strings.HasSuffix(d.Type, "ErrorInfo") {
				out.reason = d.Reason
			}
			for _, f := range d.FieldViolations {
				out.fields = append(out.fields, f.Field)
			}
		}
	}
	return out, raw
}

func callGRPC(t *testing.T, w *world, req request) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k, v := range req.headers {
		ctx = metadata.AppendToOutgoingContext(ctx, strings.ToLower(k), v)
	}
	var header, trailer metadata.MD
	opts := []grpc.CallOption{grpc.Header(&header), grpc.Trailer(&trailer)}
	var err error
	switch req.method {
	case "GetProduct":
		_, err = catalogv1.NewCatalogServiceClient(w.conn).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, opts...)
	case "ListProducts":
		_, err = catalogv1.NewCatalogServiceClient(w.conn).ListProducts(ctx, &catalogv1.ListProductsRequest{}, opts...)
	case "CreateProduct":
		// The REST call of the same case created this SKU already.
		in := proto.Clone(req.body).(*catalogv1.CreateProductRequest)
		if in.GetProduct().GetSku() != "" {
			in.Product.Sku += "-G"
		}
		_, err = catalogv1.NewCatalogServiceClient(w.conn).CreateProduct(ctx, in, opts...)
	case "CreateOrder":
		_, err = ordersv1.NewOrderServiceClient(w.conn).CreateOrder(ctx, req.body.(*ordersv1.CreateOrderRequest), opts...)
	case "ListOrders":
		_, err = ordersv1.NewOrderServiceClient(w.conn).ListOrders(ctx, &ordersv1.ListOrdersRequest{}, opts...)
	}
	st := status.Convert(err)
	out := outcome{code: st.Code(), message: st.Message()}
	if err == nil {
		out.message = ""
	}
	if v := append(header.Get("www-authenticate"), trailer.Get("www-authenticate")...); len(v) > 0 {
		out.header = v[0]
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			out.reason = d.GetReason()
		case *errdetails.BadRequest:
			for _, f := range d.GetFieldViolations() {
				out.fields = append(out.fields, f.GetField())
			}
		}
	}
	return out
}

// policyWorld is a gateway with a JWKS issuer, an HS256 issuer, an API key in
// the config file and API keys in Consul KV.
func policyWorld(t *testing.T) (*world, *testjwks.Server, map[string]signer, string) {
	t.Helper()
	jwks := testjwks.New(t)
	signers := newSigners(t)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		jwks.Publish(signers[alg].kid, signers[alg].key.Public())
	}
	kvPrefix := "portico/apikeys/" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "/"
	w := newWorld(t, false, func(c *gateway.Config) {
		// These tests are about auth and validation: lift CreateProduct's
		// declared 10 a minute, which the cases of one consumer would reach.
		sc := c.Services["catalog.v1.CatalogService"]
		sc.Methods = map[string]gateway.MethodConfig{"CreateProduct": {PolicyConfig: gateway.PolicyConfig{
			RateLimit: &policy.RateLimit{Requests: 1000, Period: time.Second, Burst: 1000}}},
			// One call an hour: the rate-limit case's calls are all refused.
			"ListProducts": {PolicyConfig: gateway.PolicyConfig{RateLimit: &policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}}}}
		c.Services["catalog.v1.CatalogService"] = sc
		c.Auth.Leeway = time.Second
		// The cases send many bad credentials from loopback: the budget of
		// failed authentications has its own attack test.
		c.Auth.FailureLimit = &policy.RateLimit{}
		c.Auth.APIKeysConsulPrefix = kvPrefix
		c.Auth.JWT = []auth.IssuerConfig{
			{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: jwks.URL, UnknownKIDInterval: 20 * time.Millisecond},
			{Issuer: hmacIssuer, Audiences: []string{testAudience}, HS256Secret: hmacSecret},
		}
	})
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))
	return w.anon(), jwks, signers, kvPrefix
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func validProduct(sku string) *catalogv1.CreateProductRequest {
	return &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: sku, Name: "Kettle", Price: 100, Currency: "EUR", Stock: 1}}
}

// TestPoliciesSameOnBothTransports runs every auth, validation and rate
// limit case over REST, native gRPC, gRPC-Web and Connect (binary and JSON)
// and requires the same outcome from all.
func TestPoliciesSameOnBothTransports(t *testing.T) {
	w, jwks, s, kvPrefix := policyWorld(t)
	write := claims{"scope": "catalog.write orders"}
	kvKey, kvHash, _ := auth.NewAPIKey()
	kvValue, _ := auth.KVValue("kv-consumer", []string{"catalog.write"})
	if _, err := w.consul.KV().Put(kvKeyPair(kvPrefix+kvHash, kvValue), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the KV API key to load", func() bool {
		return callGRPC(t, w, request{method: "ListOrders", headers: map[string]string{"X-Api-Key": kvKey}}).code == codes.OK
	})

	noneTok := func() string {
		raw, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "eve", "exp": time.Now().Add(time.Hour).Unix()}).
			SignedString(jwt.UnsafeAllowNoneSignatureType)
		return raw
	}()
	// Algorithm confusion: HS256 signed with the RSA public key as secret.
	pubDER, _ := x509.MarshalPKIXPublicKey(s["RS256"].key.Public())
	confused := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "eve", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = "rsa-1"
		raw, _ := tok.SignedString(pubDER)
		return raw
	}()

	cases := []struct {
		name   string
		req    request
		code   codes.Code
		reason string
		msg    string   // part of the message
		fields []string // violated fields, for validation
	}{
		{"public read without credentials", request{method: "GetProduct"}, codes.OK, "", "", nil},
		{"no credentials", request{method: "CreateProduct", body: validProduct("NC-1")}, codes.Unauthenticated, auth.ReasonMissing, "credentials required", nil},
		{"not a bearer scheme", request{method: "CreateProduct", body: validProduct("NC-2"), headers: map[string]string{"Authorization": "Basic YWxpY2U6cHc="}}, codes.Unauthenticated, auth.ReasonMalformed, "Bearer", nil},
		{"RS256 with scope", request{method: "CreateProduct", body: validProduct("RS-1"), headers: bearer(token(t, s["RS256"], write))}, codes.OK, "", "", nil},
		{"ES256 with scope", request{method: "CreateProduct", body: validProduct("ES-1"), headers: bearer(token(t, s["ES256"], write))}, codes.OK, "", "", nil},
		{"EdDSA with scope", request{method: "CreateProduct", body: validProduct("ED-1"), headers: bearer(token(t, s["EdDSA"], write))}, codes.OK, "", "", nil},
		{"HS256 from the shared-secret issuer", request{method: "CreateProduct", body: validProduct("HS-1"), headers: bearer(hmacToken(t, []byte(hmacSecret), nil))}, codes.OK, "", "", nil},
		{"bad signature", request{method: "CreateProduct", body: validProduct("BS-1"), headers: bearer(token(t, s["forger"], write))}, codes.Unauthenticated, auth.ReasonInvalidToken, "signature is invalid", nil},
		{"HS256 with the wrong secret", request{method: "CreateProduct", body: validProduct("HS-2"), headers: bearer(hmacToken(t, []byte("another-secret-another-secret-xx"), nil))}, codes.Unauthenticated, auth.ReasonInvalidToken, "signature is invalid", nil},
		{"expired", request{method: "CreateProduct", body: validProduct("EX-1"), headers: bearer(token(t, s["RS256"], claims{"exp": time.Now().Add(-time.Minute).Unix(), "scope": "catalog.write"}))}, codes.Unauthenticated, auth.ReasonExpired, "expired", nil},
		{"not valid yet", request{method: "CreateProduct", body: validProduct("NB-1"), headers: bearer(token(t, s["RS256"], claims{"nbf": time.Now().Add(time.Hour).Unix(), "scope": "catalog.write"}))}, codes.Unauthenticated, auth.ReasonInvalidToken, "not valid yet", nil},
		{"wrong audience", request{method: "CreateProduct", body: validProduct("AU-1"), headers: bearer(token(t, s["RS256"], claims{"aud": "billing", "scope": "catalog.write"}))}, codes.Unauthenticated, auth.ReasonWrongAudience, "audience", nil},
		{"untrusted issuer", request{method: "CreateProduct", body: validProduct("IS-1"), headers: bearer(token(t, s["RS256"], claims{"iss": "https://evil.test"}))}, codes.Unauthenticated, auth.ReasonInvalidToken, "issuer is not trusted", nil},
		{"unknown kid", request{method: "CreateProduct", body: validProduct("KI-1"), headers: bearer(token(t, signer{"nope-9", jwt.SigningMethodRS256, s["rotated"].key}, write))}, codes.Unauthenticated, auth.ReasonUnknownKey, `"nope-9" is unknown`, nil},
		{"alg none", request{method: "CreateProduct", body: validProduct("AN-1"), headers: bearer(noneTok)}, codes.Unauthenticated, auth.ReasonInvalidToken, `"none" is not accepted`, nil},
		{"algorithm confusion", request{method: "CreateProduct", body: validProduct("AC-1"), headers: bearer(confused)}, codes.Unauthenticated, auth.ReasonInvalidToken, `"HS256" is not accepted`, nil},
		{"valid token missing scope", request{method: "CreateProduct", body: validProduct("SC-1"), headers: bearer(token(t, s["RS256"], claims{"scope": "orders"}))}, codes.PermissionDenied, auth.ReasonInsufficientScope, `missing scope "catalog.write"`, nil},
		{"scp claim as a list", request{method: "CreateProduct", body: validProduct("SC-2"), headers: bearer(token(t, s["RS256"], claims{"scp": []string{"catalog.write"}}))}, codes.OK, "", "", nil},
		{"valid API key", request{method: "CreateProduct", body: validProduct("AK-1"), headers: map[string]string{"X-Api-Key": testAPIKey}}, codes.OK, "", "", nil},
		{"API key from consul", request{method: "CreateProduct", body: validProduct("AK-2"), headers: map[string]string{"X-Api-Key": kvKey}}, codes.OK, "", "", nil},
		{"unknown API key", request{method: "CreateProduct", body: validProduct("AK-3"), headers: map[string]string{"X-Api-Key": "pk_not-a-real-key"}}, codes.Unauthenticated, auth.ReasonInvalidAPIKey, "API key is not valid", nil},
		{"bad credentials on a public method", request{method: "GetProduct", headers: map[string]string{"X-Api-Key": "pk_not-a-real-key"}}, codes.Unauthenticated, auth.ReasonInvalidAPIKey, "API key is not valid", nil},
		{"orders need a caller", request{method: "ListOrders"}, codes.Unauthenticated, auth.ReasonMissing, "credentials required", nil},
		{"invalid body from an anonymous caller is 401, not 400", request{method: "CreateProduct", body: &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "bad"}}}, codes.Unauthenticated, auth.ReasonMissing, "", nil},
		{"pattern and range violations", request{method: "CreateProduct", headers: map[string]string{"X-Api-Key": testAPIKey},
			body: &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "lower", Name: "n", Currency: "euro", Price: -5, Stock: -1}}},
			codes.InvalidArgument, "INVALID_REQUEST", "product.sku", []string{"product.sku", "product.currency", "product.price", "product.stock"}},
		{"message rule (required name)", request{method: "CreateProduct", headers: map[string]string{"X-Api-Key": testAPIKey},
			body: &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "OK-9", Currency: "EUR"}}},
			codes.InvalidArgument, "INVALID_REQUEST", "product.name is required", []string{""}},
		{"repeated min items", request{method: "CreateOrder", headers: map[string]string{"X-Api-Key": testAPIKey}, body: &ordersv1.CreateOrderRequest{}},
			codes.InvalidArgument, "INVALID_REQUEST", "items", []string{"items"}},
		{"nested range and CEL uniqueness", request{method: "CreateOrder", headers: map[string]string{"X-Api-Key": testAPIKey}, body: &ordersv1.CreateOrderRequest{
			Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 5000}, {ProductId: "prd-000001", Quantity: 1}}}},
			codes.InvalidArgument, "INVALID_REQUEST", "each product may appear only once", []string{"items[0].quantity", "items"}},
		{"rate limited", request{method: "ListProducts"}, codes.ResourceExhausted, ratelimit.Reason, "rate limit", nil},
	}
	// The rate-limit case's one call an hour goes here.
	if got := callGRPC(t, w, request{method: "ListProducts"}); got.code != codes.OK {
		t.Fatalf("first ListProducts: %+v", got)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rest, raw := callREST(t, w, tc.req)
			grpcOut := callGRPC(t, w, tc.req)
			// gRPC-Web and Connect on the REST port, transcoded into the
			// same chain.
			outcomes := map[string]outcome{"rest": rest, "grpc": grpcOut}
			for _, p := range []string{"grpc-web", "connect", "connect-json"} {
				outcomes[p] = callWeb(t, w, p, tc.req)
			}
			for transport, got := range outcomes {
				if got.code != tc.code || got.reason != tc.reason || !strings.Contains(got.message, tc.msg) {
					t.Errorf("%s: got %s %s %q, want %s %s containing %q (body %s)", transport, got.code, got.reason, got.message, tc.code, tc.reason, tc.msg, raw)
				}
				for _, f := range tc.fields {
					if !contains(got.fields, f) {
						t.Errorf("%s: violations %q lack field %q", transport, got.fields, f)
					}
				}
				if tc.code == codes.Unauthenticated && !strings.HasPrefix(got.header, `Bearer realm="portico"`) {
					t.Errorf("%s: WWW-Authenticate = %q", transport, got.header)
				}
				wantErr := `error="invalid_token"`
				if tc.reason == auth.ReasonMalformed {
					wantErr = `error="invalid_request"`
				}
				if tc.reason != "" && tc.reason != auth.ReasonMissing && tc.code == codes.Unauthenticated && !strings.Contains(got.header, wantErr) {
					t.Errorf("%s: WWW-Authenticate %q lacks %s", transport, got.header, wantErr)
				}
				if tc.code == codes.PermissionDenied && !strings.Contains(got.header, `error="insufficient_scope", scope="catalog.write"`) {
					t.Errorf("%s: 403 challenge = %q", transport, got.header)
				}
				if tv := tc.req.headers["Authorization"]; tv != "" && strings.Contains(got.message+got.header, strings.TrimPrefix(tv, "Bearer ")) {
					t.Errorf("%s: the token is echoed back", transport)
				}
				if k := tc.req.headers["X-Api-Key"]; k != "" && strings.Contains(got.message+got.header, k) {
					t.Errorf("%s: the API key is echoed back", transport)
				}
			}
			for transport, got := range outcomes {
				if got.message != grpcOut.message {
					t.Errorf("messages differ: %s %q, grpc %q", transport, got.message, grpcOut.message)
				}
			}
		})
	}

	t.Run("key rotated in JWKS", func(t *testing.T) {
		req := request{method: "CreateProduct", body: validProduct("RO-1"), headers: bearer(token(t, s["rotated"], write))}
		if got := callGRPC(t, w, req); got.reason != auth.ReasonUnknownKey {
			t.Fatalf("before rotation: %+v", got)
		}
		jwks.Publish(s["rotated"].kid, s["rotated"].key.Public())
		// The refetch on an unknown kid is capped at one per 20ms here.
		waitFor(t, "the rotated key to be fetched", func() bool { return callGRPC(t, w, req).code == codes.OK })
		req.body = validProduct("RO-2")
		if got, _ := callREST(t, w, req); got.code != codes.OK {
			t.Errorf("rest after rotation: %+v", got)
		}
	})

	t.Run("key revoked through consul KV", func(t *testing.T) {
		if _, err := w.consul.KV().Delete(kvPrefix+kvHash, nil); err != nil {
			t.Fatal(err)
		}
		req := request{method: "ListOrders", headers: map[string]string{"X-Api-Key": kvKey}}
		waitFor(t, "the revocation to apply", func() bool { return callGRPC(t, w, req).code == codes.Unauthenticated })
		if got, _ := callREST(t, w, req); got.code != codes.Unauthenticated || got.reason != auth.ReasonInvalidAPIKey {
			t.Errorf("rest after revocation: %+v", got)
		}
	})
}

// A client cannot forge the identity the gateway forwards; the backend sees
// the verified consumer only, and orders stay private to their consumer.
func TestForgedIdentityHeadersAreDropped(t *testing.T) {
	w, _, s, _ := policyWorld(t)
	forged := map[string]string{
		"X-Api-Key": testAPIKey, "X-Portico-Consumer": "mallory", "X-Portico-Subject": "mallory", "X-Portico-Scopes": "admin",
	}
	body := &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}}

	// gRPC.
	ctx := context.Background()
	for k, v := range forged {
		ctx = metadata.AppendToOutgoingContext(ctx, strings.ToLower(k), v)
	}
	o, err := ordersv1.NewOrderServiceClient(w.conn).CreateOrder(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.GetOrder().GetConsumer(); got != testConsumer {
		t.Errorf("grpc: backend saw consumer %q, want %q", got, testConsumer)
	}
	// REST.
	hr, _ := http.NewRequest("POST", w.base+"/v1/orders", strings.NewReader(`{"items":[{"productId":"prd-000001","quantity":1}]}`))
	for k, v := range forged {
		hr.Header.Set(k, v)
	}
	resp, err := httpClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Order struct{ ID, Consumer string } `json:"order"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Order.Consumer != testConsumer {
		t.Errorf("rest: backend saw consumer %q, want %q", got.Order.Consumer, testConsumer)
	}
	// gRPC-Web and Connect, whose headers become gRPC metadata.
	for protocol, opts := range webProtocols {
		resp, err := webClient[ordersv1.CreateOrderRequest, ordersv1.CreateOrderResponse](w, "/orders.v1.OrderService/CreateOrder", opts).
			CallUnary(context.Background(), webRequest(body, forged))
		if err != nil {
			t.Errorf("%s: %v", protocol, err)
		} else if c := resp.Msg.GetOrder().GetConsumer(); c != testConsumer {
			t.Errorf("%s: backend saw consumer %q, want %q", protocol, c, testConsumer)
		}
	}

	// Anonymous with a forged consumer: still anonymous, so refused.
	anonForged := request{method: "ListOrders", headers: map[string]string{"X-Portico-Consumer": testConsumer}}
	if out := callGRPC(t, w, anonForged); out.code != codes.Unauthenticated {
		t.Errorf("grpc: forged consumer without credentials: %+v", out)
	}
	if out, _ := callREST(t, w, anonForged); out.code != codes.Unauthenticated {
		t.Errorf("rest: forged consumer without credentials: %+v", out)
	}

	// Alice (JWT) does not see tester's orders.
	alice := bearer(token(t, s["RS256"], claims{"sub": "alice"}))
	actx := metadata.AppendToOutgoingContext(context.Background(), "authorization", alice["Authorization"])
	list, err := ordersv1.NewOrderServiceClient(w.conn).ListOrders(actx, &ordersv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 0 {
		t.Errorf("alice lists %d orders (%v), want none of tester's", len(list.GetOrders()), err)
	}
	if _, err := ordersv1.NewOrderServiceClient(w.conn).GetOrder(actx, &ordersv1.GetOrderRequest{Id: got.Order.ID}); status.Code(err) != codes.NotFound {
		t.Errorf("alice reads tester's order: %v, want NotFound", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// waitFor polls cond for at most ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, cond)
}

func kvKeyPair(key, value string) *api.KVPair { return &api.KVPair{Key: key, Value: []byte(value)} }

// recordingCatalog remembers the metadata of the last GetProduct.
type recordingCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	mu   sync.Mutex
	last metadata.MD
}

func (r *recordingCatalog) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.last = md.Copy()
	r.mu.Unlock()
	return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: req.GetId()}}, nil
}

// The backend gets the verified identity and never the credentials the
// gateway consumed, nor identity headers a client made up; identities
// metadata cannot carry as such arrive percent-encoded instead of failing.
func TestBackendSeesIdentityNotCredentials(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		c.Auth.JWT = []auth.IssuerConfig{{Issuer: hmacIssuer, Audiences: []string{testAudience}, HS256Secret: hmacSecret}}
	})
	rec := &recordingCatalog{}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, rec) })
	anon := w.anon()
	check := func(transport string, wantConsumer string) {
		t.Helper()
		rec.mu.Lock()
		md := rec.last
		rec.mu.Unlock()
		for _, k := range []string{"authorization", "x-api-key", "grpcgateway-authorization"} {
			if v := md.Get(k); len(v) > 0 {
				t.Errorf("%s: backend received credential %s", transport, k)
			}
		}
		if got := md.Get("x-portico-consumer"); len(got) != 1 || got[0] != wantConsumer {
			t.Errorf("%s: x-portico-consumer = %v, want %q", transport, got, wantConsumer)
		}
		if got := md.Get("x-portico-scopes"); len(got) != 1 || strings.Contains(got[0], "admin") {
			t.Errorf("%s: x-portico-scopes = %v: a forged scope got through", transport, got)
		}
	}
	headers := map[string]string{"X-Api-Key": testAPIKey, "X-Portico-Consumer": "mallory", "X-Portico-Scopes": "admin"}
	if out, raw := callREST(t, anon, request{method: "GetProduct", headers: headers}); out.code != codes.OK {
		t.Fatalf("rest: %+v %s", out, raw)
	}
	check("rest", testConsumer)
	if out := callGRPC(t, anon, request{method: "GetProduct", headers: headers}); out.code != codes.OK {
		t.Fatalf("grpc: %+v", out)
	}
	check("grpc", testConsumer)

	jose := map[string]string{"Authorization": "Bearer " + hmacToken(t, []byte(hmacSecret), claims{"sub": "josé"})}
	if out, raw := callREST(t, anon, request{method: "GetProduct", headers: jose}); out.code != codes.OK {
		t.Fatalf("rest, non-ASCII subject: %+v %s", out, raw)
	}
	check("rest", hmacIssuer+"#jos%C3%A9")
	if out := callGRPC(t, anon, request{method: "GetProduct", headers: jose}); out.code != codes.OK {
		t.Fatalf("grpc, non-ASCII subject: %+v", out)
	}
	check("grpc", hmacIssuer+"#jos%C3%A9")
}

// An invalid request to a server stream fails with its own error on both
// doors, before any backend is called.
func TestInvalidStreamRequest(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))
	long := strings.Repeat("x", 65)

	stream, err := w.ordersClient().WatchOrder(context.Background(), &ordersv1.WatchOrderRequest{Id: long})
	if err == nil {
		_, err = stream.Recv()
	}
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("grpc: %v, want INVALID_ARGUMENT", err)
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, f := range br.GetFieldViolations() {
				fields = append(fields, f.GetField())
			}
		}
	}
	if !contains(fields, "id") {
		t.Errorf("grpc: violations %v lack id", fields)
	}

	r := w.rest("GET", "/v1/orders/"+long+":watch", nil)
	if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Raw), "BadRequest") || !strings.Contains(string(r.Raw), `"id"`) {
		t.Errorf("rest: %d %s, want 400 with the id violation", r.Status, r.Raw)
	}
}
