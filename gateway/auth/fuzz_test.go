package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

// FuzzParseBearer: any header value either yields a token made only of
// token68 characters, or a failure that does not repeat the value.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc.def.ghi", "bearer x", "Basic dXNlcg==", "Bearer", "Bearer  a b", "Bearer \x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tok, fail := ParseBearer([]string{v})
		if fail != nil {
			if tok != "" {
				t.Fatalf("token %q returned with a failure", tok)
			}
			_, tokPart, _ := strings.Cut(strings.TrimSpace(v), " ")
			for _, part := range []string{v, strings.TrimSpace(tokPart)} {
				if len(part) > 8 && strings.Contains(fail.desc, part) {
					t.Fatalf("failure %q repeats the header", fail.desc)
				}
			}
			return
		}
		if tok == "" || strings.ContainsAny(tok, " \t\r\n\"") {
			t.Fatalf("bad token %q from %q", tok, v)
		}
	})
}

// FuzzAuthenticate drives the whole credential path (header parsing, token
// peeking, issuer choice, verification, API key lookup) with arbitrary
// input: it must never panic, never admit an unsigned caller, and never echo
// the credential.
func FuzzAuthenticate(f *testing.F) {
	p, err := New(Config{
		Leeway: time.Second,
		JWT: []IssuerConfig{{
			Issuer: "https://hmac.test", Audiences: []string{"portico"},
			HS256Secret: "0123456789abcdef0123456789abcdef",
		}},
		APIKeys: []APIKeyConfig{{Consumer: "c", SHA256: HashAPIKey("pk_known")}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct{ authz, key string }{
		{"Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2htYWMudGVzdCJ9.", ""},
		{"Bearer eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJodHRwczovL2htYWMudGVzdCIsImF1ZCI6InBvcnRpY28ifQ.c2ln", ""},
		{"Bearer a.b.c", ""},
		{"", "pk_known"},
		{"", "pk_unknown"},
		{"Bearer ..", "pk_known"},
	} {
		f.Add(s.authz, s.key)
	}
	f.Fuzz(func(t *testing.T, authz, key string) {
		md := metadata.MD{}
		if authz != "" {
			md.Set("authorization", authz)
		}
		if key != "" {
			md.Set(APIKeyHeader, key)
		}
		ctx := metadata.NewIncomingContext(context.Background(), md)
		id, fail := p.authenticate(ctx, credentialsOf(ctx, nil))
		if id != nil && fail != nil {
			t.Fatal("both an identity and a failure")
		}
		if id != nil && authz != "" {
			t.Fatalf("a token nobody signed was accepted: %q -> %+v", authz, id)
		}
		if id != nil && key != "pk_known" {
			t.Fatalf("API key %q accepted", key)
		}
		if fail != nil {
			_, tok, _ := strings.Cut(strings.TrimSpace(authz), " ")
			for _, cred := range []string{strings.TrimSpace(authz), strings.TrimSpace(tok), key} {
				if len(cred) > 12 && strings.Contains(fail.desc, cred) {
					t.Fatalf("failure %q echoes a credential", fail.desc)
				}
			}
		}
	})
}
