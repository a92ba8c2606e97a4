// Command catalog runs the example catalog service and registers it in
// Consul. It serves until SIGINT or SIGTERM, then deregisters and lets
// in-flight calls finish for up to 10s. With -tls-cert and -tls-key it
// serves TLS; with -tls-client-ca it serves only clients that CA signed
// (the gateway), health excepted.
//
// -fail-rate, -delay and -hang-rate make it misbehave on purpose while its
// health check still passes, to watch the gateway's retries and ejection.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/portico-gw/portico/discovery"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
)

func main() {
	addr := flag.String("addr", host.DefaultAddr, "gRPC listen address")
	consulCfg := host.ConsulFlags(flag.CommandLine)
	tlsCfg := host.TLSFlags(flag.CommandLine)
	faults := host.FaultFlags(flag.CommandLine)
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, *consulCfg, *tlsCfg, *faults, logger); err != nil {
		logger.Error("catalog failed", "err", err)
		os.Exit(1)
	}
}

func run(addr string, consulCfg discovery.ConsulConfig, tlsCfg host.TLS, faults host.Faults, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	consul, err := discovery.NewConsulClient(consulCfg)
	if err != nil {
		return err
	}
	srv := catalog.NewServer()
	return host.Run(ctx, host.Config{
		Name:     "catalog",
		Addr:     addr,
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, srv) },
		TLS:      tlsCfg,
		Faults:   faults,
	}, consul, logger)
}
