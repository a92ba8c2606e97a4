package report

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		name string
		xs   []float64
		want Spread
	}{
		{"odd", []float64{3, 1, 2}, Spread{Median: 2, Min: 1, Max: 3, N: 3}},
		{"even: the mean of the middle two", []float64{4, 1, 3, 2}, Spread{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{"one", []float64{7}, Spread{Median: 7, Min: 7, Max: 7, N: 1}},
		{"NaN and Inf left out", []float64{math.NaN(), 5, math.Inf(1), 1}, Spread{Median: 3, Min: 1, Max: 5, N: 2}},
	} {
		if got := SpreadOf(c.xs); got != c.want {
			t.Errorf("%s: SpreadOf(%v) = %+v, want %+v", c.name, c.xs, got, c.want)
		}
	}
	if s := SpreadOf(nil); s.Valid() || !math.IsNaN(s.Median) {
		t.Errorf("SpreadOf(nil) = %+v, want no figure", s)
	}
}

// phase fabricates a path's closed-loop rounds: throughput, CPU us and
// allocations per call, one of each per round.
func phase(mode, wl, path string, perSecond, cpu, allocs []float64) *Phase {
	p := &Phase{Mode: mode, Workload: wl, Path: path}
	for i := range perSecond {
		r := Round{Requests: int64(perSecond[i]), Seconds: 1, PerSecond: perSecond[i]}
		if cpu != nil {
			r.CPUMicrosPerCall = cpu[i]
		}
		if allocs != nil {
			r.AllocsPerCall = allocs[i]
		}
		p.AddRound(r)
	}
	return p
}

func TestAddRoundKeepsMedians(t *testing.T) {
	p := phase(GRPC, "get", Portico, []float64{100, 300, 200}, []float64{50, 70, 60}, []float64{120, 110, 130})
	if p.PerSecond != 200 || p.CPUMicrosPerCall != 60 || p.AllocsPerCall != 120 {
		t.Errorf("medians: %v calls/s, %v us, %v allocs; want 200, 60, 120", p.PerSecond, p.CPUMicrosPerCall, p.AllocsPerCall)
	}
	if p.Requests != 600 || p.Seconds != 3 || len(p.Rounds) != 3 {
		t.Errorf("sums: %d requests in %v s, %d rounds; want 600 in 3, 3 rounds", p.Requests, p.Seconds, len(p.Rounds))
	}
}

// A ratio of two paths is taken round by round, then its median: not the
// ratio of the medians.
func TestRatioRoundByRound(t *testing.T) {
	a := phase(GRPC, "get", Portico, []float64{100, 200, 300}, nil, nil)
	b := phase(GRPC, "get", Nginx, []float64{100, 100, 400}, nil, nil)
	got := ThroughputRatio(a, b)
	if want := (Spread{Median: 1, Min: 0.75, Max: 2, N: 3}); got != want {
		t.Errorf("ThroughputRatio = %+v, want %+v (the ratio of the medians would be 2)", got, want)
	}
	if s := got.format("%.2f", "x"); s != "1.00x (0.75–2.00)" {
		t.Errorf("format = %q", s)
	}
	if l := Lost(a, b).scaled(100); l.Median != 0 || l.Max != 25 || l.Min != -100 {
		t.Errorf("Lost = %+v, want 0%% (-100%%–25%%)", l)
	}
	// A run written before rounds were kept: one round of its figures.
	old := &Phase{Mode: GRPC, Workload: "get", Path: Nginx, PerSecond: 400}
	if s := ThroughputRatio(a, old); s.N != 1 || s.Median != 0.25 {
		t.Errorf("ratio to a phase without rounds = %+v, want 0.25 from one round", s)
	}
	if s := (Spread{Median: 5, Min: 5, Max: 5, N: 1}).format("%.0f", ""); s != "5" {
		t.Errorf("one round formats as %q, want no range", s)
	}
}

// fabricated is a small run: gRPC GetProduct, where Portico meets the
// throughput target in its median round though not in its worst, and
// REST GetProduct, with the feature paths on both.
func fabricated() *Run {
	three := func(x float64) []float64 { return []float64{x, x, x} }
	r := &Run{Date: "2026-11-30T00:00:00Z", Settings: map[string]string{}, Host: map[string]string{}}
	r.Phases = []*Phase{
		phase(GRPC, "get", Direct, three(21000), nil, nil),
		// vs nginx round by round: 1.05, 0.95, 1.10 → median 1.05 (met).
		phase(GRPC, "get", Portico, []float64{10500, 9500, 11000}, []float64{40, 44, 42}, []float64{110, 112, 130}),
		// lost to the chain: 1 - portico/nochain = 4.5%, 3.1%, 8.3% → 4.5% (met).
		phase(GRPC, "get", PorticoOff, []float64{11000, 9800, 12000}, []float64{30, 30, 30}, three(90)),
		phase(GRPC, "get", Nginx, three(10000), []float64{30, 30, 30}, nil),
		// the floor vs nginx: 1.1, 1.0, 1.15 → 1.1 (met); CPU 1.4x (not met).
		phase(GRPC, "get", Floor, []float64{11000, 10000, 11500}, three(42), three(100)),
		// all three off: 1 - portico/nofeatures = -5%, 5%, 8.3% → 5% (not met).
		phase(GRPC, "get", PorticoNoFeatures, []float64{10000, 10000, 12000}, three(40), three(110)),
		phase(GRPC, "get", PorticoNoLimits, three(10500), three(40), three(110)),

		phase(REST, "get", Portico, three(9000), three(100), three(260)),
		phase(REST, "get", PorticoOff, three(9000), three(95), three(230)),
		phase(REST, "get", GRPCGateway, []float64{8000, 10000, 9000}, three(80), three(200)),
		phase(REST, "get", Vanguard, three(7000), three(120), three(190)),
		phase(REST, "get", PorticoNoFeatures, three(9100), three(100), three(260)),
	}
	r.ChainParts = []ChainParts{{Mode: GRPC, Workload: "get", Shares: map[string]float64{"call facts": 0.05, "stats": 0.1}}}
	r.Find(GRPC, "get", Portico).Common = &Latency{Rate: 5000, P99: 4000}
	r.Find(GRPC, "get", Nginx).Common = &Latency{Rate: 5000, P99: 5000}
	// REST's in three open-loop rounds: Portico's median round (5000) is
	// grpc-gateway's, but round by round it is slower in two of three.
	r.Find(REST, "get", Portico).Common = MedianLatency([]*Latency{{Rate: 4000, P99: 4000}, {Rate: 4000, P99: 9000}, {Rate: 4000, P99: 5000}})
	r.Find(REST, "get", GRPCGateway).Common = MedianLatency([]*Latency{{Rate: 4000, P99: 5000}, {Rate: 4000, P99: 6000}, {Rate: 4000, P99: 4000}})
	r.CheckTargets()
	return r
}

// The median round stands for the rounds (its p50 and p99.9 with its p99),
// keeps every round's p99 in the order they ran, and counts every round's
// calls and errors: an error in a round not picked is still reported.
func TestMedianLatency(t *testing.T) {
	rounds := []*Latency{{Calls: 10, Errors: 2, P50: 1, P99: 30, P999: 40}, {Calls: 10, P50: 2, P99: 10, P999: 50}, {Calls: 10, P50: 3, P99: 20, P999: 60}}
	got := MedianLatency(rounds)
	if got.P50 != 3 || got.P99 != 20 || got.P999 != 60 || !slices.Equal(got.RoundsP99, []float64{30, 10, 20}) ||
		got.Calls != 30 || got.Errors != 2 {
		t.Errorf("median of the rounds: %+v", got)
	}
	if sp := SpreadOf(got.RoundsP99); sp.Median != 20 || sp.Min != 10 || sp.Max != 30 || sp.N != 3 {
		t.Errorf("p99 spread %+v", sp)
	}
	if rounds[2].RoundsP99 != nil {
		t.Error("MedianLatency wrote into a round")
	}
	if one := MedianLatency(rounds[:1]); one != rounds[0] || one.RoundsP99 != nil {
		t.Errorf("one round: %+v", one)
	}
	if cells := latencyCells(got, nil); !strings.Contains(cells, "0.020 (0.010–0.030)") {
		t.Errorf("p99 cell %q: want the median with the rounds' min and max", cells)
	}
}

func find(t *testing.T, r *Run, name, where string) Target {
	t.Helper()
	for _, x := range r.Targets {
		if x.Name == name && x.Where == where {
			return x
		}
	}
	t.Fatalf("no target %q on %s in %+v", name, where, r.Targets)
	return Target{}
}

func TestCheckTargets(t *testing.T) {
	r := fabricated()
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	for _, c := range []struct {
		name, where   string
		got, min, max float64
		met           bool
	}{
		{TargetUnaryThroughput, "grpc-1conn get", 1.05, 0.95, 1.10, true},
		{TargetUnaryCPU, "grpc-1conn get", 42.0 / 30, 40.0 / 30, 44.0 / 30, false},
		{TargetChainLost, "grpc-1conn get", 100 * (1 - 10500.0/11000), 100 * (1 - 9500.0/9800), 100 * (1 - 11000.0/12000), true},
		{TargetChainCPU, "grpc-1conn get", 12, 10, 14, false},
		{TargetAllocsGRPC, "grpc-1conn get", 112, 110, 130, true},
		{TargetFeatures, "grpc-1conn get", 5, -5, 100 * (1 - 11000.0/12000), false},
		{TargetP99GRPC, "grpc-1conn get", 0.8, 0.8, 0.8, true},
		{TargetRESTGateway, "rest get", 1, 0.9, 9000.0 / 8000, true},
		{TargetRESTVanguard, "rest get", 9000.0 / 7000, 9000.0 / 7000, 9000.0 / 7000, true},
		{TargetAllocsREST, "rest get", 260, 260, 260, false},
		{TargetChainLost, "rest get", 0, 0, 0, true},
		{TargetChainCPU, "rest get", 5, 5, 5, true},
		{TargetP99REST, "rest get", 1.25, 0.8, 1.5, false},
	} {
		x := find(t, r, c.name, c.where)
		if !near(x.Got, c.got) || !near(x.Min, c.min) || !near(x.Max, c.max) || x.Met != c.met || x.N != 3 && c.name != TargetP99GRPC {
			t.Errorf("%s on %s: got %v (%v–%v, %d rounds), met %v; want %v (%v–%v), met %v",
				c.name, c.where, x.Got, x.Min, x.Max, x.N, x.Met, c.got, c.min, c.max, c.met)
		}
	}
	for _, x := range r.Targets {
		if x.Name == TargetStreamThrough || x.Name == TargetTLS {
			t.Errorf("target %q on %s: the run has no phase it needs", x.Name, x.Where)
		}
	}
	// Each target's base: the floor for gRPC, the door without its chain
	// for REST, checked against the same want; none for the chain's own
	// cost, the features or p99.
	for _, c := range []struct {
		name, where, path string
		got, min, max     float64
		met               bool
	}{
		{TargetUnaryThroughput, "grpc-1conn get", Floor, 1.1, 1.0, 1.15, true},
		{TargetUnaryCPU, "grpc-1conn get", Floor, 1.4, 1.4, 1.4, false},
		{TargetAllocsGRPC, "grpc-1conn get", Floor, 100, 100, 100, true},
		{TargetRESTGateway, "rest get", PorticoOff, 1, 0.9, 9000.0 / 8000, true},
		{TargetRESTVanguard, "rest get", PorticoOff, 9000.0 / 7000, 9000.0 / 7000, 9000.0 / 7000, true},
		{TargetAllocsREST, "rest get", PorticoOff, 230, 230, 230, true},
	} {
		x := find(t, r, c.name, c.where)
		b := x.Base
		if b == nil || b.Path != c.path || !near(b.Got, c.got) || !near(b.Min, c.min) || !near(b.Max, c.max) || b.N != 3 || b.Met != c.met {
			t.Errorf("%s on %s: base %+v; want %s at %v (%v–%v, 3 rounds), met %v", c.name, c.where, b, c.path, c.got, c.min, c.max, c.met)
		}
	}
	for _, name := range []string{TargetChainLost, TargetChainCPU, TargetFeatures, TargetP99GRPC} {
		if x := find(t, r, name, "grpc-1conn get"); x.Base != nil {
			t.Errorf("%s: base %+v, want none", name, x.Base)
		}
	}
}

func TestMarkdownTables(t *testing.T) {
	r := fabricated()
	var b strings.Builder
	r.Markdown(&b)
	md := b.String()
	for _, want := range []string{
		// The summary: Portico's median calls/s with the rounds' range, and
		// the ratio to nginx taken round by round.
		"| grpc-1conn | get | 10500 (9500–11000) | 0.50x (0.45–0.52) | 1.05x (0.95–1.10) | 5% (3–8) |",
		// The feature table: all three off, and one that ran on gRPC only.
		"| grpc-1conn | get | 10500 (9500–11000) | 0.0% (-4.8–9.5) | n/a | n/a | 5.0% (-5.0–8.3) |",
		"| rest | get | 9000 (9000–9000) | n/a | n/a | n/a | 1.1% (1.1–1.1) |",
		// The targets: the worst case with its range and where, and the count met.
		"| gRPC unary, full chain: throughput vs nginx | >= 1.00x | 1.05x (0.95–1.10) (grpc-1conn get) | 1 of 1 | 1.10x (1.00–1.15) (grpc-1conn get, grpc-go-floor) | 1 of 1 |",
		"| gRPC unary, full chain: CPU per call vs nginx's | <= 1.30x | 1.40x (1.33–1.47) (grpc-1conn get) | 0 of 1 | 1.40x (1.40–1.40) (grpc-1conn get, grpc-go-floor) | 0 of 1 |",
		"| allocations per REST unary call (get, create) | <= 250 | 260 (260–260) (rest get) | 0 of 1 | 230 (230–230) (rest get, portico-nochain) | 1 of 1 |",
		"| the chain: throughput lost (portico vs portico-nochain) | <= 5.0% | 4.5% (3.1–8.3) (grpc-1conn get); best 0.0% (rest get) | 2 of 2 | n/a | n/a |",
		// The chain's parts: each share times Portico's median CPU per call
		// (42 us), beside the chain's cost measured round by round. Call
		// facts, which portico-nochain runs too, is no part of that cost.
		"| mode | workload | call facts | stats | auth | rate limit | decode | validation | stats to validation together | measured |",
		"| grpc-1conn | get | 2.1 | 4.2 | n/a | n/a | n/a | n/a | 4.2 | +12 (+10–+14) |",
		"| edge limits, retries and circuit breaker together: throughput cost | <= 3.0% | 5.0% (-5.0–8.3) (grpc-1conn get); best 1.1% (rest get) | 1 of 2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("latest.md lacks\n%s\nin\n%s", want, md)
		}
	}
	// The feature paths run closed loop only: no latency rows.
	_, latency, _ := strings.Cut(md, "Latency, open loop")
	if strings.Contains(latency, PorticoNoFeatures) {
		t.Errorf("the latency table lists a feature path:\n%s", latency)
	}
}
