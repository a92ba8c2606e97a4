package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portico-gw/portico/bench/internal/load"
	"github.com/portico-gw/portico/bench/internal/report"
	"github.com/portico-gw/portico/bench/internal/servers"
	"github.com/portico-gw/portico/discovery"
)

// faultyName is the workload that measures success, not speed: selected
// with -workloads like the others, but it runs servers of its own.
const faultyName = "faulty"

// faultyMaxTime bounds each path's calls, so a path that hangs cannot
// hold the run.
const faultyMaxTime = 30 * time.Second

// parseRates reads -faulty-rates: shares between 0 and 1.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 || r > 1 {
			return nil, fmt.Errorf("-faulty-rates: %q is not a share above 0 and at most 1", f)
		}
		out = append(out, r)
	}
	return out, nil
}

// faulty runs the faulty-instance workload (issue 13) once per fail rate:
// three instances of the canned backend under a Consul service of their
// own, one of them answering UNAVAILABLE to that share of its calls while
// its health check passes; a Portico of its own routing to them through
// Consul with its default resilience (retries of idempotent methods,
// outlier ejection); nginx grpc_pass to a static upstream of the same
// three (servers.NginxFailover); and a healthy and the faulty instance
// called directly. Each path gets the same bounded count of GetProduct
// calls over native gRPC; the report says how many succeeded.
func (b *bench) faulty(ctx context.Context) error {
	if b.run.Date == "" {
		b.run.Date = time.Now().UTC().Format(time.RFC3339)
	}
	if b.run.Settings == nil {
		b.run.Settings = map[string]string{}
	}
	b.run.Settings["faulty"] = fmt.Sprintf("three instances of the backend, one answering UNAVAILABLE to the given share of its calls "+
		"while its health check passes; %d GetProduct calls per path over native gRPC, %d in flight, at most %s; "+
		"Portico with its default resilience (up to 3 attempts on UNAVAILABLE for idempotent methods, ejection after 5 consecutive failures)",
		b.s.faultyCalls, b.s.concurrency, faultyMaxTime)
	get := load.Workloads()[slices.IndexFunc(load.Workloads(), func(w load.Workload) bool { return w.Name == "get" })]
	for i, rate := range b.s.faultyRates {
		if err := b.faultySet(ctx, fmt.Sprintf("%s-faulty-%d", servers.BackendName, i+1), rate, get); err != nil {
			return fmt.Errorf("faulty workload at -fail-rate %g: %w", rate, err)
		}
	}
	return nil
}

// faultySet measures every path against one set of three instances, the
// last at failRate, and stops the set's servers when done.
func (b *bench) faultySet(ctx context.Context, service string, failRate float64, get load.Workload) error {
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	var instances []string
	for _, rate := range []float64{0, 0, failRate} {
		p, r, err := b.child(ctx, roleBackend, "-consul", b.consulAddr, "-service", service, "-fail-rate", strconv.FormatFloat(rate, 'g', -1, 64))
		if err != nil {
			return err
		}
		stops = append(stops, p.Stop)
		instances = append(instances, r.GRPC)
	}
	// Portico starts once Consul lists all three, so that its first view
	// of the backend is the whole set.
	if err := waitPassing(ctx, b.consulAddr, service, len(instances)); err != nil {
		return err
	}
	p, portico, err := b.child(ctx, rolePortico, "-consul", b.consulAddr, "-service", service,
		"-access-log", filepath.Join(b.tmp, service+"-access.log"))
	if err != nil {
		return err
	}
	stops = append(stops, p.Stop)
	paths := []struct{ name, addr string }{{report.Portico, portico.GRPC}}
	dir := filepath.Join(b.tmp, "nginx-"+service)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if np, addr, version, err := servers.NginxFailover(ctx, dir, instances); err != nil {
		b.run.Notes = append(b.run.Notes, "nginx was not measured in the faulty workload: "+err.Error())
		fmt.Fprintln(os.Stderr, "nginx (faulty):", err)
	} else {
		stops = append(stops, np.Stop)
		paths = append(paths, struct{ name, addr string }{report.Nginx, addr})
		b.run.Host["nginx"] = version
		b.run.Settings["faulty_nginx"] = servers.NginxFailoverDescription()
	}
	paths = append(paths, struct{ name, addr string }{report.DirectHealthy, instances[0]},
		struct{ name, addr string }{report.DirectFaulty, instances[2]})

	for _, path := range paths {
		c, err := load.DialGRPC(path.addr, 1)
		if err != nil {
			return err
		}
		call := c.Call(get)
		// A proxy is warm once it has answered: Portico has its instances
		// from Consul, nginx its upstream connection.
		if path.name == report.Portico || path.name == report.Nginx {
			if err := answered(ctx, call); err != nil {
				c.Close()
				return fmt.Errorf("%s: %w", path.name, err)
			}
		}
		t := load.Bounded(ctx, call, b.s.concurrency, b.s.faultyCalls, faultyMaxTime)
		c.Close()
		ph := &report.FaultyPhase{
			FailRate: failRate, Path: path.name, Calls: t.Calls, Succeeded: t.OK, Failures: t.Failures, FirstErr: t.FirstErr,
			Seconds: t.Elapsed.Seconds(), P50: float64(t.Latency.ValueAtQuantile(50)), P99: float64(t.Latency.ValueAtQuantile(99)),
		}
		if t.Calls > 0 {
			ph.Ratio = float64(t.OK) / float64(t.Calls)
		}
		b.run.Faulty = append(b.run.Faulty, ph)
		fmt.Fprintf(os.Stderr, "faulty %g %s: %d of %d succeeded (%.2f%%)\n", failRate, path.name, t.OK, t.Calls, 100*ph.Ratio)
	}
	return nil
}

// answered waits until call succeeds once, for up to 30 s.
func answered(ctx context.Context, call load.Call) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := call(ctx, 0)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("never answered: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitPassing waits until Consul lists n passing instances of service.
func waitPassing(ctx context.Context, consulAddr, service string, n int) error {
	consul, err := discovery.NewConsulClient(discovery.ConsulConfig{Address: consulAddr})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _, err := consul.Health().Service(service, "", true, nil)
		if err == nil && len(entries) == n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %d of %d instances passing in Consul (%v)", service, len(entries), n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
