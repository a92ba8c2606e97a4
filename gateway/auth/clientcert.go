package auth

import (
	"crypto/x509"
	"net/url"
	"strings"

	"github.com/portico-gw/portico/gateway/policy"
)

// The kinds of credentials. CredentialKinds lists those the gateway is
// configured for, and an identity's Method names the one that proved it.
const (
	KindJWT               = "jwt"
	KindAPIKey            = "api_key"
	KindClientCertificate = "client_certificate"
)

// ClientCertConfig makes a verified client certificate a credential: a
// certificate that carries the URI SAN (a SPIFFE ID, say) or the DNS SAN
// is the consumer, with the scopes. Set exactly one of URISAN and DNSSAN.
// Only a certificate the listener verified counts (tls.client_ca_file):
// the CA vouches for the name, this entry says who the name is.
type ClientCertConfig struct {
	// Consumer is the caller's name, as for an API key.
	Consumer string `yaml:"consumer"`
	// URISAN matches a URI SAN of the certificate exactly, such as
	// spiffe://example.org/shop.
	URISAN string `yaml:"uri_san"`
	// DNSSAN matches a DNS SAN of the certificate, ignoring case. No
	// wildcards: an entry names one certificate name.
	DNSSAN string `yaml:"dns_san"`
	// Scopes granted to the certificate.
	Scopes []string `yaml:"scopes"`
}

// name is the SAN the entry matches, as lookups key it.
func (c ClientCertConfig) name() (kind, name string) {
	if c.URISAN != "" {
		u, _ := url.Parse(c.URISAN) // validated before
		return "uri", u.String()
	}
	return "dns", strings.ToLower(c.DNSSAN)
}

// certEntry is the identity of one configured name; order is the entry's
// place in the config, for certificates that carry several known names.
type certEntry struct {
	order    int
	identity *policy.Identity
}

// clientCerts finds the identity of a verified certificate by its names.
// It never changes after New, so lookups need no lock.
type clientCerts struct {
	uris, dns map[string]certEntry
}

// newClientCerts returns nil when no certificate is a credential.
func newClientCerts(cfg []ClientCertConfig) *clientCerts {
	if len(cfg) == 0 {
		return nil
	}
	c := &clientCerts{uris: map[string]certEntry{}, dns: map[string]certEntry{}}
	for i, e := range cfg {
		// The subject is the name that matched: a certificate's DNS SAN
		// differs from it in case at most.
		kind, name := e.name()
		ce := certEntry{order: i, identity: &policy.Identity{Consumer: e.Consumer, Subject: name, Scopes: e.Scopes, Method: KindClientCertificate}}
		if kind == "uri" {
			c.uris[name] = ce
		} else {
			c.dns[name] = ce
		}
	}
	return c
}

// lookup returns the identity of the certificate, nil for one that no
// entry names. A certificate carrying names of several entries is the
// first of them in the config: the operator orders the list, and the
// answer never depends on the order of names in a certificate.
func (c *clientCerts) lookup(cert *x509.Certificate) *policy.Identity {
	if c == nil || cert == nil {
		return nil
	}
	var best *certEntry
	pick := func(e certEntry, ok bool) {
		if ok && (best == nil || e.order < best.order) {
			best = &e
		}
	}
	for _, u := range cert.URIs {
		e, ok := c.uris[u.String()]
		pick(e, ok)
	}
	for _, n := range cert.DNSNames {
		e, ok := c.dns[strings.ToLower(n)]
		pick(e, ok)
	}
	if best == nil {
		return nil
	}
	return best.identity
}
