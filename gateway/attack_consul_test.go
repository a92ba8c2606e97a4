package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	"google.golang.org/grpc"
)

// consulAttack is a world on its own Consul agent with the gateway
// registered in it, one catalog instance, and both their logs captured.
type consulAttack struct {
	*world
	catalogHost    *host.Host
	gwLog, hostLog *testutil.LockedBuffer
	selfService    string // the gateway's own Consul service and ID
	selfID         string
}

func newConsulAttack(t *testing.T) *consulAttack {
	t.Helper()
	a := &consulAttack{gwLog: &testutil.LockedBuffer{}, hostLog: &testutil.LockedBuffer{}, selfService: gateway.DefaultRegisterService}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log (consul attack):\n%s\ncatalog log:\n%s", a.gwLog, a.hostLog)
		}
	})
	a.world = newWorldWith(t, true, []gateway.Option{gateway.WithLogger(slog.New(slog.NewTextHandler(a.gwLog, nil)))},
		func(c *gateway.Config) {
			c.Register = gateway.RegisterConfig{Enabled: true, CheckInterval: 200 * time.Millisecond}
		})
	srv := catalog.NewServer()
	a.catalogHost = a.startHostWith(host.Config{
		Name:     a.catalog,
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, srv) },
		Logger:   slog.New(slog.NewTextHandler(a.hostLog, nil)),
	})
	// The agent is private: the gateway's own entry is the only one of its
	// service.
	testutil.Eventually(t, 20*time.Second, "the gateway's own entry passing", func() bool {
		ids := a.passingIDs(a.selfService)
		if len(ids) == 1 {
			a.selfID = ids[0]
		}
		return len(ids) == 1
	})
	if err := a.call(); err != nil {
		t.Fatalf("before the attack: %v", err)
	}
	return a
}

// passingIDs lists the passing instances of service; none while Consul
// cannot be reached.
func (a *consulAttack) passingIDs(service string) []string {
	entries, _, err := a.consul.Health().Service(service, "", true, nil)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

// call lists products through both doors of the gateway.
func (a *consulAttack) call() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.catalogClient().ListProducts(ctx, &catalogv1.ListProductsRequest{}); err != nil {
		return err
	}
	if r := a.rest("GET", "/v1/products", nil); r.Status != 200 {
		return fmt.Errorf("GET /v1/products: %d %s", r.Status, r.Raw)
	}
	return nil
}

// waitCalls waits until calls through the gateway succeed, and names the
// last failure if they never do.
func (a *consulAttack) waitCalls(t *testing.T, deadline time.Time) {
	t.Helper()
	var last error
	defer func() {
		if t.Failed() && last != nil {
			t.Logf("last call: %v", last)
		}
	}()
	untilDeadline(t, deadline, "calls through the gateway succeeding", func() bool {
		last = a.call()
		return last == nil
	})
}

// untilDeadline is testutil.Eventually with a deadline shared by several
// waits, so that together they stay within one budget.
func untilDeadline(t *testing.T, deadline time.Time, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, time.Until(deadline), what, cond)
}

// TestAttackConsulRestartEmpty restarts the Consul agent with empty state
// under a serving gateway and catalog instance. Nothing else is restarted:
// within 10s the instance and the gateway are registered again, and calls
// through the gateway succeed again.
func TestAttackConsulRestartEmpty(t *testing.T) {
	a := newConsulAttack(t)

	a.agent.Restart(t)
	back := time.Now()
	deadline := back.Add(10 * time.Second)
	untilDeadline(t, deadline, "the catalog instance passing again", func() bool {
		return slices.Contains(a.passingIDs(a.catalog), a.catalogHost.ID())
	})
	catalogBack := time.Since(back)
	untilDeadline(t, deadline, "the gateway's own entry passing again", func() bool {
		return slices.Contains(a.passingIDs(a.selfService), a.selfID)
	})
	selfBack := time.Since(back)
	a.waitCalls(t, deadline)
	callsBack := time.Since(back)
	t.Logf("after the agent came back empty: catalog registered and passing in %v, gateway in %v, calls through both doors OK in %v",
		catalogBack.Round(time.Millisecond), selfBack.Round(time.Millisecond), callsBack.Round(time.Millisecond))

	for _, l := range []struct {
		name string
		log  *testutil.LockedBuffer
	}{{"catalog", a.hostLog}, {"gateway", a.gwLog}} {
		if !strings.Contains(l.log.String(), "registered again") {
			t.Errorf("the %s's log does not say it registered again", l.name)
		}
	}
}

// TestAttackConsulOutage takes Consul away: the gateway says so (log,
// portico_consul_up 0) and keeps routing to the instance it knew; when an
// empty agent comes back, the instance is registered again, calls go on,
// and the gateway says for how long Consul was away.
func TestAttackConsulOutage(t *testing.T) {
	a := newConsulAttack(t)
	t0, _ := scrape(t, a.world)
	if t0["portico_consul_up"] != 1 || t0["portico_consul_unreachable_seconds_total"] != 0 {
		t.Fatalf("before the outage: portico_consul_up %v, unreachable seconds %v; want 1 and 0",
			t0["portico_consul_up"], t0["portico_consul_unreachable_seconds_total"])
	}

	a.agent.Stop()
	testutil.Eventually(t, 10*time.Second, "portico_consul_up 0", func() bool {
		m, _ := scrape(t, a.world)
		return m["portico_consul_up"] == 0
	})
	if !strings.Contains(a.gwLog.String(), "consul unreachable") {
		t.Error("the gateway's log does not say Consul is unreachable")
	}
	if err := a.call(); err != nil {
		t.Errorf("during the outage: %v; want calls routed to the last known instance", err)
	}

	a.agent.Restart(t)
	back := time.Now()
	deadline := back.Add(10 * time.Second)
	untilDeadline(t, deadline, "the catalog instance passing again", func() bool {
		return slices.Contains(a.passingIDs(a.catalog), a.catalogHost.ID())
	})
	t.Logf("catalog registered and passing again %v after the agent came back empty", time.Since(back).Round(time.Millisecond))
	untilDeadline(t, deadline, "portico_consul_up 1", func() bool {
		m, _ := scrape(t, a.world)
		return m["portico_consul_up"] == 1
	})
	a.waitCalls(t, deadline)
	m, _ := scrape(t, a.world)
	if m["portico_consul_unreachable_seconds_total"] <= 0 {
		t.Errorf("portico_consul_unreachable_seconds_total = %v after an outage, want > 0", m["portico_consul_unreachable_seconds_total"])
	}
	if !strings.Contains(a.gwLog.String(), "consul reachable again") {
		t.Error("the gateway's log does not say Consul is reachable again")
	}
}
