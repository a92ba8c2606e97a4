package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Token is the admin listener's bearer token (admin_token_file), kept as
// its SHA-256.
type Token struct{ sum [sha256.Size]byte }

// LoadToken reads the token from file, trimmed; an empty file is an error.
func LoadToken(file string) (*Token, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("admin_token_file: %w", err)
	}
	tok := bytes.TrimSpace(raw)
	if len(tok) == 0 {
		return nil, fmt.Errorf("admin_token_file %s is empty", file)
	}
	return &Token{sum: sha256.Sum256(tok)}, nil
}

// Only asks every admin route but /healthz and /readyz (probes carry no
// token) for Authorization: Bearer <token>. A nil Token asks nothing.
func (t *Token) Only(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		// Digests compared, so neither the token nor its length leaks
		// through the time the comparison takes.
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(got[:], t.sum[:]) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="portico admin"`)
		WriteJSON(w, http.StatusUnauthorized, map[string]any{
			"error": "the admin listener needs Authorization: Bearer <token>, the token in admin_token_file"})
	})
}

// HostsOnly answers only requests addressed to an IP address, localhost
// or one of hosts (config admin_hosts). A DNS rebinding attack needs a name
// of the attacker's that resolves to the admin listener; its Host is that
// name, so it is refused.
func HostsOnly(hosts []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if _, err := netip.ParseAddr(host); err == nil || strings.EqualFold(host, "localhost") || slices.Contains(hosts, host) {
			next.ServeHTTP(w, r)
			return
		}
		WriteJSON(w, http.StatusForbidden, map[string]any{
			"error": fmt.Sprintf("host %q is not one this admin listener answers to; add it to admin_hosts", host)})
	})
}
