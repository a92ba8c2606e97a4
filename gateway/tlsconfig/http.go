package tlsconfig

import (
	"cmp"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// HTTPListener is l with TLS on top for srv, which is made to serve h2 as
// well as HTTP/1.1 (what ALPN in cfg chose). The handshake gets the
// headers' time, as net/http has it.
func HTTPListener(srv *http.Server, l net.Listener, cfg *tls.Config, failed func(net.Addr, error)) net.Listener {
	if srv.Protocols == nil {
		srv.Protocols = new(http.Protocols)
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	return NewListener(l, cfg, cmp.Or(srv.ReadHeaderTimeout, 10*time.Second), failed)
}

// HandshakeFailed counts and logs a failed handshake of a client with the
// listener name; m and logger may be nil.
func (m *Metrics) HandshakeFailed(name string, logger *slog.Logger) func(net.Addr, error) {
	return func(from net.Addr, err error) {
		reason := FailureReason(err, "client")
		if m != nil {
			m.Handshakes.WithLabelValues(name, reason).Inc()
		}
		if logger != nil {
			// Debug: scanners and load balancers' TCP checks fail handshakes
			// all day; the counter is what to watch.
			logger.Debug("TLS handshake failed", "listener", name, "reason", reason, "from", from, "error", err)
		}
	}
}
