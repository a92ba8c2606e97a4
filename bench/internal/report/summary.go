package report

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/portico-gw/portico/bench/internal/fixture"
)

// Summary writes the figures the README shows: one row per mode and
// workload with Portico against its reference and its peer, each a median
// of the rounds with their min and max; then what the edge limits,
// retries and circuit breaker cost, and the targets.
func (r *Run) Summary(w io.Writer) {
	header(w, 2, "mode", "workload", "Portico calls/s", "x direct or x grpc-gateway", "x nginx or x vanguard", "throughput lost to the chain", "CPU us/call: Portico, no chain, peer", "allocs/call: Portico, no chain, peer", "p99 ms at the common rate: direct, Portico, peer")
	for _, g := range r.groups() {
		mode, wl := g[0], g[1]
		on, off := r.porticoPair(mode, wl)
		if on == nil {
			continue
		}
		ref := r.Find(mode, wl, Reference(mode))
		// The peer of the ratio column, and the one whose costs are shown:
		// nginx for gRPC; for REST, vanguard's ratio and grpc-gateway's costs.
		peer, costly, direct := r.Find(mode, wl, Nginx), r.Find(mode, wl, Nginx), ref
		switch {
		case mode == REST:
			peer, costly, direct = r.Find(mode, wl, Vanguard), ref, r.RESTReference[wl]
		case IsWeb(mode):
			// Connect and gRPC-Web: against direct gRPC's throughput and
			// vanguard alone (the transcoding without the chain).
			ref = r.Find(GRPC, wl, Direct)
			peer, costly, direct = r.Find(mode, wl, Vanguard), r.Find(mode, wl, Vanguard), nil
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s, %s, %s | %s, %s, %s | %s, %s, %s |\n",
			mode, wl, Of(on, perSecond).format("%.0f", ""), ratio(on, ref), ratio(on, peer), Lost(on, off).scaled(100).format("%.0f", "%"),
			num(on.CPUMicrosPerCall), num(off.CPUMicrosPerCall), cost(costly, func(p *Phase) float64 { return p.CPUMicrosPerCall }),
			num(on.AllocsPerCall), num(off.AllocsPerCall), cost(costly, func(p *Phase) float64 { return p.AllocsPerCall }),
			commonP99(direct), commonP99(on), commonP99(costly))
	}
	r.FeatureTable(w)
	r.TargetTable(w)
	r.streamCosts(w)
	r.FloorTable(w)
	r.ChainPartsTable(w)
}

// FloorTable writes the grpc-go floor beside nginx and Portico: what the
// least proxy built on grpc-go's server and client costs, and what
// Portico adds to it. Nothing when the run has no floor path.
func (r *Run) FloorTable(w io.Writer) {
	var rows [][2]string
	for _, g := range r.groups() {
		if r.Find(g[0], g[1], Floor) != nil && r.Find(g[0], g[1], Nginx) != nil {
			rows = append(rows, g)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nThe grpc-go floor: a grpc.Server whose handlers pass each message on as bytes through one grpc.ClientConn to the backend, copying metadata both ways, nothing else (bench/internal/servers/floor.go), in the same rounds. What it costs is grpc-go's server and client transports, which any gateway on grpc-go pays; Portico's gRPC door is built of the same parts. Median (min–max) of the rounds.")
	fmt.Fprintln(w)
	header(w, 2, "mode", "workload", "floor calls/s", "floor x nginx", "Portico x floor", "CPU us/call: floor, nginx", "floor CPU x nginx", "CPU us Portico adds: no chain, full chain", "allocs/call: floor; Portico adds: no chain, full chain")
	allocsAdded := func(a, b Round) float64 { return a.AllocsPerCall - b.AllocsPerCall }
	for _, g := range rows {
		mode, wl := g[0], g[1]
		floor, nginx := r.Find(mode, wl, Floor), r.Find(mode, wl, Nginx)
		on, off := r.Find(mode, wl, Portico), r.Find(mode, wl, PorticoOff)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s, %s | %s | %s, %s | %s; %s, %s |\n", mode, wl,
			Of(floor, perSecond).format("%.0f", ""), ratio(floor, nginx), ratio(on, floor),
			num(floor.CPUMicrosPerCall), num(nginx.CPUMicrosPerCall), Across(floor, nginx, cpuRatio).format("%.2f", "x"),
			Across(off, floor, cpuAdded).format("%+.0f", ""), Across(on, floor, cpuAdded).format("%+.0f", ""),
			num(floor.AllocsPerCall), Across(off, floor, allocsAdded).format("%+.0f", ""), Across(on, floor, allocsAdded).format("%+.0f", ""))
	}
}

// FeatureTable writes what the features of issue 16's cost target cost:
// for each feature, 1 − Portico's throughput over that of Portico with the
// feature off, round by round. Nothing when the run has no feature path.
func (r *Run) FeatureTable(w io.Writer) {
	var rows [][2]string
	for _, g := range r.groups() {
		if r.Find(g[0], g[1], Portico) != nil && slices.ContainsFunc(Features(), func(f Feature) bool { return r.Find(g[0], g[1], f.Path) != nil }) {
			rows = append(rows, g)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nWhat the edge limits, retries and circuit breaker cost: each is 1 − (Portico's throughput / that of Portico with the feature off), full chain on both, median (min–max) of the per-round figures, the paths of a round run back to back. Off: edge limits as loose as config allows (max_resets_per_second 0, every count, size and time at a value that never binds); retries max_attempts 1 (retry_throttling cannot be turned off, and does nothing with no retries); max_concurrent_requests -1 (no limit).")
	fmt.Fprintln(w)
	cols := []string{"mode", "workload", "Portico calls/s"}
	for _, f := range Features() {
		cols = append(cols, f.Off)
	}
	header(w, 2, cols...)
	for _, g := range rows {
		on := r.Find(g[0], g[1], Portico)
		cells := []string{g[0], g[1], Of(on, perSecond).format("%.0f", "")}
		for _, f := range Features() {
			cells = append(cells, Lost(on, r.Find(g[0], g[1], f.Path)).scaled(100).format("%.1f", "%"))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

// streamCosts writes the server streams' CPU per message, which their
// target compares.
func (r *Run) streamCosts(w io.Writer) {
	var parts []string
	for _, mode := range grpcModes {
		on, nginx := r.Find(mode, "stream", Portico), r.Find(mode, "stream", Nginx)
		if on == nil || nginx == nil {
			continue
		}
		per := func(p *Phase) string {
			return Of(p, func(r Round) float64 { return r.CPUMicrosPerCall / fixture.StreamLength }).format("%.2f", "")
		}
		parts = append(parts, fmt.Sprintf("%s Portico %s, nginx %s", mode, per(on), per(nginx)))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "\nServer streams (%d messages each), CPU us per message: %s.\n", fixture.StreamLength, strings.Join(parts, "; "))
	}
}

func perSecond(r Round) float64 { return r.PerSecond }

// ratio is p's throughput over of's, round by round: the median, with
// the min and max.
func ratio(p, of *Phase) string {
	return ThroughputRatio(p, of).format("%.2f", "x")
}

func num(v float64) string { return fmt.Sprintf("%.0f", v) }

func cost(p *Phase, of func(*Phase) float64) string {
	if p == nil || of(p) == 0 {
		return "n/a"
	}
	return num(of(p))
}

func commonP99(p *Phase) string {
	if p == nil || p.Common == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", p.Common.P99/1e3)
}
