// Package report turns a benchmark run into its three outputs: a Markdown
// table, bench/results/latest.json and a PNG chart. Every figure that
// compares paths is a ratio within the one run.
package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Path names. Direct calls the backend without a proxy.
const (
	Direct      = "direct"
	Portico     = "portico"
	PorticoOff  = "portico-nochain"
	GRPCGateway = "grpc-gateway"
	Vanguard    = "vanguard"
	Nginx       = "nginx"
	// Floor is the least proxy grpc-go makes (servers.Floor): gRPC modes.
	Floor = "grpc-go-floor"
)

// The feature paths: Portico with its full chain, as Portico, with one of
// the features of issue 16's cost target off, or all three (package
// servers says how each is turned off). They run closed loop only, on
// FeatureModes and FeatureWorkloads.
const (
	PorticoNoLimits   = "portico-nolimits"
	PorticoNoRetries  = "portico-noretries"
	PorticoNoBreaker  = "portico-nobreaker"
	PorticoNoFeatures = "portico-nofeatures"
)

// Features lists the feature paths with what each turns off, all three
// last.
func Features() []Feature {
	return []Feature{
		{PorticoNoLimits, "edge limits"},
		{PorticoNoRetries, "retries"},
		{PorticoNoBreaker, "circuit breaker"},
		{PorticoNoFeatures, "all three"},
	}
}

// Feature is a feature path and the feature it turns off.
type Feature struct{ Path, Off string }

// IsFeature reports whether path is a feature path.
func IsFeature(path string) bool {
	return slices.ContainsFunc(Features(), func(f Feature) bool { return f.Path == path })
}

// FeatureModes and FeatureWorkloads are where the feature paths run: the
// default workloads, a read and a write, over both transports.
var (
	FeatureModes     = []string{GRPC, REST}
	FeatureWorkloads = []string{"get", "create"}
)

// Modes: REST over HTTP/1.1 keep-alive; gRPC over one shared connection or
// over many; and three over TLS, each measured against its plaintext
// counterpart (Plain): gRPC over one connection, REST over HTTP/1.1
// keep-alive, and REST over h2 (chosen by ALPN) on one connection.
//
// Connect and GRPCWeb are the browser protocols' unary calls on the REST
// port (Connect's binary protobuf, gRPC-Web's binary mode) over HTTP/1.1
// keep-alive, through Portico and through vanguard alone, their reference.
const (
	REST      = "rest"
	GRPC      = "grpc-1conn"
	GRPCConns = "grpc-nconn"
	GRPCTLS   = "grpc-tls"
	RESTTLS   = "rest-tls"
	RESTH2TLS = "rest-h2-tls"
	Connect   = "connect"
	GRPCWeb   = "grpc-web"
)

// Modes lists every mode in the order a run measures them: each TLS mode
// right after its plaintext counterpart, so that drift on the machine
// falls on both alike.
func Modes() []string {
	return []string{GRPC, GRPCTLS, GRPCConns, REST, RESTTLS, RESTH2TLS, Connect, GRPCWeb}
}

// IsWeb reports whether mode is one of the browser protocols.
func IsWeb(mode string) bool { return mode == Connect || mode == GRPCWeb }

// Plain is the plaintext mode a TLS mode is compared with; a plaintext
// mode is its own.
func Plain(mode string) string {
	switch mode {
	case GRPCTLS:
		return GRPC
	case RESTTLS, RESTH2TLS:
		return REST
	}
	return mode
}

// IsTLS reports whether mode runs over TLS.
func IsTLS(mode string) bool { return Plain(mode) != mode }

// IsREST reports whether mode is REST, over TLS or not.
func IsREST(mode string) bool { return Plain(mode) == REST }

// TLSPeer is the path Portico is compared with over TLS: nginx
// terminating TLS for gRPC, and for REST grpc-gateway behind Go's
// crypto/tls, the TLS stack Portico's REST door uses.
func TLSPeer(mode string) string {
	if IsREST(mode) {
		return GRPCGateway
	}
	return Nginx
}

// Phase is one path under one workload in one mode: its closed-loop
// throughput and cost, and its open-loop latency.
type Phase struct {
	Mode     string `json:"mode"`
	Workload string `json:"workload"`
	Path     string `json:"path"`

	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// The proxy's own process (every process of nginx); zero for direct.
	CPUMicrosPerCall  float64 `json:"cpu_us_per_call,omitempty"`
	AllocsPerCall     float64 `json:"allocs_per_call,omitempty"`
	AllocBytesPerCall float64 `json:"alloc_bytes_per_call,omitempty"`
	// Rounds are the closed-loop rounds, in the order they ran; the
	// figures above are their medians (AddRound).
	Rounds []Round `json:"rounds,omitempty"`

	// Open-loop latency at the rate: half the reference's
	// closed-loop throughput (direct for gRPC, grpc-gateway for REST).
	Half *Latency `json:"at_half_reference,omitempty"`
	// Open-loop latency at half the slowest path's throughput, a rate
	// every path sustains, so that the latencies compare paths rather
	// than queues.
	Common *Latency `json:"at_common_rate,omitempty"`
}

// Latency is one open-loop phase, in microseconds from each request's
// scheduled send time; or, at a rate measured in rounds, the phase of the
// round with the median p99 (MedianLatency), with every round's p99.
type Latency struct {
	Rate   float64 `json:"rate"`
	Calls  int64   `json:"calls"`
	Errors int64   `json:"errors"`
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	P999   float64 `json:"p999_us"`
	// Saturated is set when the rate is above what the path served closed
	// loop: its queue then grows for the whole phase, and its latency says
	// more about the phase's length than about the path.
	Saturated bool `json:"saturated"`
	// RoundsP99 is the p99 of each round, in the order the rounds ran,
	// when there was more than one.
	RoundsP99 []float64 `json:"rounds_p99_us,omitempty"`
}

// MedianLatency is the phase of the round whose p99 is the median of
// rounds' (the higher of the middle two for an even count), with every
// round's p99 in RoundsP99 and the calls and errors of all the rounds;
// one round is itself.
func MedianLatency(rounds []*Latency) *Latency {
	switch len(rounds) {
	case 0:
		return nil
	case 1:
		return rounds[0]
	}
	byP99 := slices.Clone(rounds)
	slices.SortStableFunc(byP99, func(a, b *Latency) int { return cmp.Compare(a.P99, b.P99) })
	med := *byP99[len(byP99)/2]
	med.RoundsP99 = make([]float64, len(rounds))
	med.Calls, med.Errors = 0, 0
	for i, l := range rounds {
		med.RoundsP99[i] = l.P99
		med.Calls += l.Calls
		med.Errors += l.Errors
	}
	return &med
}

// Run is a whole benchmark run.
type Run struct {
	Date     string            `json:"date"`
	Host     map[string]string `json:"host"`
	Settings map[string]string `json:"settings"`
	Phases   []*Phase          `json:"phases"`
	// RESTReference is the direct gRPC path at each REST workload's rates:
	// what a REST path's latency is compared with.
	RESTReference map[string]*Phase `json:"rest_reference"`
	// PeakRSS is each proxy's largest resident set seen, in MiB.
	PeakRSS map[string]float64 `json:"peak_rss_mib"`
	Targets []Target           `json:"targets"`
	Notes   []string           `json:"notes,omitempty"`
	// Faulty is the faulty-instance workload: success ratios, not speed.
	Faulty []*FaultyPhase `json:"faulty,omitempty"`
	// ChainParts is the chain's own work in each profiled phase.
	ChainParts []ChainParts `json:"chain_parts,omitempty"`
}

// Target is one goal of issue 16 checked on one mode and workload of
// this run, from the median of its rounds.
type Target struct {
	Name  string  `json:"name"`
	Where string  `json:"where"` // mode and workload
	Want  string  `json:"want"`
	Got   float64 `json:"got"` // the median of the rounds
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	N     int     `json:"rounds"`
	Unit  string  `json:"unit"`
	Met   bool    `json:"met"`
	// Higher is set when a larger figure is better, so that the worst
	// case is the smallest.
	Higher bool `json:"higher_is_better,omitempty"`
	// Base is the same figure for what Portico is built on, run alone:
	// the grpc-go floor for a gRPC target, the REST door without its
	// chain for a REST one. A target its base misses is out of reach of
	// the work Portico adds to it.
	Base *Base `json:"base,omitempty"`
}

// Base is a target's figure for the path Portico is built on.
type Base struct {
	Path string  `json:"path"`
	Got  float64 `json:"got"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	N    int     `json:"rounds"`
	Met  bool    `json:"met"`
}

// Find returns a phase, or nil.
func (r *Run) Find(mode, workload, path string) *Phase {
	for _, p := range r.Phases {
		if p.Mode == mode && p.Workload == workload && p.Path == path {
			return p
		}
	}
	return nil
}

// Reference is the path a plaintext mode's throughput is compared with.
func Reference(mode string) string {
	switch {
	case mode == REST:
		return GRPCGateway
	case IsWeb(mode):
		return Vanguard
	}
	return Direct
}

// Ref is the phase p's throughput is compared with: its mode's reference,
// or for a TLS mode the same path and workload in plaintext.
func (r *Run) Ref(p *Phase) *Phase {
	if IsTLS(p.Mode) {
		return r.Find(Plain(p.Mode), p.Workload, p.Path)
	}
	return r.Find(p.Mode, p.Workload, Reference(p.Mode))
}

// WriteJSON writes the run to path.
func (r *Run) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// groups lists (mode, workload) pairs in the order they were run.
func (r *Run) groups() [][2]string {
	var out [][2]string
	for _, p := range r.Phases {
		g := [2]string{p.Mode, p.Workload}
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// Markdown writes the results tables and the targets.
func (r *Run) Markdown(w io.Writer) {
	if len(r.Phases) == 0 { // only the faulty workload ran
		r.faultyOnly(w)
		return
	}
	fmt.Fprintf(w, "Run %s on %s (%s, nginx %s). Throughput: closed loop, %s; \"x ref\" is the ratio to the direct path (gRPC), to bare grpc-gateway (REST) or to vanguard alone (Connect, gRPC-Web) in this run, and for a TLS mode (%s) to the same path in plaintext (%s) in this run: the TLS cost. Each closed-loop figure is the median of the rounds, with their min and max in brackets; a ratio of two paths is taken round by round (the paths of a round run back to back, in a rotated order) and its median shown. CPU and allocations are the proxy process's own, per call.\n\n",
		r.Date, r.Host["machine"], r.Host["go"], r.Host["nginx"], r.Settings["closed_loop"],
		strings.Join([]string{GRPCTLS, RESTTLS, RESTH2TLS}, ", "), strings.Join([]string{GRPC, REST, REST}, ", "))
	r.Summary(w)
	r.TLSSummary(w)
	fmt.Fprintln(w, "\nEvery path:")
	fmt.Fprintln(w)
	header(w, 3, "mode", "workload", "path", "calls/s", "x ref", "CPU us/call", "allocs/call", "errors")
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		for _, p := range r.Phases {
			if p.Mode != mode || p.Workload != wl {
				continue
			}
			x := ""
			if ref := r.Ref(p); ref != nil {
				x = ThroughputRatio(p, ref).format("%.2f", "")
			}
			errs := p.Errors
			for _, l := range []*Latency{p.Half, p.Common} {
				if l != nil {
					errs += l.Errors
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %d |\n", mode, wl, p.Path, Of(p, perSecond).format("%.0f", ""), x,
				optional(p.CPUMicrosPerCall, "%.0f"), optional(p.AllocsPerCall, "%.0f"), errs)
		}
	}
	r.costs(w)
	fmt.Fprintf(w, "\nLatency, open loop (%s), in ms from each request's scheduled send time; \"+p99\" is over the direct gRPC path at the same rate, and for a TLS mode over the same path in plaintext at the same rate. \"Half ref\": the issue's rate, half the reference's throughput. \"Common\": half the slowest path's throughput, a rate every path of the mode sustains. A TLS mode runs at its plaintext counterpart's rates (its common rate only if that is at most 60%% of every TLS path's throughput; else at half the slowest's, without \"+p99\").\n\n", r.Settings["open_loop"])
	header(w, 3, "mode", "workload", "path", "half ref: rate/s", "p50", "p99", "p99.9", "+p99 us", "common: rate/s", "p50", "p99", "p99.9", "+p99 us")
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		base := r.Find(mode, wl, Direct)
		if mode == REST {
			base = r.RESTReference[wl]
			if base != nil {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", mode, wl, "direct (gRPC)", latencyCells(base.Half, nil), latencyCells(base.Common, nil))
			}
		}
		for _, p := range r.Phases {
			if p.Mode != mode || p.Workload != wl || IsFeature(p.Path) { // the feature paths run closed loop only
				continue
			}
			var hb, cb *Latency
			if base != nil && p.Path != Direct {
				hb, cb = base.Half, base.Common
			}
			if plain := r.Ref(p); IsTLS(mode) && plain != nil {
				hb, cb = sameRate(plain.Half, p.Half), sameRate(plain.Common, p.Common)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", mode, wl, p.Path, latencyCells(p.Half, hb), latencyCells(p.Common, cb))
		}
	}
	fmt.Fprintln(w, "\n(sat.): the rate is above what the path served closed loop, so its queue grew for the whole phase and its latency measures the phase's length more than the path.")
	if len(r.PeakRSS) > 0 {
		var names []string
		for n := range r.PeakRSS {
			names = append(names, n)
		}
		slices.Sort(names)
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.0f MiB", n, r.PeakRSS[n]))
		}
		fmt.Fprintf(w, "\nPeak RSS: %s.\n", strings.Join(parts, ", "))
	}
	r.FaultyMarkdown(w)
	r.notes(w)
}

func (r *Run) notes(w io.Writer) {
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

// sameRate is base when it ran at l's rate, else nil.
func sameRate(base, l *Latency) *Latency {
	if base == nil || l == nil || base.Rate != l.Rate {
		return nil
	}
	return base
}

// latencyCells formats one open-loop phase: rate, p50, p99, p99.9 and the
// p99 added over base.
func latencyCells(l, base *Latency) string {
	if l == nil {
		return " | | | | "
	}
	rate := fmt.Sprintf("%.0f", l.Rate)
	if l.Saturated {
		rate += " (sat.)"
	}
	added := ""
	if base != nil {
		added = fmt.Sprintf("%+.0f", l.P99-base.P99)
	}
	p99 := fmt.Sprintf("%.3f", l.P99/1e3)
	if len(l.RoundsP99) > 1 {
		sp := SpreadOf(l.RoundsP99)
		p99 += fmt.Sprintf(" (%.3f–%.3f)", sp.Min/1e3, sp.Max/1e3)
	}
	return fmt.Sprintf("%s | %.3f | %s | %.3f | %s", rate, l.P50/1e3, p99, l.P999/1e3, added)
}

func optional(v float64, format string) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf(format, v)
}

// costs writes where a Portico call's CPU and allocations go: the chain
// (chain on minus chain off) and, for REST, the in-memory hop and the
// typed proxy behind it (chain off minus bare grpc-gateway, which
// transcodes the same way but calls the backend directly).
func (r *Run) costs(w io.Writer) {
	fmt.Fprintln(w, "\nWhere Portico's cost goes, per call (gateway process only):")
	fmt.Fprintln(w)
	header(w, 2, "mode", "workload", "chain: CPU us", "chain: allocs", "hop + proxy (REST): CPU us", "hop + proxy (REST): allocs")
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		on, off := r.porticoPair(mode, wl)
		if on == nil {
			continue
		}
		hopCPU, hopAllocs := "", ""
		if gg := r.Find(mode, wl, GRPCGateway); mode == REST && gg != nil {
			hopCPU = fmt.Sprintf("%+.0f", off.CPUMicrosPerCall-gg.CPUMicrosPerCall)
			hopAllocs = fmt.Sprintf("%+.0f", off.AllocsPerCall-gg.AllocsPerCall)
		}
		fmt.Fprintf(w, "| %s | %s | %+.0f | %+.0f | %s | %s |\n", mode, wl,
			on.CPUMicrosPerCall-off.CPUMicrosPerCall, on.AllocsPerCall-off.AllocsPerCall, hopCPU, hopAllocs)
	}
}

// header writes a table's header row; the first left columns are text,
// the rest numbers.
func header(w io.Writer, left int, cols ...string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
	align := make([]string, len(cols))
	for i := range align {
		align[i] = "---:"
		if i < left {
			align[i] = "---"
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(align, " | "))
}

// porticoPair returns Portico with its chain on and off, or nils when
// either is missing.
func (r *Run) porticoPair(mode, workload string) (on, off *Phase) {
	on, off = r.Find(mode, workload, Portico), r.Find(mode, workload, PorticoOff)
	if on == nil || off == nil {
		return nil, nil
	}
	return on, off
}
