package servers

import (
	"context"
	"time"

	"github.com/portico-gw/portico/bench/internal/backend"
	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/services/host"
)

// Backend serves the canned catalog and orders APIs and registers them in
// the Consul agent at consulAddr, as service (BackendName but for the
// faulty workload's instances), misbehaving as faults say.
func Backend(ctx context.Context, consulAddr, service string, faults host.Faults, readyPath string) error {
	consul, err := discovery.NewConsulClient(discovery.ConsulConfig{Address: consulAddr})
	if err != nil {
		return err
	}
	h, err := host.Start(ctx, host.Config{Name: service, Register: backend.Register, CheckInterval: time.Second, Faults: faults}, consul)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.Stop(sctx)
	}()
	return ready(ctx, readyPath, procs.Ready{GRPC: h.Addr()})
}
