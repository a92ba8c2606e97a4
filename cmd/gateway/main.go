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
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/portico-gw/portico/gen/openapi"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/gctune"
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
	logFormat := fs.String("log-format", "json", "log and access log format: json or text")
	printRoutes := fs.Bool("routes", false, "print the route table and exit")
	newKey := fs.String("new-api-key", "", "issue an API key for this consumer, print it with its hash, and exit")
	keyScopes := fs.String("scopes", "", "with -new-api-key: comma-separated scopes")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	if *newKey != "" {
		return issueAPIKey(os.Stdout, *newKey, *keyScopes)
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
	if cfg.Stats.AccessLog.Format == "" {
		// The access log (standard output) follows -log-format unless the file says otherwise.
		cfg.Stats.AccessLog.Format = *logFormat
	}

	gw, err := gateway.New(cfg, registry.Services(), gateway.WithLogger(logger), gateway.WithOpenAPI(openapi.Document))
	if err != nil {
		return err
	}
	if *printRoutes {
		return route.Print(os.Stdout, gw.Routes(), route.WithCredentialKinds(gw.CredentialKinds()))
	}

	gogc, from := gctune.Apply()
	logger.Info("garbage collector", "gogc", gogc, "from", from)
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

// issueAPIKey prints a new API key once, with what to store instead of it:
// the gateway keeps only the SHA-256.
func issueAPIKey(w io.Writer, consumer, scopes string) error {
	key, hash, err := auth.NewAPIKey()
	if err != nil {
		return err
	}
	var list []string
	for _, s := range strings.Split(scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	kv, err := auth.KVValue(consumer, list)
	if err != nil {
		return err
	}
	quoted := make([]string, len(list))
	for i, s := range list {
		quoted[i] = strconv.Quote(s)
	}
	fmt.Fprintf(w, `API key for %[1]s (shown once; give it to the consumer, store only the hash):

  %[2]s

In the gateway config file:

  auth:
    api_keys:
      - consumer: %[1]s
        sha256: %[3]s
        scopes: [%[4]s]

Or in Consul KV, under auth.api_keys_consul_prefix (portico/apikeys/ here):

  consul kv put portico/apikeys/%[3]s '%[5]s'

Revoke it by removing the entry (consul kv delete portico/apikeys/%[3]s).
`, consumer, key, hash, strings.Join(quoted, ", "), kv)
	return nil
}
