// Package servers runs each path under test, one per process: the backend,
// Portico with its chain on and off, a bare grpc-gateway, vanguard, and
// nginx; and, to measure what TLS costs, Portico, grpc-gateway and nginx
// again with TLS on their client listeners (a *tlsconfig.Config; nil is
// plaintext). Every Go server also serves pprof and its allocation counts
// on a debug listener (package procs).
package servers

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/gateway/tlsconfig"
)

// BackendName is the Consul service the backend registers as; Portico
// routes both example services to it.
const BackendName = "portico-bench-backend"

// serveREST serves h on a free loopback port until ctx ends, and reports
// it ready at readyPath. With tc it serves over Go's crypto/tls, offering
// h2 and HTTP/1.1 by ALPN as Portico's REST door does.
func serveREST(ctx context.Context, h http.Handler, tc *tlsconfig.Config, readyPath string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if tc != nil {
		cert, err := tls.LoadX509KeyPair(tc.CertFile, tc.KeyFile)
		if err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
		l = tls.NewListener(l, srv.TLSConfig)
	}
	go func() { _ = srv.Serve(l) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ready(ctx, readyPath, procs.Ready{HTTP: l.Addr().String()})
}

// ready serves the debug listener, publishes r and waits for ctx.
func ready(ctx context.Context, path string, r procs.Ready) error {
	var err error
	if r.Debug, err = procs.ServeDebug(); err != nil {
		return err
	}
	if err := procs.WriteReady(path, r); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
