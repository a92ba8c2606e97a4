// Package testjwks is an issuer's JWKS endpoint on loopback for tests: its
// key set can be rotated and its fetches counted.
package testjwks

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/MicahParks/jwkset"
)

// Server serves the public keys published so far at its URL.
type Server struct {
	*httptest.Server
	fetches atomic.Int32
	mu      sync.Mutex
	keys    map[string]any // kid -> public key
}

// New starts a Server, closed when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{keys: map[string]any{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		store := jwkset.NewMemoryStorage()
		s.mu.Lock()
		for kid, pub := range s.keys {
			jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
			if err != nil {
				s.mu.Unlock()
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_ = store.KeyWrite(r.Context(), jwk)
		}
		s.mu.Unlock()
		raw, _ := store.JSONPublic(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(raw)
	}))
	t.Cleanup(s.Close)
	return s
}

// Publish adds (or replaces) the public key of kid.
func (s *Server) Publish(kid string, pub any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[kid] = pub
}

// Fetches counts the requests served.
func (s *Server) Fetches() int32 { return s.fetches.Load() }
