package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// CORS is a cors block of the config file: which browser origins may call
// the REST port, with which headers. It lives here, beside RateLimit, so the
// route table's per-service overrides can hold one; package web serves it.
type CORS struct {
	// AllowedOrigins are exact origins ("https://shop.example.com"); "*"
	// allows any, and only without credentials.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHeaders are the request headers a page may send.
	AllowedHeaders []string `yaml:"allowed_headers"`
	// ExposedHeaders are the response headers a page may read.
	ExposedHeaders []string `yaml:"exposed_headers"`
	// AllowCredentials lets a page send cookies and HTTP authentication.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge is how long a browser may keep a preflight's answer.
	MaxAge time.Duration `yaml:"max_age"`
}

// Validate refuses a block a browser would refuse or that says nothing.
func (c *CORS) Validate() error {
	if c == nil {
		return nil
	}
	if len(c.AllowedOrigins) == 0 {
		return fmt.Errorf("cors: allowed_origins is empty (leave cors out to turn CORS off)")
	}
	for _, o := range c.AllowedOrigins {
		if o != "*" && !isOrigin(o) {
			// rs/cors would take "https://*.example.com" as a pattern.
			return fmt.Errorf(`cors: allowed_origins %q is not an origin: want "*" or scheme://host[:port], exactly, without a path or a wildcard`, o)
		}
	}
	if c.AllowCredentials && slices.Contains(c.AllowedOrigins, "*") {
		return fmt.Errorf(`cors: allowed_origins "*" cannot be combined with allow_credentials: list the origins`)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("cors: max_age %v is negative", c.MaxAge)
	}
	return nil
}

// isOrigin reports whether o is a browser's Origin: scheme://host[:port],
// nothing more.
func isOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && u.Scheme != "" && u.Host != "" && u.Hostname() != "" && u.User == nil &&
		u.Path == "" && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" &&
		!strings.Contains(o, "*") && o == u.Scheme+"://"+u.Host
}
