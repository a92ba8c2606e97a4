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
// the Consul agent at consulAddr, as BackendName.
func Backend(ctx context.Context, consulAddr, readyPath string) error {
	consul, err := discovery.NewConsulClient(discovery.ConsulConfig{Address: consulAddr})
	if err != nil {
		return err
	}
	h, err := host.Start(ctx, host.Config{Name: BackendName, Register: backend.Register, CheckInterval: time.Second}, consul)
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
