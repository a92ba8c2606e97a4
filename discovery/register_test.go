package discovery_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
)

// keepOpts make a Registered check often and retry fast, and log to buf.
func keepOpts(buf *testutil.LockedBuffer) []discovery.Option {
	return []discovery.Option{
		discovery.WithKeepRegistered(100 * time.Millisecond),
		discovery.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		discovery.WithLogger(slog.New(slog.NewTextHandler(buf, nil))),
	}
}

// passing reports whether Consul lists the instance as passing.
func passing(client *api.Client, service, id string) bool {
	entries, _, err := client.Health().Service(service, "", true, nil)
	return err == nil && slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == id })
}

// present reports whether the agent has the entry, passing or not.
func present(t *testing.T, client *api.Client, id string) bool {
	t.Helper()
	services, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	_, ok := services[id]
	return ok
}

// An agent restarted with empty state gets the entry back, same ID and
// same check, without the instance doing anything.
func TestRegisteredComesBackAfterAgentRestart(t *testing.T) {
	agent := testconsul.New(t) // private: this test restarts it
	client := agent.Client(t)
	_, port := healthServer(t)
	var logs testutil.LockedBuffer
	reg, err := discovery.Register(context.Background(), client, discovery.Registration{
		Service: "kept", Address: "127.0.0.1", Port: port, CheckInterval: 200 * time.Millisecond,
	}, keepOpts(&logs)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	testutil.Eventually(t, 10*time.Second, "the instance passing", func() bool { return passing(client, "kept", reg.ID()) })

	agent.Restart(t)
	back := time.Now()
	testutil.Eventually(t, 10*time.Second, "the instance passing again after the restart", func() bool { return passing(client, "kept", reg.ID()) })
	t.Logf("registered and passing again %v after the agent came back empty", time.Since(back).Round(time.Millisecond))

	checks, err := client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	c := checks["service:"+reg.ID()]
	if c == nil || c.Type != "grpc" || c.ServiceID != reg.ID() {
		t.Errorf("check after re-registration = %+v; want the same gRPC check", c)
	}
	if !strings.Contains(logs.String(), "registered again") {
		t.Errorf("no log line says the entry was registered again:\n%s", logs.String())
	}

	// Deregister stops the keeping first: once it returns, nothing puts
	// the entry back.
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if present(t, client, reg.ID()) {
		t.Error("entry still present after Deregister")
	}
}

// An entry that Consul dropped (critical longer than DeregisterAfter, as
// for a process paused that long) comes back once the process runs; Close
// stops the keeping and leaves the entry in Consul.
func TestRegisteredComesBackAfterConsulDropsIt(t *testing.T) {
	client := testconsul.Shared(t).Client(t)
	_, port := healthServer(t)
	var logs testutil.LockedBuffer
	reg, err := discovery.Register(context.Background(), client, discovery.Registration{
		Service: "dropped", Address: "127.0.0.1", Port: port,
	}, keepOpts(&logs)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })

	if err := client.Agent().ServiceDeregister(reg.ID()); err != nil { // what Consul's reaper does
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the dropped entry back", func() bool { return present(t, client, reg.ID()) })

	reg.Close()
	reg.Close() // twice is fine
	if !present(t, client, reg.ID()) {
		t.Error("Close removed the entry; want it left, as a crash would")
	}
}

// While Consul is away the keeping says so and retries with backoff;
// when it is back, empty, the entry is registered again and the log says
// for how long Consul was away.
func TestRegisteredKeepsTryingWhileConsulIsAway(t *testing.T) {
	agent := testconsul.New(t)
	client := agent.Client(t)
	_, port := healthServer(t)
	var logs testutil.LockedBuffer
	reg, err := discovery.Register(context.Background(), client, discovery.Registration{
		Service: "away", Address: "127.0.0.1", Port: port, CheckInterval: 200 * time.Millisecond,
	}, keepOpts(&logs)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })

	agent.Stop()
	testutil.Eventually(t, 10*time.Second, "a log line saying the check failed", func() bool {
		return strings.Contains(logs.String(), "checking the consul registration failed")
	})
	agent.Restart(t)
	testutil.Eventually(t, 10*time.Second, "the instance passing again", func() bool { return passing(client, "away", reg.ID()) })
	for _, want := range []string{"checking the consul registration works again", "away=", "registered again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// With the keeping off, Register is a single registration: Close has
// nothing to stop and Deregister still works.
func TestRegisterWithoutKeeping(t *testing.T) {
	client := testconsul.Shared(t).Client(t)
	_, port := healthServer(t)
	reg, err := discovery.Register(context.Background(), client, discovery.Registration{Service: "unkept", Address: "127.0.0.1", Port: port},
		discovery.WithKeepRegistered(0))
	if err != nil {
		t.Fatal(err)
	}
	reg.Close()
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if present(t, client, reg.ID()) {
		t.Error("entry still present after Deregister")
	}
}
