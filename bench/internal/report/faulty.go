package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Paths of the faulty workload besides Portico and nginx: one of the set's
// healthy instances called directly (the sanity row: it must be 100%), and
// its faulty instance called directly (what the fault rate came to).
const (
	DirectHealthy = "direct (healthy instance)"
	DirectFaulty  = "direct (faulty instance)"
)

// FaultyPhase is one path's GetProduct calls against a backend of three
// instances, one of which answers UNAVAILABLE to a share of its calls
// while its health check passes.
type FaultyPhase struct {
	FailRate  float64          `json:"fail_rate"` // the faulty instance's
	Path      string           `json:"path"`
	Calls     int64            `json:"calls"`
	Succeeded int64            `json:"succeeded"`
	Ratio     float64          `json:"success_ratio"`
	Failures  map[string]int64 `json:"failures,omitempty"` // by gRPC code
	FirstErr  string           `json:"first_error,omitempty"`
	Seconds   float64          `json:"seconds"`
	// Latency of the calls that succeeded, retries included, in
	// microseconds.
	P50 float64 `json:"p50_us"`
	P99 float64 `json:"p99_us"`
}

// FindFaulty returns a faulty-workload phase, or nil.
func (r *Run) FindFaulty(failRate float64, path string) *FaultyPhase {
	for _, p := range r.Faulty {
		if p.FailRate == failRate && p.Path == path {
			return p
		}
	}
	return nil
}

// FaultyMarkdown writes the faulty workload's table: each path's success
// ratio against the same faulty backend set.
func (r *Run) FaultyMarkdown(w io.Writer) {
	if len(r.Faulty) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFaulty instance (%s). Latency: of the calls that succeeded, retries included, closed loop.\n\n", r.Settings["faulty"])
	header(w, 2, "faulty instance's fail rate", "path", "calls", "succeeded", "success ratio", "failures by code", "p50 ms", "p99 ms")
	for _, p := range r.Faulty {
		var codes []string
		for _, c := range slices.Sorted(maps.Keys(p.Failures)) {
			codes = append(codes, fmt.Sprintf("%s %d", c, p.Failures[c]))
		}
		latency := " | " // no call succeeded
		if p.Succeeded > 0 {
			latency = fmt.Sprintf("%.2f | %.2f", p.P50/1e3, p.P99/1e3)
		}
		fmt.Fprintf(w, "| %g | %s | %d | %d | %.2f%% | %s | %s |\n", p.FailRate, p.Path, p.Calls, p.Succeeded,
			100*p.Ratio, strings.Join(codes, ", "), latency)
	}
	if n := r.Settings["faulty_nginx"]; n != "" {
		fmt.Fprintf(w, "\nnginx: %s\n", n)
	}
}

// faultyOnly is the Markdown of a run of the faulty workload alone.
func (r *Run) faultyOnly(w io.Writer) {
	fmt.Fprintf(w, "Run %s on %s (%s, nginx %s).\n", r.Date, r.Host["machine"], r.Host["go"], r.Host["nginx"])
	r.FaultyMarkdown(w)
	r.notes(w)
}
