package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portico-gw/portico/bench/internal/chainprof"
	"github.com/portico-gw/portico/bench/internal/load"
	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/bench/internal/report"
	"github.com/portico-gw/portico/bench/internal/servers"
	"github.com/portico-gw/portico/gateway/tlsconfig"
	"github.com/portico-gw/portico/internal/certs"
	"github.com/portico-gw/portico/internal/testconsul"
)

type settings struct {
	out         string
	closed      time.Duration
	rounds      int
	concurrency int
	conns       int
	open, warm  time.Duration
	openWorkers int
	openRounds  int // at the common rate
	profile     time.Duration
	phases      []phase // profiled: mode and workload
	nochain     bool    // profile portico-nochain too
	workloads   []load.Workload
	modes       []string // in the order of report.Modes
	keep        bool
	render      string
	features    bool // the feature paths (report.Features)
	faulty      bool // the faulty-instance workload (faulty.go)
	faultyCalls int64
	faultyRates []float64
}

func parseSettings(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("porticobench", flag.ContinueOnError)
	fs.StringVar(&s.out, "out", "results", "directory for latest.json, latest.png, latest.md and the profiles")
	fs.DurationVar(&s.closed, "closed", time.Second, "closed-loop time per path and round")
	fs.IntVar(&s.rounds, "rounds", 5, "closed-loop rounds; each round runs every path once, in a rotated order, and the report gives the median with the min and max")
	fs.IntVar(&s.concurrency, "concurrency", 32, "closed-loop requests in flight")
	fs.IntVar(&s.conns, "conns", 16, "gRPC connections in the many-connections mode")
	fs.DurationVar(&s.open, "open", 1500*time.Millisecond, "open-loop time per path and rate")
	fs.DurationVar(&s.warm, "warm", 300*time.Millisecond, "open-loop warm-up per path, not recorded")
	fs.IntVar(&s.openWorkers, "open-workers", 128, "open-loop senders (the most requests in flight)")
	fs.IntVar(&s.openRounds, "open-rounds", 3, "open-loop rounds at the common rate, where p99 is checked; each round runs every path once, in a rotated order, and the report gives the median round's latency with the rounds' p99 min and max")
	fs.DurationVar(&s.profile, "profile", 10*time.Second, "pprof capture per profiled phase; 0 skips profiling")
	phases := fs.String("profile-phases", report.GRPC+":get,"+report.GRPC+":create,"+report.REST+":create,"+report.REST+":get", "profiled phases, mode:workload each")
	fs.BoolVar(&s.nochain, "profile-nochain", true, "profile portico-nochain too, in the same phases, for a profile of the chain's difference")
	names := fs.String("workloads", "get,list,create,stream,"+faultyName, "workloads to run; "+faultyName+" counts successes against a backend set with a faulty instance")
	modes := fs.String("modes", strings.Join(report.Modes(), ","), "modes to run; a TLS mode brings its plaintext counterpart, which it is compared with")
	fs.BoolVar(&s.features, "features", true, "closed loop only: Portico with its edge limits, retries and circuit breaker off, each and all three, on "+
		strings.Join(report.FeatureModes, ", ")+" for "+strings.Join(report.FeatureWorkloads, ", "))
	fs.BoolVar(&s.keep, "keep", false, "keep the temporary directory (logs, nginx config)")
	fs.StringVar(&s.render, "render", "", "measure nothing: rewrite the table and chart from this latest.json")
	fs.Int64Var(&s.faultyCalls, "faulty-calls", 2000, "faulty workload: GetProduct calls per path and fail rate")
	rates := fs.String("faulty-rates", "0.5,1", "faulty workload: the faulty instance's fail rates, one backend set each")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	for _, p := range strings.Split(*phases, ",") {
		mode, workload, ok := strings.Cut(strings.TrimSpace(p), ":")
		if !ok || mode == "" || workload == "" {
			return s, fmt.Errorf("-profile-phases %q: want mode:workload, comma-separated", *phases)
		}
		s.phases = append(s.phases, phase{mode, workload})
	}
	if s.rounds < 1 {
		return s, fmt.Errorf("-rounds %d: want at least 1", s.rounds)
	}
	if s.openRounds < 1 {
		return s, fmt.Errorf("-open-rounds %d: want at least 1", s.openRounds)
	}
	var err error
	if s.faultyRates, err = parseRates(*rates); err != nil {
		return s, err
	}
	for _, n := range strings.Split(*names, ",") {
		if n == faultyName {
			s.faulty = true
			continue
		}
		all := load.Workloads()
		i := slices.IndexFunc(all, func(w load.Workload) bool { return w.Name == n })
		if i < 0 {
			return s, fmt.Errorf("unknown workload %q", n)
		}
		s.workloads = append(s.workloads, all[i])
	}
	want := map[string]bool{}
	for _, m := range strings.Split(*modes, ",") {
		if !slices.Contains(report.Modes(), m) {
			return s, fmt.Errorf("unknown mode %q (modes: %s)", m, strings.Join(report.Modes(), ","))
		}
		want[m], want[report.Plain(m)] = true, true
	}
	for _, m := range report.Modes() {
		if want[m] {
			s.modes = append(s.modes, m)
		}
	}
	return s, nil
}

// runs reports whether the run measures a mode that keep selects.
func (s settings) runs(keep func(mode string) bool) bool { return slices.ContainsFunc(s.modes, keep) }

// target is one path to the backend: a process (none for direct) whose
// listeners serve plaintext or, for the TLS modes, TLS.
type target struct {
	name    string
	tls     bool
	feature bool           // a feature path: closed loop only, on report.FeatureModes and FeatureWorkloads
	addr    string         // the gRPC listener, or else the REST one
	proc    *procs.Process // nil for direct
	debug   string         // Go child's debug listener; "" for nginx and direct
	clients map[string]client
	rss     int64 // peak seen
}

// client is a load.GRPCClient or a load.RESTClient.
type client interface {
	Call(load.Workload) load.Call
	Close()
}

func (t *target) call(mode string, w load.Workload) load.Call { return t.clients[mode].Call(w) }

// serves reports whether t takes w in mode.
func (t *target) serves(mode string, w load.Workload) bool {
	// Vanguard streams over REST only google.api.HttpBody.
	// The browser protocols are measured on unary calls.
	return t.clients[mode] != nil && !(t.name == report.Vanguard && report.IsREST(mode) && w.Name == "stream") &&
		!(report.IsWeb(mode) && w.Name == "stream") &&
		!(t.feature && !slices.Contains(report.FeatureWorkloads, w.Name))
}

// label names t's process, which a TLS path does not share with the
// plaintext path of the same name.
func (t *target) label() string {
	if t.tls {
		return t.name + " (TLS)"
	}
	return t.name
}

type bench struct {
	s       settings
	tmp     string
	self    string
	stop    []func()
	targets []*target
	tlsNote string // what the TLS paths negotiate
	run     report.Run
	// consulAddr is the agent's HTTP address.
	consulAddr string
}

func run(ctx context.Context, args []string) error {
	s, err := parseSettings(args)
	if err != nil {
		return err
	}
	b := &bench{s: s}
	if s.render != "" {
		data, err := os.ReadFile(s.render)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &b.run); err != nil {
			return fmt.Errorf("%s: %w", s.render, err)
		}
		// Today's targets, also for a run written before them (one round).
		b.run.CheckTargets()
		return b.write()
	}
	defer b.close()
	if err := b.start(ctx); err != nil {
		return err
	}
	began := time.Now()
	if len(s.workloads) > 0 {
		if err := b.measure(ctx); err != nil {
			return err
		}
	}
	if s.faulty {
		if err := b.faulty(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "measured in %s\n", time.Since(began).Round(time.Second))
	return b.write()
}

func (b *bench) close() {
	for _, t := range b.targets {
		for _, c := range t.clients {
			c.Close()
		}
	}
	for i := len(b.stop) - 1; i >= 0; i-- {
		b.stop[i]()
	}
	if b.tmp != "" && !b.s.keep {
		os.RemoveAll(b.tmp)
	}
}

func (b *bench) start(ctx context.Context) error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "porticobench-"); err != nil {
		return err
	}
	if b.s.keep {
		fmt.Fprintln(os.Stderr, "logs and configs in", b.tmp)
	}
	bin, err := testconsul.Binary()
	if err != nil {
		return err
	}
	agent, err := testconsul.Start(bin)
	if err != nil {
		return err
	}
	b.stop = append(b.stop, agent.Stop)
	consulAddr := agent.Addr
	b.consulAddr = consulAddr
	b.run.Host = map[string]string{"machine": fmt.Sprintf("%d cores, %s/%s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH), "go": runtime.Version()}
	if len(b.s.workloads) == 0 { // the faulty workload alone starts its own servers
		return nil
	}

	_, backend, err := b.child(ctx, roleBackend, "-consul", consulAddr)
	if err != nil {
		return err
	}
	b.addTarget(report.Direct, nil, procs.Ready{GRPC: backend.GRPC}, nil)
	for _, c := range []childSpec{
		{report.Portico, []string{rolePortico, "-consul", consulAddr, "-access-log", filepath.Join(b.tmp, "portico-access.log")}},
		{report.PorticoOff, []string{rolePortico, "-consul", consulAddr, "-chain=false"}},
		{report.GRPCGateway, []string{roleGRPCGateway, "-backend", backend.GRPC}},
		{report.Floor, []string{roleFloor, "-backend", backend.GRPC}},
		{report.Vanguard, []string{roleVanguard, "-backend", backend.GRPC}},
	} {
		p, r, err := b.child(ctx, c.args[0], c.args[1:]...)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		b.addTarget(c.name, p, r, nil)
	}
	if err := b.startFeatures(ctx, consulAddr); err != nil {
		return err
	}
	if err := b.nginx(ctx, "nginx", backend.GRPC, nil, nil); err != nil {
		return err
	}
	if b.s.runs(report.IsTLS) {
		if err := b.startTLS(ctx, consulAddr, backend.GRPC); err != nil {
			return err
		}
	}
	return b.waitServing(ctx)
}

// startFeatures starts the feature paths, when the run has a mode and a
// workload they run on: Portico with its full chain, each writing its
// access log as Portico does, and with one feature off, or all three.
func (b *bench) startFeatures(ctx context.Context, consulAddr string) error {
	if !b.s.features || !b.s.runs(func(m string) bool { return slices.Contains(report.FeatureModes, m) }) ||
		!slices.ContainsFunc(b.s.workloads, func(w load.Workload) bool { return slices.Contains(report.FeatureWorkloads, w.Name) }) {
		return nil
	}
	off := map[string]string{
		report.PorticoNoLimits:   offLimits,
		report.PorticoNoRetries:  offRetries,
		report.PorticoNoBreaker:  offBreaker,
		report.PorticoNoFeatures: strings.Join([]string{offLimits, offRetries, offBreaker}, ","),
	}
	for _, f := range report.Features() {
		p, r, err := b.child(ctx, rolePortico, "-consul", consulAddr, "-off", off[f.Path],
			"-access-log", filepath.Join(b.tmp, f.Path+"-access.log"))
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		b.addTarget(f.Path, p, r, nil)
	}
	return nil
}

// startTLS starts the TLS paths: Portico with TLS on both listeners,
// grpc-gateway behind Go's crypto/tls (REST's peer) and nginx terminating
// TLS (gRPC's peer), all with one throwaway certificate.
func (b *bench) startTLS(ctx context.Context, consulAddr, backend string) error {
	files, clientConf, err := b.certificates()
	if err != nil {
		return err
	}
	withCert := []string{"-tls-cert", files.CertFile, "-tls-key", files.KeyFile}
	children := []childSpec{{report.Portico, []string{rolePortico, "-consul", consulAddr, "-access-log", filepath.Join(b.tmp, "portico-tls-access.log")}}}
	if b.s.runs(func(m string) bool { return report.IsTLS(m) && report.IsREST(m) }) {
		children = append(children, childSpec{report.GRPCGateway, []string{roleGRPCGateway, "-backend", backend}})
	}
	for _, c := range children {
		p, r, err := b.child(ctx, c.args[0], append(c.args[1:], withCert...)...)
		if err != nil {
			return fmt.Errorf("%s (TLS): %w", c.name, err)
		}
		b.addTarget(c.name, p, r, clientConf)
	}
	if b.s.runs(func(m string) bool { return m == report.GRPCTLS }) {
		if err := b.nginx(ctx, "nginx-tls", backend, files, clientConf); err != nil {
			return err
		}
	}
	b.tlsNote = b.describeTLS(clientConf)
	return nil
}

// certificates makes a throwaway CA and a server certificate for
// 127.0.0.1 (ECDSA P-256), writes the certificate and key for the servers
// and returns them with the load clients' TLS config, which trusts only
// that CA.
func (b *bench) certificates() (*tlsconfig.Config, *tls.Config, error) {
	ca, err := certs.NewCA("porticobench CA")
	if err != nil {
		return nil, nil, err
	}
	leaf, err := ca.Server("localhost", "localhost", "127.0.0.1")
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(b.tmp, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	cert, key, err := leaf.WriteFiles(dir, "server")
	if err != nil {
		return nil, nil, err
	}
	return &tlsconfig.Config{CertFile: cert, KeyFile: key}, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}, nil
}

// nginx starts nginx in tmp/dir, terminating TLS with files when they are
// given. An nginx that does not start is left out with a note: the other
// paths are still worth measuring.
func (b *bench) nginx(ctx context.Context, dir, backend string, files *tlsconfig.Config, clientConf *tls.Config) error {
	dir = filepath.Join(b.tmp, dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, addr, version, err := servers.Nginx(ctx, dir, backend, files)
	if err != nil {
		name := report.Nginx
		if files != nil {
			name += " (TLS)"
		}
		b.run.Notes = append(b.run.Notes, name+" was not measured: "+err.Error())
		fmt.Fprintln(os.Stderr, name+":", err)
		return nil
	}
	b.stop = append(b.stop, p.Stop)
	b.addTarget(report.Nginx, p, procs.Ready{GRPC: addr}, clientConf)
	b.run.Host["nginx"] = version
	return nil
}

// describeTLS says what each TLS path negotiates with a client configured
// as the load clients are: version, cipher suite and key exchange.
func (b *bench) describeTLS(clientConf *tls.Config) string {
	var out []string
	for _, t := range b.targets {
		if !t.tls {
			continue
		}
		c := clientConf.Clone()
		c.NextProtos = []string{"h2"}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", t.addr, c)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", t.name, err))
			continue
		}
		st := conn.ConnectionState()
		conn.Close()
		out = append(out, fmt.Sprintf("%s %s %s %s", t.name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID))
	}
	return strings.Join(out, "; ") + "; ECDSA P-256 certificate"
}

// childSpec is a path served by `porticobench serve`: its name in the
// report, and the role and flags.
type childSpec struct {
	name string
	args []string // role, flags
}

// child starts `porticobench serve role` and waits until it serves.
func (b *bench) child(ctx context.Context, role string, args ...string) (*procs.Process, procs.Ready, error) {
	n := len(b.stop)
	ready := filepath.Join(b.tmp, fmt.Sprintf("%s-%d.ready", role, n))
	p, err := procs.Start(b.self, filepath.Join(b.tmp, fmt.Sprintf("%s-%d.log", role, n)),
		append([]string{"serve", role, "-ready", ready}, args...)...)
	if err != nil {
		return nil, procs.Ready{}, err
	}
	b.stop = append(b.stop, p.Stop)
	r, err := procs.WaitReady(ctx, p, ready)
	if err != nil {
		return nil, r, fmt.Errorf("%s: %w", role, err)
	}
	return p, r, nil
}

// addTarget adds a path with a client for each mode of the run it serves:
// the plaintext modes or, with clientConf, the TLS modes, whose clients
// trust the run's CA.
func (b *bench) addTarget(name string, p *procs.Process, r procs.Ready, clientConf *tls.Config) {
	t := &target{name: name, tls: clientConf != nil, feature: report.IsFeature(name), addr: cmp.Or(r.GRPC, r.HTTP), proc: p, debug: r.Debug, clients: map[string]client{}}
	if name == report.Direct {
		t.debug = "" // the backend's costs are not a proxy's
	}
	scheme, opts := "http://", []load.Option(nil)
	if t.tls {
		scheme, opts = "https://", []load.Option{load.WithTLS(clientConf)}
	}
	for _, mode := range b.s.modes {
		switch {
		case t.feature && !slices.Contains(report.FeatureModes, mode):
			// The feature paths run on their modes only.
		case report.IsTLS(mode) != t.tls:
			// A mode of the other kind of listener.
		case report.IsWeb(mode):
			// Portico's REST port, and vanguard alone: grpc-gateway speaks
			// neither protocol.
			if r.HTTP != "" && (name == report.Portico || name == report.PorticoOff || name == report.Vanguard) {
				t.clients[mode] = load.NewWeb(scheme+r.HTTP, mode, max(b.s.concurrency, b.s.openWorkers))
			}
		case report.IsREST(mode) && r.HTTP != "":
			o := opts
			if mode == report.RESTH2TLS {
				o = append(slices.Clip(o), load.WithHTTP2())
			}
			t.clients[mode] = load.NewREST(scheme+r.HTTP, max(b.s.concurrency, b.s.openWorkers), o...)
		case !report.IsREST(mode) && r.GRPC != "":
			n := 1
			if mode == report.GRPCConns {
				n = b.s.conns
			}
			c, err := load.DialGRPC(r.GRPC, n, opts...)
			if err != nil {
				panic(err) // NewClient fails only on a malformed target
			}
			t.clients[mode] = c
		}
	}
	b.targets = append(b.targets, t)
}

// waitServing waits until every path answers every workload: Portico once
// Consul has listed the backend as passing.
func (b *bench) waitServing(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for _, t := range b.targets {
		for _, mode := range b.s.modes {
			for _, w := range b.s.workloads {
				if !t.serves(mode, w) {
					continue
				}
				for {
					err := t.call(mode, w)(ctx, 0)
					if err == nil {
						break
					}
					if time.Now().After(deadline) || ctx.Err() != nil {
						return fmt.Errorf("%s %s %s never answered: %w", t.name, mode, w.Name, err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}
	return nil
}

func (b *bench) measure(ctx context.Context) error {
	s := b.s
	b.run.Date = time.Now().UTC().Format(time.RFC3339)
	b.run.Settings = map[string]string{
		"closed_loop": fmt.Sprintf("%d in flight, %d rounds of %s per path", s.concurrency, s.rounds, s.closed),
		"open_loop": fmt.Sprintf("%s per path and rate after %s warm-up, up to %d in flight; at the common rate %d rounds, each path once a round in a rotated order, the median round's figures with the rounds' p99 min and max",
			s.open, s.warm, s.openWorkers, s.openRounds),
		"grpc_conns": fmt.Sprintf("%d (grpc-nconn)", s.conns),
	}
	if b.tlsNote != "" {
		b.run.Settings["tls"] = b.tlsNote
	}
	for _, w := range s.workloads {
		if n := w.BodyBytes(); n > 0 {
			b.run.Settings["body_"+w.Name] = fmt.Sprintf("%d bytes of JSON", n)
		}
	}
	// Closed loop: rounds of every path, rotated, so drift hits all alike.
	for round := range s.rounds {
		for _, mode := range s.modes {
			for _, w := range s.workloads {
				ts := b.serving(mode, w)
				for i := range ts {
					t := ts[(i+round)%len(ts)]
					if err := b.closed(ctx, t, mode, w, round == 0); err != nil {
						return err
					}
				}
			}
		}
		fmt.Fprintf(os.Stderr, "closed loop: round %d of %d done\n", round+1, s.rounds)
	}
	// Open loop, at the rate (half the reference's throughput) and
	// at half the slowest path's, which every path sustains.
	b.run.RESTReference = map[string]*report.Phase{}
	direct := b.targets[0]
	for _, mode := range s.modes {
		for _, w := range s.workloads {
			// A TLS mode runs at its plaintext counterpart's rates (that
			// mode runs first), so that a path's latencies over TLS and in
			// plaintext compare: the same issue's rate, and the same common
			// rate unless it is above 60% of a TLS path's throughput (TLS
			// makes a path slower; the common rate is half the slowest's).
			plain := report.Plain(mode)
			ref := b.run.Find(plain, w.Name, report.Reference(plain))
			ts := slices.DeleteFunc(b.serving(mode, w), func(t *target) bool { return t.feature })
			if ref == nil || ref.PerSecond == 0 || len(ts) == 0 {
				continue
			}
			slowest := ref.PerSecond
			for _, t := range ts {
				slowest = min(slowest, b.run.Find(mode, w.Name, t.name).PerSecond)
			}
			common := slowest / 2
			if report.IsTLS(mode) && ref.Common != nil && ref.Common.Rate <= 0.6*slowest {
				common = ref.Common.Rate
			}
			var base *report.Phase
			if mode == report.REST && direct.serves(report.GRPC, w) {
				// What the transcoding proxies add is measured over the direct
				// gRPC call (when the run has the gRPC mode that makes it).
				base = &report.Phase{Mode: report.GRPC, Workload: w.Name, Path: report.Direct}
				b.run.RESTReference[w.Name] = base
			}
			type openPath struct {
				p      *report.Phase
				call   load.Call
				served float64 // closed loop; 0: unknown
			}
			var paths []openPath
			if base != nil {
				paths = append(paths, openPath{base, direct.call(report.GRPC, w), 0})
			}
			for _, t := range ts {
				p := b.run.Find(mode, w.Name, t.name)
				paths = append(paths, openPath{p, t.call(mode, w), p.PerSecond})
			}
			// The common rate, where the p99 targets are checked, in rounds
			// as the closed loop runs them: each path once a round, in a
			// rotated order.
			for _, at := range []struct {
				rate   float64
				rounds int
				set    func(*report.Phase, *report.Latency)
			}{
				{ref.PerSecond / 2, 1, func(p *report.Phase, l *report.Latency) { p.Half = l }},
				{common, s.openRounds, func(p *report.Phase, l *report.Latency) { p.Common = l }},
			} {
				got := make([][]*report.Latency, len(paths))
				for round := range at.rounds {
					for i := range paths {
						j := (i + round) % len(paths)
						got[j] = append(got[j], b.open(ctx, paths[j].call, at.rate, paths[j].served))
					}
				}
				for j, op := range paths {
					at.set(op.p, report.MedianLatency(got[j]))
				}
			}
		}
		fmt.Fprintf(os.Stderr, "open loop: %s done\n", mode)
	}
	for _, t := range b.targets {
		if t.proc != nil {
			if b.run.PeakRSS == nil {
				b.run.PeakRSS = map[string]float64{}
			}
			b.run.PeakRSS[t.label()] = float64(t.rss) / (1 << 20)
		}
	}
	b.run.CheckTargets()
	return b.profile(ctx)
}

func (b *bench) serving(mode string, w load.Workload) []*target {
	var out []*target
	for _, t := range b.targets {
		if t.serves(mode, w) {
			out = append(out, t)
		}
	}
	return out
}

// closed runs one closed-loop round of a path and adds it to the path's
// rounds.
func (b *bench) closed(ctx context.Context, t *target, mode string, w load.Workload, warm bool) error {
	call := t.call(mode, w)
	if warm {
		load.Closed(ctx, call, b.s.concurrency, 300*time.Millisecond)
	}
	before, err := b.cost(ctx, t)
	if err != nil {
		return err
	}
	res := load.Closed(ctx, call, b.s.concurrency, b.s.closed)
	after, err := b.cost(ctx, t)
	if err != nil {
		return err
	}
	p := b.run.Find(mode, w.Name, t.name)
	if p == nil {
		p = &report.Phase{Mode: mode, Workload: w.Name, Path: t.name}
		b.run.Phases = append(b.run.Phases, p)
	}
	r := report.Round{Requests: res.Requests, Errors: res.Errors, Seconds: res.Elapsed.Seconds()}
	if r.Seconds > 0 {
		r.PerSecond = float64(r.Requests) / r.Seconds
	}
	if n := float64(res.Requests); n > 0 && t.proc != nil {
		r.CPUMicrosPerCall = float64((after.usage.CPU - before.usage.CPU).Microseconds()) / n
		if t.debug != "" {
			r.AllocsPerCall = float64(after.allocs.Objects-before.allocs.Objects) / n
			r.AllocBytesPerCall = float64(after.allocs.Bytes-before.allocs.Bytes) / n
		}
	}
	p.AddRound(r)
	if p.FirstErr == "" {
		p.FirstErr = res.FirstErr
	}
	t.rss = max(t.rss, after.usage.RSS)
	if res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "%s %s %s: %d errors, first: %s\n", mode, w.Name, t.name, res.Errors, res.FirstErr)
	}
	return nil
}

type cost struct {
	usage  procs.Usage
	allocs procs.Allocs
}

func (b *bench) cost(ctx context.Context, t *target) (cost, error) {
	var c cost
	if t.proc == nil {
		return c, nil
	}
	var err error
	if c.usage, err = procs.ReadUsage(t.proc.Pid()); err != nil {
		return c, fmt.Errorf("%s: %w", t.name, err)
	}
	if t.debug != "" {
		if c.allocs, err = procs.ReadAllocs(ctx, t.debug); err != nil {
			return c, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return c, nil
}

// open runs one open-loop phase; served is the path's closed-loop
// throughput (0 when unknown), which tells whether rate saturates it.
func (b *bench) open(ctx context.Context, call load.Call, rate, served float64) *report.Latency {
	res, h := load.Open(ctx, call, rate, b.s.openWorkers, b.s.warm, b.s.open)
	if res.Errors > 0 {
		fmt.Fprintf(os.Stderr, "open loop at %.0f/s: %d errors, first: %s\n", rate, res.Errors, res.FirstErr)
	}
	return &report.Latency{
		Rate: rate, Calls: res.Requests, Errors: res.Errors,
		P50:       float64(h.ValueAtQuantile(50)),
		P99:       float64(h.ValueAtQuantile(99)),
		P999:      float64(h.ValueAtQuantile(99.9)),
		Saturated: served > 0 && served < rate,
	}
}

// phase is a profiled phase: a workload in a mode.
type phase struct{ mode, workload string }

// profile captures Portico's CPU and allocation profiles under load, in
// phases of their own so profiling does not skew the figures above; with
// -profile-nochain, portico-nochain's too, named after it.
func (b *bench) profile(ctx context.Context) error {
	if b.s.profile <= 0 {
		return nil
	}
	paths := []string{report.Portico}
	if b.s.nochain {
		paths = append(paths, report.PorticoOff)
	}
	for _, path := range paths {
		t := b.targets[slices.IndexFunc(b.targets, func(t *target) bool { return t.name == path && !t.tls })]
		for _, c := range b.s.phases {
			if err := b.profilePhase(ctx, t, c); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) profilePhase(ctx context.Context, t *target, c phase) error {
	i := slices.IndexFunc(b.s.workloads, func(w load.Workload) bool { return w.Name == c.workload })
	if i < 0 || !slices.Contains(b.s.modes, c.mode) {
		return nil // a phase of a workload or mode this run does not have
	}
	dir := filepath.Join(b.s.out, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	secs := int(b.s.profile.Seconds())
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { load.Closed(lctx, t.call(c.mode, b.s.workloads[i]), b.s.concurrency, b.s.profile+time.Second) })
	name := fmt.Sprintf("%s-%s-%s", t.name, c.mode, c.workload)
	var errs [2]error
	var pw sync.WaitGroup
	pw.Go(func() {
		errs[0] = fetch(ctx, t.debug, fmt.Sprintf("profile?seconds=%d", secs), filepath.Join(dir, name+".cpu.pprof"))
	})
	pw.Go(func() {
		errs[1] = fetch(ctx, t.debug, fmt.Sprintf("allocs?seconds=%d", secs), filepath.Join(dir, name+".allocs.pprof"))
	})
	pw.Wait()
	cancel()
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return err
	}
	summarize(filepath.Join(dir, name+".cpu.pprof"), "")
	summarize(filepath.Join(dir, name+".allocs.pprof"), "-sample_index=alloc_objects")
	if t.name == report.Portico {
		b.chainParts(c, filepath.Join(dir, name+".cpu.pprof"))
	}
	return nil
}

// chainParts reads the chain's own work out of Portico's CPU profile of a
// phase. A step the profile has no sample of is noted: a policy off, or a
// function renamed since package chainprof named it.
func (b *bench) chainParts(c phase, cpu string) {
	steps := chainprof.GRPC
	if report.IsREST(c.mode) {
		steps = chainprof.REST
	}
	shares, missing, err := chainprof.File(cpu, steps)
	if err != nil {
		b.run.Notes = append(b.run.Notes, "the chain's parts were not read: "+err.Error())
		return
	}
	if len(missing) > 0 {
		b.run.Notes = append(b.run.Notes, fmt.Sprintf("the chain's parts, %s %s: no samples of %s (a policy off, or a function renamed: bench/internal/chainprof)",
			c.mode, c.workload, strings.Join(missing, ", ")))
	}
	b.run.ChainParts = append(b.run.ChainParts, report.ChainParts{Mode: c.mode, Workload: c.workload, Shares: shares})
}

func fetch(ctx context.Context, debug, query, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+debug+"/debug/pprof/"+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s", query, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// summarize writes `go tool pprof -top` next to a profile, when go is on PATH.
func summarize(profile, index string) {
	args := []string{"tool", "pprof", "-top", "-nodecount=40"}
	if index != "" {
		args = append(args, index)
	}
	out, err := exec.Command("go", append(args, profile)...).Output()
	if err == nil {
		_ = os.WriteFile(strings.TrimSuffix(profile, ".pprof")+".top.txt", out, 0o644)
	}
}

func (b *bench) write() error {
	if err := os.MkdirAll(b.s.out, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	b.run.Markdown(&md)
	fmt.Println(md.String())
	if err := os.WriteFile(filepath.Join(b.s.out, "latest.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := b.run.WriteJSON(filepath.Join(b.s.out, "latest.json")); err != nil {
		return err
	}
	if len(b.run.Phases) == 0 {
		return nil // the faulty workload alone: nothing to chart
	}
	return b.run.Chart(filepath.Join(b.s.out, "latest.png"))
}
