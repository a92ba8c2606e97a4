// Package servers runs each path under test, one per process: the backend,
// Portico with its chain on and off, a bare grpc-gateway, vanguard, and
// nginx. Every Go server also serves pprof and its allocation counts on a
// debug listener (package procs).
package servers

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/portico-gw/portico/bench/internal/procs"
)

// BackendName is the Consul service the backend registers as; Portico
// routes both example services to it.
const BackendName = "portico-bench-backend"

// serveREST serves h on a free loopback port until ctx ends, and reports
// it ready at readyPath.
func serveREST(ctx context.Context, h http.Handler, readyPath string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
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
