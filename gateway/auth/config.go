package auth

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// Config is the auth section of the gateway config file.
type Config struct {
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 30s.
	Leeway time.Duration `yaml:"leeway"`
	// JWT lists the trusted token issuers.
	JWT []IssuerConfig `yaml:"jwt"`
	// APIKeys lists API keys by the SHA-256 of the key.
	APIKeys []APIKeyConfig `yaml:"api_keys"`
	// APIKeysConsulPrefix, when set, loads more API keys from this Consul
	// KV prefix and follows its changes: one key per API key, named by the
	// key's SHA-256 (hex), holding {"consumer": "...", "scopes": [...]}.
	APIKeysConsulPrefix string `yaml:"api_keys_consul_prefix"`
	// ClientCertificates make verified client certificates credentials:
	// a call that presents no token or API key, over a connection whose
	// client certificate the listener verified (tls.client_ca_file), is
	// the consumer of the first entry naming one of the certificate's
	// SANs. A token or key, when sent, is the credential instead.
	ClientCertificates []ClientCertConfig `yaml:"client_certificates"`
	// FailureLimit is each client address's budget of failed
	// authentications (bad or expired tokens, unknown API keys, malformed
	// credentials): requests per period, bursts up to burst. An address
	// that has spent it gets RESOURCE_EXHAUSTED, without its credentials
	// being checked, until the budget refills. Unset: 20 per minute, burst
	// 20; requests: 0 turns it off.
	FailureLimit *policy.RateLimit `yaml:"failure_limit"`
}

// IssuerConfig is one trusted token issuer.
type IssuerConfig struct {
	// Issuer must equal the token's iss claim.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain at least one of them.
	Audiences []string `yaml:"audiences"`
	// JWKSURL is fetched, cached and refreshed in the background.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSFile is a local JWK Set, read at start.
	JWKSFile string `yaml:"jwks_file"`
	// HS256Secret enables HS256 for this issuer, and only HS256.
	HS256Secret string `yaml:"hs256_secret"`
	// Algorithms narrows the accepted algorithms. Default RS256, ES256,
	// EdDSA (HS256 with a secret).
	Algorithms []string `yaml:"algorithms"`
	// RefreshInterval is how often the JWKS URL is refetched. Default 15m.
	RefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// UnknownKIDInterval caps refetches caused by tokens with an unknown
	// kid to one per interval. Default 30s.
	UnknownKIDInterval time.Duration `yaml:"unknown_kid_refetch_interval"`
	// ConsumerClaim names the claim that identifies the consumer. Default
	// "sub". A token without it is refused (no fallback to sub).
	ConsumerClaim string `yaml:"consumer_claim"`
	// ConsumerPrefix namespaces this issuer's consumers, so that two
	// issuers, or an issuer and an API key, can never name the same
	// consumer. Default "<issuer>#".
	ConsumerPrefix string `yaml:"consumer_prefix"`
	// MaxTokenLifetime refuses tokens that live longer: exp - iat, or
	// exp - now when the token has no iat. A stolen token is worth as much
	// as it lives, and an issuer misconfigured to mint year-long tokens
	// should be noticed. Default 0: no maximum.
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
}

// APIKeyConfig is one API key, known only by its hash.
type APIKeyConfig struct {
	// Consumer is the caller's name.
	Consumer string `yaml:"consumer"`
	// SHA256 is the hex SHA-256 of the key.
	SHA256 string `yaml:"sha256"`
	// Scopes granted to the key.
	Scopes []string `yaml:"scopes"`
}

var publicKeyAlgs = []string{"RS256", "ES256", "EdDSA"}

func (c Config) withDefaults() Config {
	if c.Leeway == 0 {
		c.Leeway = 30 * time.Second
	}
	limit := policy.RateLimit{Requests: 20, Period: time.Minute, Burst: 20}
	if c.FailureLimit != nil {
		limit = *c.FailureLimit
		if limit.Burst == 0 {
			limit.Burst = limit.Requests
		}
	}
	c.FailureLimit = &limit // a copy: the caller's config stays as it was
	issuers := make([]IssuerConfig, len(c.JWT))
	for i, is := range c.JWT {
		if len(is.Algorithms) == 0 {
			if is.HS256Secret != "" {
				is.Algorithms = []string{"HS256"}
			} else {
				is.Algorithms = publicKeyAlgs
			}
		}
		if is.RefreshInterval == 0 {
			is.RefreshInterval = 15 * time.Minute
		}
		if is.UnknownKIDInterval == 0 {
			is.UnknownKIDInterval = 30 * time.Second
		}
		if is.ConsumerClaim == "" {
			is.ConsumerClaim = "sub"
		}
		if is.ConsumerPrefix == "" {
			is.ConsumerPrefix = is.Issuer + "#"
		}
		issuers[i] = is
	}
	c.JWT = issuers
	return c
}

// validate refuses configurations that would be insecure or ambiguous.
func (c Config) validate() error {
	if l := c.FailureLimit; l != nil && l.Requests > 0 && l.Period <= 0 {
		return fmt.Errorf("auth.failure_limit: period must be positive (requests: 0 turns the limit off)")
	}
	seen, prefixes := map[string]bool{}, map[string]bool{}
	for i, is := range c.JWT {
		where := fmt.Sprintf("auth.jwt[%d] (%s)", i, is.Issuer)
		if is.Issuer == "" {
			return fmt.Errorf("auth.jwt[%d]: issuer is required", i)
		}
		if seen[is.Issuer] {
			return fmt.Errorf("%s: issuer listed twice", where)
		}
		seen[is.Issuer] = true
		if len(is.Audiences) == 0 || slices.Contains(is.Audiences, "") {
			return fmt.Errorf("%s: audiences is required (and may not contain an empty name): a token for another service must not be accepted", where)
		}
		if is.JWKSURL != "" {
			if err := checkJWKSURL(is.JWKSURL); err != nil {
				return fmt.Errorf("%s: jwks_url: %w", where, err)
			}
		}
		if is.RefreshInterval < 0 || is.UnknownKIDInterval < 0 {
			return fmt.Errorf("%s: refresh intervals must be positive", where)
		}
		if is.MaxTokenLifetime < 0 {
			return fmt.Errorf("%s: max_token_lifetime must be positive (0: no maximum)", where)
		}
		if prefixes[is.ConsumerPrefix] {
			return fmt.Errorf("%s: consumer_prefix %q is used by another issuer", where, is.ConsumerPrefix)
		}
		prefixes[is.ConsumerPrefix] = true
		sources := 0
		for _, s := range []string{is.JWKSURL, is.JWKSFile, is.HS256Secret} {
			if s != "" {
				sources++
			}
		}
		if sources != 1 {
			return fmt.Errorf("%s: set exactly one of jwks_url, jwks_file, hs256_secret", where)
		}
		for _, alg := range is.Algorithms {
			switch {
			case alg == "HS256" && is.HS256Secret == "":
				return fmt.Errorf("%s: HS256 needs hs256_secret", where)
			case alg != "HS256" && is.HS256Secret != "":
				return fmt.Errorf("%s: an issuer with hs256_secret accepts only HS256, not %s", where, alg)
			case alg != "HS256" && !slices.Contains(publicKeyAlgs, alg):
				return fmt.Errorf("%s: algorithm %q is not supported (use RS256, ES256, EdDSA or HS256)", where, alg)
			}
		}
		if is.HS256Secret != "" && len(is.HS256Secret) < 32 {
			return fmt.Errorf("%s: hs256_secret must be at least 32 bytes", where)
		}
	}
	hashes := map[string]bool{}
	for i, k := range c.APIKeys {
		if k.Consumer == "" || strings.Contains(k.Consumer, "#") {
			return fmt.Errorf("auth.api_keys[%d]: consumer is required and may not contain '#' (reserved for token issuers)", i)
		}
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("auth.api_keys[%d] (%s): sha256 must be 64 hex digits", i, k.Consumer)
		}
		h := strings.ToLower(k.SHA256)
		if hashes[h] {
			return fmt.Errorf("auth.api_keys[%d] (%s): the same key is listed twice", i, k.Consumer)
		}
		hashes[h] = true
	}
	names := map[string]bool{}
	for i, cc := range c.ClientCertificates {
		where := fmt.Sprintf("auth.client_certificates[%d] (%s)", i, cc.Consumer)
		if cc.Consumer == "" || strings.Contains(cc.Consumer, "#") {
			return fmt.Errorf("auth.client_certificates[%d]: consumer is required and may not contain '#' (reserved for token issuers)", i)
		}
		switch {
		case (cc.URISAN == "") == (cc.DNSSAN == ""):
			return fmt.Errorf("%s: set exactly one of uri_san and dns_san", where)
		case cc.URISAN != "":
			if u, err := url.Parse(cc.URISAN); err != nil || u.Scheme == "" {
				return fmt.Errorf("%s: uri_san %q is not an absolute URI (such as spiffe://example.org/shop)", where, cc.URISAN)
			}
		case strings.ContainsAny(cc.DNSSAN, "* /:"):
			return fmt.Errorf("%s: dns_san %q must be one DNS name, without wildcards", where, cc.DNSSAN)
		}
		kind, name := cc.name()
		if names[kind+" "+name] {
			return fmt.Errorf("%s: %s SAN %q is listed twice", where, kind, name)
		}
		names[kind+" "+name] = true
	}
	return nil
}

// checkJWKSURL accepts https, and plain http only on loopback (tests, a
// sidecar): keys fetched in the clear could be replaced on the way.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: use https (plain http is allowed only on loopback)", raw)
	}
	return fmt.Errorf("%q: scheme must be https", raw)
}
