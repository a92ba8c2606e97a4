// Command orders runs the example orders service and registers it in Consul.
// It finds the catalog through Consul too. It serves until SIGINT or SIGTERM,
// then deregisters and lets in-flight calls finish for up to 10s. With
// -tls-cert and -tls-key it serves TLS; with -tls-client-ca it serves only
// clients that CA signed (the gateway), health excepted. With -catalog-ca
// (and -catalog-cert, -catalog-key for a catalog that requires a client
// certificate) it calls the catalog over TLS.
//
// -fail-rate, -delay and -hang-rate make it misbehave on purpose while its
// health check still passes, to watch the gateway's retries and ejection.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/services/host"
	"github.com/portico-gw/portico/services/orders"
)

type config struct {
	addr       string
	consul     discovery.ConsulConfig
	tls        host.TLS
	faults     host.Faults
	catalog    string
	catalogTLS tlsconfig.BackendConfig
	statusStep time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.addr, "addr", host.DefaultAddr, "gRPC listen address")
	consulCfg := host.ConsulFlags(flag.CommandLine)
	tlsCfg := host.TLSFlags(flag.CommandLine)
	faults := host.FaultFlags(flag.CommandLine)
	flag.StringVar(&cfg.catalog, "catalog", "catalog", "Consul service name of the catalog")
	flag.StringVar(&cfg.catalogTLS.CAFile, "catalog-ca", "", "call the catalog over TLS, verifying its certificate with this CA (PEM)")
	flag.StringVar(&cfg.catalogTLS.CertFile, "catalog-cert", "", "the client certificate to present to the catalog (PEM)")
	flag.StringVar(&cfg.catalogTLS.KeyFile, "catalog-key", "", "the key of -catalog-cert (PEM)")
	flag.DurationVar(&cfg.statusStep, "status-step", 5*time.Second, "time an order spends in each status before it moves on; 0 disables")
	flag.Parse()
	cfg.consul, cfg.tls, cfg.faults = *consulCfg, *tlsCfg, *faults

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(cfg, logger); err != nil {
		logger.Error("orders failed", "err", err)
		os.Exit(1)
	}
}

func run(cfg config, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	consul, err := discovery.NewConsulClient(cfg.consul)
	if err != nil {
		return err
	}
	// Dial does no network I/O: the catalog may start after orders, and
	// CreateOrder reports Unavailable until it does.
	var catalogTLS *tlsconfig.BackendConfig
	if cfg.catalogTLS != (tlsconfig.BackendConfig{}) {
		catalogTLS = &cfg.catalogTLS
	}
	cc, err := host.Dial(consul, cfg.catalog, catalogTLS, logger)
	if err != nil {
		return fmt.Errorf("catalog client: %w", err)
	}
	defer cc.Close()
	if err := cc.Start(ctx); err != nil {
		return err
	}

	srv := orders.NewServer(catalogv1.NewCatalogServiceClient(cc), orders.WithStatusStep(cfg.statusStep))
	// Runs after host.Run has stopped the gRPC server, so no call is left
	// that could still need a status step.
	defer srv.Close()

	logger.Info("catalog via consul", "service", cfg.catalog, "status_step", cfg.statusStep)
	return host.Run(ctx, host.Config{
		Name:     "orders",
		Addr:     cfg.addr,
		Register: func(s *grpc.Server) { ordersv1.RegisterOrderServiceServer(s, srv) },
		TLS:      cfg.tls,
		Faults:   cfg.faults,
	}, consul, logger)
}
