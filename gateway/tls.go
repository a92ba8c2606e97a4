package gateway

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// listenerTLS is the TLS of the gateway's listeners (config keys tls and
// admin_tls) and the admin token. It is one of the gateway's parts, so
// whoever needs it finds it there; the certificate sources are parts of
// their own, started and closed with the gateway.
type listenerTLS struct {
	metrics *tlsconfig.Metrics
	logger  *slog.Logger

	client    *tlsconfig.Source // the REST and gRPC listeners; nil: plaintext
	clientMin uint16
	admin     *tlsconfig.Source // the admin listener; nil: plaintext
	adminMin  uint16

	adminToken *[sha256.Size]byte // SHA-256 of the admin token; nil: none
}

// setupTLS loads the listeners' certificates and the admin token, and
// refuses an admin listener that other hosts can reach without a token.
// It reads files but opens no socket.
func (g *Gateway) setupTLS(reg prometheus.Registerer) error {
	if err := g.cfg.checkTLS(); err != nil {
		return err
	}
	m, err := tlsconfig.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("tls metrics: %w", err)
	}
	t := &listenerTLS{metrics: m, logger: g.opts.logger}
	opts := []tlsconfig.Option{tlsconfig.WithLogger(g.opts.logger), tlsconfig.WithMetrics(m)}
	if c := g.cfg.TLS; c != nil {
		if t.client, t.clientMin, err = tlsconfig.Listener("listener", *c, opts...); err != nil {
			return fmt.Errorf("%s: %w", g.cfg.where(), err)
		}
		g.parts = append(g.parts, t.client)
	}
	if c := g.cfg.AdminTLS; c != nil {
		if t.admin, t.adminMin, err = tlsconfig.Listener("admin", *c, opts...); err != nil {
			return fmt.Errorf("%s: %w", g.cfg.where(), err)
		}
		g.parts = append(g.parts, t.admin)
	}
	if f := g.cfg.AdminTokenFile; f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("%s: admin_token_file: %w", g.cfg.where(), err)
		}
		tok := bytes.TrimSpace(raw)
		if len(tok) == 0 {
			return fmt.Errorf("%s: admin_token_file %s is empty", g.cfg.where(), f)
		}
		sum := sha256.Sum256(tok)
		t.adminToken = &sum
	}
	// The metrics are a part too: backend TLS reports into the same
	// series, which a registry takes only once.
	g.parts = append(g.parts, t, m)
	return nil
}

// listenerTLS is the part setupTLS added.
func (g *Gateway) listenerTLS() *listenerTLS {
	if t, ok := find[*listenerTLS](g.parts); ok {
		return t
	}
	return &listenerTLS{}
}

// grpcTLS is the gRPC server's transport credentials when the client
// listeners serve TLS: h2 by ALPN, and a client certificate when tls has
// a client_ca_file.
func (g *Gateway) grpcTLS() []grpc.ServerOption {
	t := g.listenerTLS()
	if t.client == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(&doorCreds{
		tls:    credentials.NewTLS(t.client.ServerConfig(t.clientMin, "h2")),
		plain:  insecure.NewCredentials(),
		failed: t.handshakeFailed("grpc"),
	})}
}

// restListener is the REST listener l (the edge's, over TCP) with TLS on
// top; srv is made to serve h2 as well as HTTP/1.1. tls must be set.
func (t *listenerTLS) restListener(srv *http.Server, l net.Listener) net.Listener {
	return t.serveTLS("rest", srv, l, t.client.ServerConfig(t.clientMin, "h2", "http/1.1"))
}

// adminListener is the admin listener l with TLS on top when admin_tls
// is set: h2 by ALPN (the admin gRPC API) and HTTP/1.1.
func (t *listenerTLS) adminListener(srv *http.Server, l net.Listener) net.Listener {
	if t.admin == nil {
		return l
	}
	return t.serveTLS("admin", srv, l, t.admin.ServerConfig(t.adminMin, "h2", "http/1.1"))
}

func (t *listenerTLS) serveTLS(name string, srv *http.Server, l net.Listener, cfg *tls.Config) net.Listener {
	if srv.Protocols == nil {
		srv.Protocols = new(http.Protocols)
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	// The handshake's time is the headers' time, as net/http has it.
	return newTLSListener(l, cfg, cmp.Or(srv.ReadHeaderTimeout, 10*time.Second), t.handshakeFailed(name))
}

// handshakeFailed counts and logs a failed handshake on the listener name.
func (t *listenerTLS) handshakeFailed(name string) func(net.Addr, error) {
	return func(from net.Addr, err error) {
		reason := handshakeFailure(err)
		if t.metrics != nil {
			t.metrics.Handshakes.WithLabelValues(name, reason).Inc()
		}
		if t.logger != nil {
			// Debug: scanners and load balancers' TCP checks fail handshakes
			// all day; the counter is what to watch.
			t.logger.Debug("TLS handshake failed", "listener", name, "reason", reason, "from", from, "error", err)
		}
	}
}

// handshakeFailure is the reason label of a failed server handshake.
func handshakeFailure(err error) string {
	var (
		verify *tls.CertificateVerificationError
		record tls.RecordHeaderError
		op     *net.OpError
		nerr   net.Error
	)
	switch {
	case errors.As(err, &verify):
		return "bad_certificate" // the client's certificate does not verify against client_ca_file
	case strings.Contains(err.Error(), "client didn't provide a certificate"): // crypto/tls has no error value for it
		return "no_client_certificate"
	case errors.As(err, &record):
		return "not_tls"
	case errors.As(err, &op) && op.Op == "remote error":
		return "client_refused" // an alert from the client: most often, it does not trust the gateway's certificate
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return "other"
}

// doorCreds are the gRPC server's credentials with tls set. The one
// grpc.Server also serves the REST door's streams over an in-memory
// connection, which stays plaintext: a connection marked internal passes
// with insecure AuthInfo, every other one makes a TLS handshake (fail
// closed), and its peer's AuthInfo is credentials.TLSInfo.
type doorCreds struct {
	tls, plain credentials.TransportCredentials
	failed     func(net.Addr, error)
}

var _ credentials.TransportCredentials = (*doorCreds)(nil)

func (c *doorCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if in, ok := conn.(internalConn); ok {
		return c.plain.ServerHandshake(in.Conn)
	}
	tc, info, err := c.tls.ServerHandshake(conn)
	if err != nil {
		c.failed(conn.RemoteAddr(), err)
	}
	return tc, info, err
}

func (c *doorCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("gateway: the listeners' credentials are for serving only")
}

func (c *doorCreds) Info() credentials.ProtocolInfo { return c.tls.Info() }

func (c *doorCreds) Clone() credentials.TransportCredentials {
	return &doorCreds{tls: c.tls.Clone(), plain: c.plain.Clone(), failed: c.failed}
}

// OverrideServerName is unused by grpc-go (deprecated) and means nothing
// to a server.
func (c *doorCreds) OverrideServerName(string) error { return nil }

// internalListener marks the connections of the in-memory listener that
// carries the REST door's streams, which doorCreds let through in
// plaintext.
type internalListener struct{ net.Listener }

type internalConn struct{ net.Conn }

func (l internalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return internalConn{c}, nil
}

// tlsListener makes the TLS handshake of each connection l accepts in a
// goroutine of its own, so a client slow to finish its handshake holds up
// no other, and reports a failed one with its error: net/http, given a
// tls.Listener, does the handshake itself but only logs a failure as a
// line of text. Accept returns *tls.Conn with the handshake done, so
// net/http sets Request.TLS and serves what ALPN chose (h2 or HTTP/1.1).
// The connections waiting for their handshake hold their slot in the
// edge's connection cap underneath.
type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	failed  func(net.Addr, error)

	out    chan accepted
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type accepted struct {
	conn net.Conn
	err  error
}

func newTLSListener(l net.Listener, cfg *tls.Config, timeout time.Duration, failed func(net.Addr, error)) *tlsListener {
	tl := &tlsListener{Listener: l, cfg: cfg, timeout: timeout, failed: failed, out: make(chan accepted)}
	tl.ctx, tl.cancel = context.WithCancel(context.Background())
	tl.wg.Add(1)
	go tl.acceptLoop()
	return tl
}

// acceptLoop accepts until the listener closes. An accept error goes to
// the server's Accept, which backs off on a temporary one before it asks
// again, so a persistent error does not spin here.
func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.out <- accepted{err: err}:
			case <-l.ctx.Done():
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if l.ctx.Err() == nil { // not the listener closing
			l.failed(c.RemoteAddr(), err)
			answerPlainHTTP(err)
		}
		c.Close()
		return
	}
	select {
	case l.out <- accepted{conn: tc}:
	case <-l.ctx.Done():
		tc.Close()
	}
}

// answerPlainHTTP tells a client that sent plain HTTP to a TLS port what
// went wrong, as net/http does.
func answerPlainHTTP(err error) {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil {
		return
	}
	switch string(re.RecordHeader[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.out:
		return a.conn, a.err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close closes the listener and ends the handshakes in progress.
func (l *tlsListener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

// adminTokenOnly asks every admin route but /healthz and /readyz (probes
// carry no token) for Authorization: Bearer <token>.
func (t *listenerTLS) adminTokenOnly(next http.Handler) http.Handler {
	if t.adminToken == nil {
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
		if strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(got[:], t.adminToken[:]) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="portico admin"`)
		admin.WriteJSON(w, http.StatusUnauthorized, map[string]any{
			"error": "the admin listener needs Authorization: Bearer <token>, the token in admin_token_file"})
	})
}
