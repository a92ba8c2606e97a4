package host

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
)

// A Host keeps its Consul entry: an agent restarted with empty state has it
// again within seconds (discovery's default check, every 2s), and the Host
// logs that it registered again. Kill leaves the entry, as a crash would;
// Stop removes it.
func TestHostRegistersAgainAfterConsulRestart(t *testing.T) {
	agent := testconsul.New(t) // private: this test restarts it
	client := agent.Client(t)
	var logs testutil.LockedBuffer
	h, err := Start(testCtx(t), Config{
		Name:          "catalog",
		Register:      func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer()) },
		CheckInterval: 200 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	}, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)
	passing := func() bool {
		entries, _, err := client.Health().Service("catalog", "", true, nil)
		return err == nil && slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == h.ID() })
	}
	testutil.Eventually(t, 10*time.Second, "the instance passing", passing)

	agent.Restart(t)
	back := time.Now()
	testutil.Eventually(t, 10*time.Second, "the instance passing again after the agent came back empty", passing)
	t.Logf("registered and passing again %v after the agent came back empty", time.Since(back).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "registered again") {
		t.Errorf("the host's log does not say it registered again:\n%s", logs.String())
	}

	h.Kill()
	if _, _, err := client.Agent().Service(h.ID(), nil); err != nil {
		t.Errorf("after Kill the entry is gone (%v); want it left for Consul's check to fail", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if services, err := client.Agent().Services(); err != nil || services[h.ID()] != nil {
		t.Errorf("after Stop: services %v (%v); want the entry gone", services, err)
	}
}
