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

// goal is what a target wants of its figure.
type goal struct {
	want   float64
	unit   string
	higher bool // at least want, not at most
}

func atLeast(want float64, unit string) goal { return goal{want, unit, true} }
func atMost(want float64, unit string) goal  { return goal{want, unit, false} }

func (g goal) met(x float64) bool {
	if g.higher {
		return x >= g.want
	}
	return x <= g.want
}

func (g goal) String() string {
	op := "<="
	if g.higher {
		op = ">="
	}
	return op + " " + formatFigure(g.want, g.unit)
}

// CheckTargets evaluates issue 16's targets on every mode and workload of
// the run that each applies to.
func (r *Run) CheckTargets() {
	r.Targets = nil
	// check adds a target on a figure's spread over the rounds, with the
	// same figure for its base path (none when base is "").
	check := func(name, mode, wl string, g goal, s Spread, base string, b Spread) {
		if !s.Valid() {
			return
		}
		t := Target{Name: name, Where: mode + " " + wl, Want: g.String(), Got: s.Median,
			Min: s.Min, Max: s.Max, N: s.N, Unit: g.unit, Met: g.met(s.Median), Higher: g.higher}
		if base != "" && b.Valid() {
			t.Base = &Base{Path: base, Got: b.Median, Min: b.Min, Max: b.Max, N: b.N, Met: g.met(b.Median)}
		}
		r.Targets = append(r.Targets, t)
	}
	var none Spread
	allocs := func(r Round) float64 { return r.AllocsPerCall }
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		on := r.Find(mode, wl, Portico)
		if on == nil {
			continue
		}
		nginx := r.Find(mode, wl, Nginx)
		floor, off := r.Find(mode, wl, Floor), r.Find(mode, wl, PorticoOff)
		switch {
		case slices.Contains(grpcModes, mode) && unary(wl) && nginx != nil:
			check(TargetUnaryThroughput, mode, wl, atLeast(1, "x"), ThroughputRatio(on, nginx), Floor, ThroughputRatio(floor, nginx))
			check(TargetUnaryCPU, mode, wl, atMost(1.3, "x"), Across(on, nginx, cpuRatio), Floor, Across(floor, nginx, cpuRatio))
		case slices.Contains(grpcModes, mode) && nginx != nil:
			check(TargetStreamThrough, mode, wl, atLeast(0.9, "x"), ThroughputRatio(on, nginx), Floor, ThroughputRatio(floor, nginx))
			// Both serve streams of the same length: the ratio of CPU per
			// stream is the ratio of CPU per message.
			check(TargetStreamCPU, mode, wl, atMost(1.5, "x"), Across(on, nginx, cpuRatio), Floor, Across(floor, nginx, cpuRatio))
		case mode == REST:
			gw, vg := r.Find(mode, wl, GRPCGateway), r.Find(mode, wl, Vanguard)
			check(TargetRESTGateway, mode, wl, atLeast(1, "x"), ThroughputRatio(on, gw), PorticoOff, ThroughputRatio(off, gw))
			check(TargetRESTVanguard, mode, wl, atLeast(1.2, "x"), ThroughputRatio(on, vg), PorticoOff, ThroughputRatio(off, vg))
		case mode == GRPCTLS:
			check(TargetTLS, mode, wl, atLeast(1, "x"), ThroughputRatio(on, nginx), "", none)
		}
		if slices.Contains(chainModes, mode) {
			check(TargetChainLost, mode, wl, atMost(5, "%"), Lost(on, off).scaled(100), "", none)
			check(TargetChainCPU, mode, wl, atMost(10, "us"), Across(on, off, cpuAdded), "", none)
		}
		if unary(wl) && slices.Contains(grpcModes, mode) {
			check(TargetAllocsGRPC, mode, wl, atMost(120, ""), Of(on, allocs), Floor, Of(floor, allocs))
		}
		if mode == REST && restAllocWorkloads[wl] {
			check(TargetAllocsREST, mode, wl, atMost(250, ""), Of(on, allocs), PorticoOff, Of(off, allocs))
		}
		if all := r.Find(mode, wl, PorticoNoFeatures); all != nil {
			check(TargetFeatures, mode, wl, atMost(3, "%"), Lost(on, all).scaled(100), "", none)
		}
		p99 := func(name string, peer *Phase) {
			if peer != nil && on.Common != nil && peer.Common != nil && on.Common.Rate == peer.Common.Rate {
				check(name, mode, wl, atMost(1, "x"), p99Ratio(on.Common, peer.Common), "", none)
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
// it was met; then the same for its base path alone, where it has one.
func (r *Run) TargetTable(w io.Writer) {
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintln(w, "\nIssue 16's targets, each checked on the median of the rounds (a ratio or difference of two paths taken round by round, the paths of a round having run back to back); \"this run\" is the worst case, median (min–max of the rounds), then the best median. p99 is at the common rate, in open-loop rounds of its own: the paths of a round run one after the other, and the ratio is taken round by round. \"Base alone\" is the same figure for what Portico is built on, measured in the same rounds: the grpc-go floor (a bare grpc-go pass-through proxy) for gRPC, the REST door without its chain for REST; a target its base misses is out of reach of any work Portico adds to it.")
	fmt.Fprintln(w)
	header(w, 6, "target", "want", "this run: worst (where); best", "met", "base alone: worst (where); best", "base met")
	var names []string
	for _, t := range r.Targets {
		if !slices.Contains(names, t.Name) {
			names = append(names, t.Name)
		}
	}
	for _, name := range names {
		var ts, bases []Target
		met, baseMet := 0, 0
		for _, t := range r.Targets {
			if t.Name != name {
				continue
			}
			ts = append(ts, t)
			if t.Met {
				met++
			}
			if b := t.Base; b != nil {
				bases = append(bases, Target{Where: t.Where + ", " + b.Path, Got: b.Got, Min: b.Min, Max: b.Max, N: b.N, Unit: t.Unit, Higher: t.Higher})
				if b.Met {
					baseMet++
				}
			}
		}
		baseCells := "n/a | n/a"
		if len(bases) > 0 {
			baseCells = fmt.Sprintf("%s | %d of %d", worstAndBest(bases), baseMet, len(bases))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d of %d | %s |\n", name, ts[0].Want, worstAndBest(ts), met, len(ts), baseCells)
	}
}

// worstAndBest writes the worst of ts, its median with the rounds' range
// and where, and the best median when there is more than one.
func worstAndBest(ts []Target) string {
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
	out := fmt.Sprintf("%s (%s)", worst.spread().format(figureFormat(worst.Unit), unitSuffix(worst.Unit)), worst.Where)
	if len(ts) > 1 {
		out += fmt.Sprintf("; best %s (%s)", formatFigure(best.Got, best.Unit), best.Where)
	}
	return out
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

// p99Ratio is a's p99 over b's, round by round when both ran the same
// rounds of the open loop, else of their single phases.
func p99Ratio(a, b *Latency) Spread {
	if n := len(a.RoundsP99); n > 1 && n == len(b.RoundsP99) {
		ratios := make([]float64, n)
		for i := range ratios {
			ratios[i] = a.RoundsP99[i] / b.RoundsP99[i]
		}
		return SpreadOf(ratios)
	}
	return SpreadOf([]float64{a.P99 / b.P99})
}
