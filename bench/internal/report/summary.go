package report

import (
	"fmt"
	"io"
	"strings"
)

// Summary writes the figures the README shows: one row per mode and
// workload with Portico against its reference and its peer, then the
// targets, grouped over workloads.
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
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %.0f%% | %s, %s, %s | %s, %s, %s | %s, %s, %s |\n",
			mode, wl, on.PerSecond, ratio(on, ref), ratio(on, peer), 100*(1-on.PerSecond/off.PerSecond),
			num(on.CPUMicrosPerCall), num(off.CPUMicrosPerCall), cost(costly, func(p *Phase) float64 { return p.CPUMicrosPerCall }),
			num(on.AllocsPerCall), num(off.AllocsPerCall), cost(costly, func(p *Phase) float64 { return p.AllocsPerCall }),
			commonP99(direct), commonP99(on), commonP99(costly))
	}
	fmt.Fprintln(w, "\n| target | want | this run | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	type group struct {
		name, want string
		targets    []Target
		where      []string
	}
	var groups []*group
	for _, t := range r.Targets {
		where, name, _ := strings.Cut(t.Name, ": ")
		transport := "gRPC"
		if strings.HasPrefix(where, REST) {
			transport = "REST"
		}
		name = transport + ": " + name
		var g *group
		for _, x := range groups {
			if x.name == name {
				g = x
			}
		}
		if g == nil {
			g = &group{name: name, want: t.Want}
			groups = append(groups, g)
		}
		g.targets, g.where = append(g.targets, t), append(g.where, where)
	}
	for _, g := range groups {
		lo, hi, met := 0, 0, 0
		for i, t := range g.targets {
			if t.Got < g.targets[lo].Got {
				lo = i
			}
			if t.Got > g.targets[hi].Got {
				hi = i
			}
			if t.Met {
				met++
			}
		}
		got := fmt.Sprintf("%s (%s)", formatGot(g.targets[lo]), g.where[lo])
		if len(g.targets) > 1 {
			got += fmt.Sprintf(" to %s (%s)", formatGot(g.targets[hi]), g.where[hi])
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d of %d |\n", g.name, g.want, got, met, len(g.targets))
	}
}

func ratio(p, of *Phase) string {
	if of == nil || of.PerSecond == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", p.PerSecond/of.PerSecond)
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
