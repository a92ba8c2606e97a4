// Command gateway runs the Portico gateway: REST/JSON and native gRPC in
// front of the backends that Consul knows of.
//
//	gateway [-config portico.yaml] [-http-addr ...] [-grpc-addr ...] [-admin-addr ...]
//	gateway -routes   # print the route table and exit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gen/registry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (optional)")
	httpAddr := fs.String("http-addr", "", "REST listen address (default 127.0.0.1:8080)")
	grpcAddr := fs.String("grpc-addr", "", "gRPC listen address (default 127.0.0.1:9090)")
	adminAddr := fs.String("admin-addr", "", "admin listen address (default 127.0.0.1:9901)")
	consulAddr := fs.String("consul-addr", "", "Consul HTTP address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	printRoutes := fs.Bool("routes", false, "print the route table and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	var cfg gateway.Config
	if *configPath != "" {
		var err error
		if cfg, err = gateway.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	// Flags override the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "http-addr":
			cfg.HTTPAddr = *httpAddr
		case "grpc-addr":
			cfg.GRPCAddr = *grpcAddr
		case "admin-addr":
			cfg.AdminAddr = *adminAddr
		case "consul-addr":
			cfg.Consul.Address = *consulAddr
		}
	})

	var handler slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if *logFormat == "text" {
		handler = slog.NewTextHandler(os.Stderr, nil)
	}
	logger := slog.New(handler)

	gw, err := gateway.New(cfg, registry.Services(), gateway.WithLogger(logger))
	if err != nil {
		return err
	}
	if *printRoutes {
		return gateway.PrintRoutes(os.Stdout, gw.Routes())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := gw.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	logger.Info("shutting down", "grace", gw.ShutdownGrace().String())
	sctx, cancel := context.WithTimeout(context.Background(), gw.ShutdownGrace())
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil {
		logger.Warn("shutdown cut in-flight calls short", "error", err)
	}
	logger.Info("stopped")
	return nil
}
