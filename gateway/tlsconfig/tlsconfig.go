package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is a listener's TLS (config keys tls and admin_tls).
type Config struct {
	// CertFile and KeyFile are the certificate chain and its key, PEM.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, makes clients present a certificate that
	// this CA signed (mTLS).
	ClientCAFile string `yaml:"client_ca_file"`
	// MinVersion is "1.2" (the default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// BackendConfig is the TLS of connections to backends (config keys
// backend_tls and services.<name>.tls).
type BackendConfig struct {
	// CAFile verifies the backend's certificate; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the gateway's client certificate (mTLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name verified in the backend's certificate (and
	// sent as SNI); default: the backend's Consul service name.
	ServerName string `yaml:"server_name"`
}

// Files are what a Source loads; empty names are not loaded.
type Files struct {
	Cert, Key, CA string
}

// DefaultReloadInterval is how often a Source looks at its files.
const DefaultReloadInterval = 2 * time.Second

// Source holds the current certificate and CA pool of one set of files.
type Source struct {
	name   string // for logs and metrics: "listener", "admin", "backend catalog"
	files  Files
	logger *slog.Logger
	every  time.Duration
	m      *Metrics

	cur atomic.Pointer[loaded]

	mu     sync.Mutex // Start/Close
	cancel context.CancelFunc
	done   chan struct{}
}

type loaded struct {
	cert    *tls.Certificate // nil without cert files
	pool    *x509.CertPool   // nil without a CA file
	modTime [3]time.Time     // cert, key, CA
}

// Option configures a Source.
type Option func(*Source)

// WithLogger sets where failed reloads are logged.
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.logger = l } }

// WithReloadInterval sets how often the files are looked at; 0 never.
func WithReloadInterval(d time.Duration) Option { return func(s *Source) { s.every = d } }

// WithMetrics reports the certificate's expiry and handshake failures.
func WithMetrics(m *Metrics) Option { return func(s *Source) { s.m = m } }

// New loads files once; an error names the file that did not load. It
// starts nothing: Start watches the files.
func New(name string, files Files, opts ...Option) (*Source, error) {
	s := &Source{name: name, files: files, logger: slog.Default(), every: DefaultReloadInterval}
	for _, o := range opts {
		o(s)
	}
	l, err := load(files)
	if err != nil {
		return nil, fmt.Errorf("tls (%s): %w", name, err)
	}
	s.cur.Store(l)
	s.m.expiry(s.name, l.cert)
	return s, nil
}

func load(f Files) (*loaded, error) {
	l := &loaded{}
	stat := func(i int, name string) error {
		if name == "" {
			return nil
		}
		fi, err := os.Stat(name)
		if err != nil {
			return err
		}
		l.modTime[i] = fi.ModTime()
		return nil
	}
	if err := errors.Join(stat(0, f.Cert), stat(1, f.Key), stat(2, f.CA)); err != nil {
		return nil, err
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", f.Cert, f.Key, err)
		}
		l.cert = &c
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, err
		}
		l.pool = x509.NewCertPool()
		if !l.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", f.CA)
		}
	}
	return l, nil
}

// Start watches the files until Close.
func (s *Source) Start(ctx context.Context) error {
	if s.every <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.Reload()
			}
		}
	}()
	return nil
}

// Close stops watching.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
	return nil
}

// Reload loads the files again if any changed. A set that does not load
// keeps the current one and is logged; a file rewritten in place may be
// seen half written, and is then loaded at the next look.
func (s *Source) Reload() {
	cur := s.cur.Load()
	changed := false
	for i, name := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err != nil || !fi.ModTime().Equal(cur.modTime[i]) {
			changed = true
		}
	}
	if !changed {
		return
	}
	l, err := load(s.files)
	if err != nil {
		s.logger.Error("new TLS files do not load; keeping the current certificate", "tls", s.name, "error", err)
		s.m.reloadFailed(s.name)
		return
	}
	s.cur.Store(l)
	s.m.expiry(s.name, l.cert)
	s.logger.Info("TLS files reloaded", "tls", s.name)
}

// Certificate is the current certificate; nil without one.
func (s *Source) Certificate() *tls.Certificate { return s.cur.Load().cert }

// Pool is the current CA pool; nil without a CA file.
func (s *Source) Pool() *x509.CertPool { return s.cur.Load().pool }

func minVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("min_version %q: want \"1.2\" or \"1.3\"", v)
}

// Listener loads a listener's Config.
func Listener(name string, c Config, opts ...Option) (*Source, uint16, error) {
	v, err := minVersion(c.MinVersion)
	if err != nil {
		return nil, 0, fmt.Errorf("tls (%s): %w", name, err)
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, 0, fmt.Errorf("tls (%s): cert_file and key_file are required", name)
	}
	s, err := New(name, Files{Cert: c.CertFile, Key: c.KeyFile, CA: c.ClientCAFile}, opts...)
	return s, v, err
}

// ServerConfig is a listener's tls.Config offering nextProtos by ALPN. Each
// handshake takes the certificate and client CA in force when it starts.
func (s *Source) ServerConfig(minVersion uint16, nextProtos ...string) *tls.Config {
	base := &tls.Config{MinVersion: minVersion, NextProtos: nextProtos}
	return &tls.Config{
		MinVersion: minVersion,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := s.cur.Load()
			c := base.Clone()
			c.Certificates = []tls.Certificate{*l.cert}
			if l.pool != nil {
				c.ClientCAs, c.ClientAuth = l.pool, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// ClientConfig is the tls.Config of a connection to a backend named
// serverName: verified against the CA (or the system roots), presenting
// the gateway's certificate when there is one.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := s.Certificate(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
		// Verified in VerifyConnection against the CA in force at each
		// handshake, so a rotated CA needs no new tls.Config.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{DNSName: serverName, Roots: s.Pool(), Intermediates: x509.NewCertPool()}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: the backend presented no certificate")
			}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}
}

// Metrics are the TLS metrics of one gateway.
type Metrics struct {
	expirySeconds *prometheus.GaugeVec
	reloadErrors  *prometheus.CounterVec
	Handshakes    *prometheus.CounterVec // failures, by listener and reason
}

// NewMetrics registers the TLS metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		expirySeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_tls_certificate_expiry_seconds",
			Help: "Unix time at which each loaded certificate expires.",
		}, []string{"tls", "subject"}),
		reloadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_tls_reload_errors_total",
			Help: "Changed TLS files that did not load (the previous certificate stays).",
		}, []string{"tls"}),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by listener and reason.",
		}, []string{"tls", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.expirySeconds, m.reloadErrors, m.Handshakes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) expiry(name string, c *tls.Certificate) {
	if m == nil || c == nil || len(c.Certificate) == 0 {
		return
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return
	}
	m.expirySeconds.WithLabelValues(name, leaf.Subject.String()).Set(float64(leaf.NotAfter.Unix()))
}

func (m *Metrics) reloadFailed(name string) {
	if m != nil {
		m.reloadErrors.WithLabelValues(name).Inc()
	}
}
