package report

import (
	"fmt"
	"io"
	"slices"
)

// The targets of issue 16, by name. Each is checked on every mode and
// workload it names, from the median of the rounds: a ratio or difference
// between two paths is taken round by round (the paths of one round ran
// back to back) and its median checked.
const (
	TargetUnaryThroughput = "gRPC unary, full chain: throughput vs nginx"
	TargetUnaryCPU        = "gRPC unary, full chain: CPU per call vs nginx's"
	TargetChainLost       = "the chain: throughput lost (portico vs portico-nochain)"
	TargetChainCPU        = "the chain: CPU added per call (portico − portico-nochain)"
	TargetStreamThrough   = "server streams: throughput vs nginx"
	TargetStreamCPU       = "server streams: CPU per message vs nginx's"
	TargetRESTGateway     = "REST, full chain: throughput vs bare grpc-gateway"
	TargetRESTVanguard    = "REST, full chain: throughput vs vanguard"
	TargetAllocsGRPC      = "allocations per native unary call"
	TargetAllocsREST      = "allocations per REST unary call (get, create)"
	TargetFeatures        = "edge limits, retries and circuit breaker together: throughput cost"
	TargetTLS             = "TLS: gRPC throughput vs nginx doing TLS"
	TargetP99GRPC         = "p99 at the common rate vs nginx's (gRPC)"
	TargetP99REST         = "p99 at the common rate vs grpc-gateway's (REST)"
)

// The modes the targets are checked on.
var (
	grpcModes = []string{GRPC, GRPCConns}
	// chainModes: the chain's cost is checked over both transports.
	chainModes = []string{GRPC, GRPCConns, REST}
)

func unary(workload string) bool { return workload != "stream" }

// restAllocWorkloads are the REST workloads the allocation target is
// checked on: the figure (293–353) is GetProduct's and
// CreateProduct's. ListProducts' JSON of 28 products takes bare
// grpc-gateway about 800 allocations on its own.
var restAllocWorkloads = map[string]bool{"get": true, "create": true}

// CheckTargets evaluates issue 16's targets on every mode and workload of
// the run that each applies to.
func (r *Run) CheckTargets() {
	r.Targets = nil
	// atLeast and atMost add a target on a figure's spread over the rounds.
	add := func(name, mode, wl, want, unit string, s Spread, higher bool, met bool) {
		if s.Valid() {
			r.Targets = append(r.Targets, Target{Name: name, Where: mode + " " + wl, Want: want, Got: s.Median,
				Min: s.Min, Max: s.Max, N: s.N, Unit: unit, Met: met, Higher: higher})
		}
	}
	atLeast := func(name, mode, wl string, s Spread, want float64, unit string) {
		add(name, mode, wl, fmt.Sprintf(">= %s", formatFigure(want, unit)), unit, s, true, s.Median >= want)
	}
	atMost := func(name, mode, wl string, s Spread, want float64, unit string) {
		add(name, mode, wl, fmt.Sprintf("<= %s", formatFigure(want, unit)), unit, s, false, s.Median <= want)
	}
	allocs := func(r Round) float64 { return r.AllocsPerCall }
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		on := r.Find(mode, wl, Portico)
		if on == nil {
			continue
		}
		nginx := r.Find(mode, wl, Nginx)
		switch {
		case slices.Contains(grpcModes, mode) && unary(wl) && nginx != nil:
			atLeast(TargetUnaryThroughput, mode, wl, ThroughputRatio(on, nginx), 1, "x")
			atMost(TargetUnaryCPU, mode, wl, Across(on, nginx, cpuRatio), 1.3, "x")
		case slices.Contains(grpcModes, mode) && nginx != nil:
			atLeast(TargetStreamThrough, mode, wl, ThroughputRatio(on, nginx), 0.9, "x")
			// Both serve streams of the same length: the ratio of CPU per
			// stream is the ratio of CPU per message.
			atMost(TargetStreamCPU, mode, wl, Across(on, nginx, cpuRatio), 1.5, "x")
		case mode == REST:
			atLeast(TargetRESTGateway, mode, wl, ThroughputRatio(on, r.Find(mode, wl, GRPCGateway)), 1, "x")
			atLeast(TargetRESTVanguard, mode, wl, ThroughputRatio(on, r.Find(mode, wl, Vanguard)), 1.2, "x")
		case mode == GRPCTLS:
			atLeast(TargetTLS, mode, wl, ThroughputRatio(on, nginx), 1, "x")
		}
		if slices.Contains(chainModes, mode) {
			off := r.Find(mode, wl, PorticoOff)
			atMost(TargetChainLost, mode, wl, Lost(on, off).scaled(100), 5, "%")
			atMost(TargetChainCPU, mode, wl, Across(on, off, cpuAdded), 10, "us")
		}
		if unary(wl) && slices.Contains(grpcModes, mode) {
			atMost(TargetAllocsGRPC, mode, wl, Of(on, allocs), 120, "")
		}
		if mode == REST && restAllocWorkloads[wl] {
			atMost(TargetAllocsREST, mode, wl, Of(on, allocs), 250, "")
		}
		if all := r.Find(mode, wl, PorticoNoFeatures); all != nil {
			atMost(TargetFeatures, mode, wl, Lost(on, all).scaled(100), 3, "%")
		}
		// Latency is one open-loop phase per path, not a round's.
		p99 := func(name string, peer *Phase) {
			if peer != nil && on.Common != nil && peer.Common != nil && on.Common.Rate == peer.Common.Rate {
				atMost(name, mode, wl, SpreadOf([]float64{on.Common.P99 / peer.Common.P99}), 1, "x")
			}
		}
		switch {
		case slices.Contains(grpcModes, mode):
			p99(TargetP99GRPC, nginx)
		case mode == REST:
			p99(TargetP99REST, r.Find(mode, wl, GRPCGateway))
		}
	}
}

// TargetTable writes the targets, one row per target: what it wants, its
// worst case in this run (the median of the rounds, with their min and
// max, and where), its best median, and on how many modes and workloads
// it was met.
func (r *Run) TargetTable(w io.Writer) {
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintln(w, "\nIssue 16's targets, each checked on the median of the rounds (a ratio or difference of two paths taken round by round, the paths of a round having run back to back); \"this run\" is the worst case, median (min–max of the rounds), then the best median. p99 is one open-loop phase per path, at the common rate, so it has no rounds.")
	fmt.Fprintln(w)
	header(w, 4, "target", "want", "this run: worst (where); best", "met")
	var names []string
	for _, t := range r.Targets {
		if !slices.Contains(names, t.Name) {
			names = append(names, t.Name)
		}
	}
	for _, name := range names {
		var ts []Target
		met := 0
		for _, t := range r.Targets {
			if t.Name == name {
				ts = append(ts, t)
				if t.Met {
					met++
				}
			}
		}
		worse := func(a, b Target) bool {
			if a.Higher {
				return a.Got < b.Got
			}
			return a.Got > b.Got
		}
		worst, best := ts[0], ts[0]
		for _, t := range ts[1:] {
			if worse(t, worst) {
				worst = t
			}
			if worse(best, t) {
				best = t
			}
		}
		got := fmt.Sprintf("%s (%s)", worst.spread().format(figureFormat(worst.Unit), unitSuffix(worst.Unit)), worst.Where)
		if len(ts) > 1 {
			got += fmt.Sprintf("; best %s (%s)", formatFigure(best.Got, best.Unit), best.Where)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d of %d |\n", name, ts[0].Want, got, met, len(ts))
	}
}

func (t Target) spread() Spread { return Spread{Median: t.Got, Min: t.Min, Max: t.Max, N: max(t.N, 1)} }

// figureFormat is the verb a figure of unit is written with.
func figureFormat(unit string) string {
	switch unit {
	case "x":
		return "%.2f"
	case "%":
		return "%.1f"
	case "us":
		return "%+.0f"
	}
	return "%.0f"
}

func unitSuffix(unit string) string {
	if unit == "us" {
		return " us"
	}
	return unit
}

func formatFigure(v float64, unit string) string {
	return fmt.Sprintf(figureFormat(unit), v) + unitSuffix(unit)
}
