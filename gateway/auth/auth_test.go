package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestParseBearer(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		ok   bool
	}{
		{[]string{"Bearer abc.def.ghi"}, "abc.def.ghi", true},
		{[]string{"bearer  abc"}, "abc", true},
		{[]string{"BEARER a-b_c~d+e/f="}, "a-b_c~d+e/f=", true},
		{[]string{"Basic abc"}, "", false},
		{[]string{"Bearer"}, "", false},
		{[]string{"Bearer "}, "", false},
		{[]string{"Bearer a b"}, "", false},
		{[]string{"Bearer a\"b"}, "", false},
		{[]string{"Bearer a", "Bearer b"}, "", false},
		{nil, "", false},
	} {
		got, f := ParseBearer(tc.in)
		if (f == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q ok=%v", tc.in, got, f, tc.want, tc.ok)
		}
	}
}

func TestConfigRefusesInsecureSetups(t *testing.T) {
	good := IssuerConfig{Issuer: "i", Audiences: []string{"a"}, JWKSURL: "http://127.0.0.1/jwks"}
	for name, cfg := range map[string]Config{
		"no audience":       {JWT: []IssuerConfig{{Issuer: "i", JWKSURL: "http://x"}}},
		"two key sources":   {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, JWKSURL: "http://x", HS256Secret: strings.Repeat("s", 32)}}},
		"no key source":     {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}}}},
		"HS256 on JWKS":     {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, JWKSURL: "http://x", Algorithms: []string{"HS256"}}}},
		"RS256 with secret": {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, HS256Secret: strings.Repeat("s", 32), Algorithms: []string{"RS256"}}}},
		"short secret":      {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, HS256Secret: "short"}}},
		"alg none":          {JWT: []IssuerConfig{{Issuer: "i", Audiences: []string{"a"}, JWKSURL: "http://x", Algorithms: []string{"none"}}}},
		"duplicate issuer":  {JWT: []IssuerConfig{good, good}},
		"bad key hash":      {APIKeys: []APIKeyConfig{{Consumer: "c", SHA256: "abc"}}},
		"key without owner": {APIKeys: []APIKeyConfig{{SHA256: HashAPIKey("k")}}},
		"same key twice":    {APIKeys: []APIKeyConfig{{Consumer: "a", SHA256: HashAPIKey("k")}, {Consumer: "b", SHA256: HashAPIKey("k")}}},
		"kv without consul": {APIKeysConsulPrefix: "portico/apikeys/"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	if _, err := New(Config{JWT: []IssuerConfig{good}}); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}

func TestScopesFromScopeOrScp(t *testing.T) {
	got := scopesOf(jwt.MapClaims{"scope": "b a", "scp": []any{"c", "a"}})
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("scopes = %v", got)
	}
	if got := scopesOf(jwt.MapClaims{"scp": "x y"}); strings.Join(got, ",") != "x,y" {
		t.Errorf("scp string = %v", got)
	}
}

func TestAPIKeysFromKV(t *testing.T) {
	key, hash, err := NewAPIKey()
	if err != nil || HashAPIKey(key) != hash || !strings.HasPrefix(key, "pk_") {
		t.Fatalf("NewAPIKey: %q %q %v", key, hash, err)
	}
	keys := newAPIKeys(nil)
	val, _ := KVValue("shop", []string{"orders"})
	keys.loadKV("p/", api.KVPairs{
		{Key: "p/"},                                       // the folder
		{Key: "p/not-hex", Value: []byte(val)},            // bad name: skipped
		{Key: "p/" + HashAPIKey("x"), Value: []byte("{")}, // bad value: skipped
		{Key: "p/" + hash, Value: []byte(val)},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	id, ok := keys.lookup(key)
	if !ok || id.Consumer != "shop" || !id.HasScope("orders") || id.Method != "api_key" {
		t.Fatalf("lookup = %+v %v", id, ok)
	}
	if _, ok := keys.lookup("x"); ok {
		t.Error("an entry with a bad value was loaded")
	}
	keys.loadKV("p/", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, ok := keys.lookup(key); ok {
		t.Error("a key deleted from KV still works")
	}
}

func TestAuthorizeWithoutRoute(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Without a policy.Call the policy cannot place the call: it refuses,
	// never lets it through unchecked.
	if err := p.Authorize(context.Background(), func(metadata.MD) error { return nil }); status.Code(err) != codes.Internal {
		t.Fatalf("no call facts: %v, want INTERNAL", err)
	}
	ctx := policy.NewContext(context.Background(), &policy.Call{Policy: &policy.Policy{Access: policy.Authenticated}})
	var challenge metadata.MD
	err = p.Authorize(ctx, func(md metadata.MD) error { challenge = md; return nil })
	if status.Code(err) != codes.Unauthenticated || challenge.Get("www-authenticate")[0] != `Bearer realm="portico"` {
		t.Errorf("err=%v challenge=%v", err, challenge)
	}
}

// A key is found by its SHA-256 however long it is, and finding one of the
// usual length (over the 32 bytes Go converts on the stack) allocates
// nothing.
func TestAPIKeyLookup(t *testing.T) {
	var cfg []APIKeyConfig
	var keys []string
	for _, n := range []int{0, 32, 41, 128, 129, 300} {
		k := strings.Repeat("k", n)
		keys = append(keys, k)
		sum := sha256.Sum256([]byte(k))
		cfg = append(cfg, APIKeyConfig{Consumer: fmt.Sprint("len", n), SHA256: hex.EncodeToString(sum[:])})
	}
	a := newAPIKeys(cfg)
	for i, k := range keys {
		if id, ok := a.lookup(k); !ok || id.Consumer != cfg[i].Consumer {
			t.Errorf("key of %d bytes: %v %v, want %s", len(k), id, ok, cfg[i].Consumer)
		}
	}
	if _, ok := a.lookup(keys[2] + "x"); ok {
		t.Error("a key that is not configured was found")
	}
	if n := testing.AllocsPerRun(100, func() { a.lookup(keys[2]) }); n != 0 {
		t.Errorf("looking up a 41-byte key: %v allocations, want 0", n)
	}
}
