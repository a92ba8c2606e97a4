package report

import (
	"fmt"
	"math"
	"slices"
)

// Round is one closed-loop round of a phase: every path of a mode and
// workload runs once per round, back to back, so the paths' rounds of the
// same index ran under the same conditions and their ratios compare.
type Round struct {
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// The proxy's own process; zero for direct (and allocations for nginx).
	CPUMicrosPerCall  float64 `json:"cpu_us_per_call,omitempty"`
	AllocsPerCall     float64 `json:"allocs_per_call,omitempty"`
	AllocBytesPerCall float64 `json:"alloc_bytes_per_call,omitempty"`
}

// AddRound records one more closed-loop round and sets the phase's
// figures: requests, errors and seconds summed over the rounds, and
// throughput, CPU and allocations per call the median of the rounds'.
func (p *Phase) AddRound(r Round) {
	p.Rounds = append(p.Rounds, r)
	p.Requests += r.Requests
	p.Errors += r.Errors
	p.Seconds += r.Seconds
	med := func(f func(Round) float64) float64 { return SpreadOf(figures(p.Rounds, f)).Median }
	p.PerSecond = med(func(r Round) float64 { return r.PerSecond })
	p.CPUMicrosPerCall = med(func(r Round) float64 { return r.CPUMicrosPerCall })
	p.AllocsPerCall = med(func(r Round) float64 { return r.AllocsPerCall })
	p.AllocBytesPerCall = med(func(r Round) float64 { return r.AllocBytesPerCall })
}

// rounds is p's rounds or, for a run written before rounds were kept, one
// round of its figures.
func (p *Phase) rounds() []Round {
	if len(p.Rounds) > 0 {
		return p.Rounds
	}
	return []Round{{Requests: p.Requests, Errors: p.Errors, Seconds: p.Seconds, PerSecond: p.PerSecond,
		CPUMicrosPerCall: p.CPUMicrosPerCall, AllocsPerCall: p.AllocsPerCall, AllocBytesPerCall: p.AllocBytesPerCall}}
}

func figures(rs []Round, f func(Round) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// Spread is a figure over a run's rounds: its median, min and max. N is
// the number of rounds; a Spread of none is NaN throughout.
type Spread struct {
	Median, Min, Max float64
	N                int
}

// SpreadOf is the median, min and max of xs, leaving out NaNs and
// infinities (a ratio to a round that served nothing). The median of an
// even count is the mean of the middle two.
func SpreadOf(xs []float64) Spread {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{Median: med, Min: v[0], Max: v[n-1], N: n}
}

// Valid reports whether s has a figure.
func (s Spread) Valid() bool { return s.N > 0 }

// Across is f of a and b round by round (round i of a with round i of b,
// which ran in the same round), over the rounds both have.
func Across(a, b *Phase, f func(a, b Round) float64) Spread {
	if a == nil || b == nil {
		return SpreadOf(nil)
	}
	ra, rb := a.rounds(), b.rounds()
	xs := make([]float64, min(len(ra), len(rb)))
	for i := range xs {
		xs[i] = f(ra[i], rb[i])
	}
	return SpreadOf(xs)
}

// Of is f over p's rounds.
func Of(p *Phase, f func(Round) float64) Spread {
	if p == nil {
		return SpreadOf(nil)
	}
	return SpreadOf(figures(p.rounds(), f))
}

// Throughput ratios and differences, round by round.
var (
	perSecondRatio = func(a, b Round) float64 { return a.PerSecond / b.PerSecond }
	cpuRatio       = func(a, b Round) float64 { return a.CPUMicrosPerCall / b.CPUMicrosPerCall }
	cpuAdded       = func(a, b Round) float64 { return a.CPUMicrosPerCall - b.CPUMicrosPerCall }
	// lost is the share of b's throughput that a does not reach: what a
	// feature that a has and b lacks costs.
	lost = func(a, b Round) float64 { return 1 - a.PerSecond/b.PerSecond }
)

// ThroughputRatio is a's throughput over b's, round by round.
func ThroughputRatio(a, b *Phase) Spread { return Across(a, b, perSecondRatio) }

// Lost is the share of b's throughput a loses, round by round.
func Lost(a, b *Phase) Spread { return Across(a, b, lost) }

// format writes s's median with format and unit, and its min and max in
// brackets when there were rounds to differ: "12485 (12100–12600)",
// "0.93x (0.90–0.95)".
func (s Spread) format(format, unit string) string {
	if !s.Valid() {
		return "n/a"
	}
	out := fmt.Sprintf(format, s.Median) + unit
	if s.N > 1 {
		out += fmt.Sprintf(" ("+format+"–"+format+")", s.Min, s.Max)
	}
	return out
}

// scaled is s times k (a share as a percentage).
func (s Spread) scaled(k float64) Spread {
	s.Median, s.Min, s.Max = s.Median*k, s.Min*k, s.Max*k
	return s
}
