// Command porticobench is the side-by-side benchmark of issue 6: the same
// requests to one backend directly, through Portico with its policy chain on
// and off, through a bare grpc-gateway and vanguard (REST), and through
// nginx's grpc_pass (native gRPC), all on loopback, all in one run. Issue 12
// adds TLS: Portico, nginx (gRPC) and grpc-gateway (REST) again with TLS on
// their client listeners, each compared with itself in plaintext. Issue 13
// adds the faulty workload (faulty.go): how many calls succeed through
// Portico and through nginx when one of three instances fails calls.
// Issue 16 runs every path in rounds and reports the median with the min
// and max, and adds the feature paths: Portico with its edge limits,
// retries or circuit breaker off, to measure what each costs.
//
//	porticobench [flags]              run everything, write bench/results
//	porticobench serve ROLE [flags]   one server (the benchmark runs itself)
//
// Each server runs in a process of its own, so a proxy's CPU time,
// allocations and memory are its own and not the load generator's.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/portico-gw/portico/bench/internal/servers"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/portico-gw/portico/internal/gctune"
	"github.com/portico-gw/portico/services/host"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 2 && os.Args[1] == "serve" {
		err = serve(ctx, os.Args[2], os.Args[3:])
	} else {
		err = run(ctx, os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "porticobench:", err)
		os.Exit(1)
	}
}

// Server roles.
const (
	roleBackend     = "backend"
	rolePortico     = "portico"
	roleGRPCGateway = "grpc-gateway"
	roleVanguard    = "vanguard"
	roleFloor       = "floor"
)

// The features a Portico child turns off (-off), by name.
const (
	offLimits  = "limits"
	offRetries = "retries"
	offBreaker = "breaker"
)

var featureOptions = map[string]func() servers.Option{
	offLimits:  servers.WithLooseLimits,
	offRetries: servers.WithoutRetries,
	offBreaker: servers.WithoutCircuitBreaker,
}

func serve(ctx context.Context, role string, args []string) error {
	fs := flag.NewFlagSet("serve "+role, flag.ContinueOnError)
	ready := fs.String("ready", "", "file to write the listen addresses to")
	consulAddr := fs.String("consul", "", "Consul HTTP address")
	backend := fs.String("backend", "", "backend gRPC address")
	chain := fs.Bool("chain", true, "portico: run the policy chain")
	accessLog := fs.String("access-log", "", "portico: access log file")
	service := fs.String("service", servers.BackendName, "backend: the Consul service to register as; portico: the one both example services route to")
	off := fs.String("off", "", "portico: features to turn off, comma-separated: "+strings.Join(slices.Sorted(maps.Keys(featureOptions)), ", "))
	faults := host.FaultFlags(fs) // backend
	var tc tlsconfig.Config
	fs.StringVar(&tc.CertFile, "tls-cert", "", "portico, grpc-gateway: serve TLS with this certificate (PEM)")
	fs.StringVar(&tc.KeyFile, "tls-key", "", "portico, grpc-gateway: the certificate's key (PEM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tlsConf *tlsconfig.Config // nil: plaintext
	if tc.CertFile != "" {
		tlsConf = &tc
	}
	if role != roleBackend {
		// Every proxy collects garbage at the target cmd/gateway ships
		// with, so that ratios compare the proxies' code, not GC settings.
		gctune.Apply()
	}
	switch role {
	case roleBackend:
		return servers.Backend(ctx, *consulAddr, *service, *faults, *ready)
	case rolePortico:
		opts := []servers.Option{servers.WithBackend(*service)}
		for f := range strings.SplitSeq(*off, ",") {
			if f == "" {
				continue
			}
			o, ok := featureOptions[f]
			if !ok {
				return fmt.Errorf("-off: unknown feature %q", f)
			}
			opts = append(opts, o())
		}
		return servers.Portico(ctx, *consulAddr, *chain, *accessLog, tlsConf, *ready, opts...)
	case roleGRPCGateway:
		return servers.GRPCGateway(ctx, *backend, tlsConf, *ready)
	case roleVanguard:
		return servers.Vanguard(ctx, *backend, *ready)
	case roleFloor:
		return servers.Floor(ctx, *backend, *ready)
	}
	return fmt.Errorf("unknown role %q", role)
}
