package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// NewListener makes the TLS handshake of each connection l accepts in a
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

func NewListener(l net.Listener, cfg *tls.Config, timeout time.Duration, failed func(net.Addr, error)) net.Listener {
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

// FailureReason is the reason label of a failed handshake with peer
// ("client" for the listeners, "backend" for backend connections), for
// portico_tls_handshake_failures_total.
func FailureReason(err error, peer string) string {
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		name    x509.HostnameError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
		op      *net.OpError
		nerr    net.Error
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &name), errors.As(err, &invalid):
		return "bad_certificate" // the peer's certificate does not verify against the CA
	case strings.Contains(err.Error(), "client didn't provide a certificate"): // crypto/tls has no error value for it
		return "no_client_certificate"
	case errors.As(err, &record):
		return "not_tls"
	case errors.As(err, &op) && op.Op == "remote error":
		return peer + "_refused" // an alert from the peer: most often, it does not trust our certificate
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return "other"
}
