package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/portico-gw/portico/gateway/validate"
	"github.com/portico-gw/portico/gateway/web"
	"go.yaml.in/yaml/v3"
)

// Config is the gateway's configuration, read from a YAML file. The zero
// value works against a local Consul agent. Each policy's part is that
// policy package's own Config.
type Config struct {
	// HTTPAddr is where REST/JSON is served. Default 127.0.0.1:8080.
	HTTPAddr string `yaml:"http_addr"`
	// GRPCAddr is where native gRPC is served. Default 127.0.0.1:9090.
	GRPCAddr string `yaml:"grpc_addr"`
	// AdminAddr serves /healthz, /readyz and /routes. Default 127.0.0.1:9901.
	AdminAddr string `yaml:"admin_addr"`
	// AdminHosts are the host names the admin listener answers to, besides
	// IP addresses and localhost: a page a browser loads from another name
	// (DNS rebinding) cannot read it.
	AdminHosts []string `yaml:"admin_hosts"`

	// TLS serves the REST and gRPC listeners over TLS; nil: plaintext.
	TLS *tlsconfig.Config `yaml:"tls"`
	// AdminTLS serves the admin listener over TLS; nil: plaintext.
	AdminTLS *tlsconfig.Config `yaml:"admin_tls"`
	// AdminTokenFile holds the bearer token every admin route but /healthz
	// and /readyz requires; empty: none (refused on a non-loopback
	// admin_addr).
	AdminTokenFile string `yaml:"admin_token_file"`
	// BackendTLS is the TLS of connections to every backend, unless a
	// service sets its own (services.<name>.tls); nil: plaintext.
	BackendTLS *tlsconfig.BackendConfig `yaml:"backend_tls"`

	// Limits are the client listeners' limits on connections, streams,
	// headers and time (package edge).
	Limits edge.Config `yaml:"limits"`

	// Consul follows Consul's conventions (CONSUL_HTTP_ADDR, ...) where empty.
	Consul discovery.ConsulConfig `yaml:"consul"`

	// DefaultTimeout is the deadline of a unary call that sets none and
	// whose service declares none. Default 10s.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// ShutdownGrace is how long in-flight calls may run after SIGTERM.
	// Default 15s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// DrainDelay is how long the listeners keep serving after SIGTERM,
	// with /readyz already failing, so load balancers stop sending before
	// connections are refused. It is part of the grace. Default 5s.
	DrainDelay time.Duration `yaml:"drain_delay"`

	// DefaultAccess applies to methods whose proto declares no access:
	// "authenticated" (the default) or "public".
	DefaultAccess string `yaml:"default_access"`
	// DefaultRateLimit applies to methods that declare no rate limit.
	DefaultRateLimit policy.RateLimit `yaml:"default_rate_limit"`
	// TrustedProxies lists the CIDRs whose X-Forwarded-For is believed when
	// finding a client's address.
	TrustedProxies []string `yaml:"trusted_proxies"`

	// Services overrides the proto options of a service, keyed by its full
	// name (for example catalog.v1.CatalogService).
	Services map[string]ServiceConfig `yaml:"services"`

	// Policies.
	Auth       auth.Config      `yaml:"auth"`
	RateLimit  ratelimit.Config `yaml:"rate_limit"`
	Validation validate.Config  `yaml:"validation"`
	Stats      stats.Config     `yaml:"stats"`

	// CORS, SSE and OpenAPI are for browsers and front-end code (package
	// web): CORS headers (nil: none), event-stream heartbeats, and the
	// OpenAPI document with its docs page.
	CORS    *policy.CORS      `yaml:"cors"`
	SSE     web.SSEConfig     `yaml:"sse"`
	OpenAPI web.OpenAPIConfig `yaml:"openapi"`

	// Register puts the gateway itself into Consul (register.go).
	Register RegisterConfig `yaml:"register"`

	// source names the file the config came from, for error messages.
	source string
}

// The route table's part of the config: overrides of what proto declares.
type (
	ServiceConfig = route.ServiceConfig
	MethodConfig  = route.MethodConfig
	PolicyConfig  = route.PolicyConfig
)

// LoadConfig reads a YAML config file. Unknown keys are errors, so a typo
// cannot silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.source = path
	return cfg, nil
}

// ParseConfig reads a YAML config.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, err
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return cfg, nil
}

func (c Config) withDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:9090"
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:9901"
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 10 * time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 15 * time.Second
	}
	if c.DrainDelay == 0 {
		c.DrainDelay = 5 * time.Second
	}
	return c
}

// checkTLS checks the listeners' TLS keys before any file is read: the
// files each needs, and a token for an admin listener other hosts can
// reach, where the routes, backends and metrics would be anyone's to read.
func (c Config) checkTLS() error {
	for _, l := range []struct {
		key string
		cfg *tlsconfig.Config
	}{{"tls", c.TLS}, {"admin_tls", c.AdminTLS}} {
		if l.cfg != nil && (l.cfg.CertFile == "" || l.cfg.KeyFile == "") {
			return fmt.Errorf("%s: %s needs cert_file and key_file", c.where(), l.key)
		}
	}
	if c.AdminTokenFile == "" && !loopback(c.AdminAddr) {
		return fmt.Errorf("%s: admin_addr %s is not a loopback address, and without admin_token_file anyone "+
			"who reaches it can read the routes, backends and metrics: set admin_token_file to a file holding "+
			"a bearer token, or bind admin_addr to 127.0.0.1", c.where(), c.AdminAddr)
	}
	return nil
}

// loopback reports whether addr (host:port) listens on loopback only. A
// host name other than localhost counts as reachable: New does no DNS.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (c Config) where() string {
	if c.source == "" {
		return "config"
	}
	return c.source
}

func (c Config) routes() route.Config {
	return route.Config{DefaultTimeout: c.DefaultTimeout, DefaultAccess: c.DefaultAccess,
		DefaultRateLimit: c.DefaultRateLimit, Services: c.Services, Source: c.where()}
}
