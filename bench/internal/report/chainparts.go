package report

import (
	"fmt"
	"io"

	"github.com/portico-gw/portico/bench/internal/chainprof"
)

// ChainParts is the chain's own work in one profiled phase: each part's
// share of Portico's CPU samples (package chainprof).
type ChainParts struct {
	Mode     string             `json:"mode"`
	Workload string             `json:"workload"`
	Shares   map[string]float64 `json:"shares"`
}

// ChainPartsTable writes the chain's own work per call, part by part,
// beside its cost measured: each part's share of the profile times
// Portico's CPU per call in the rounds. Call facts, the chain's head, runs
// in portico-nochain too, so it is shown but left out of the sum set
// beside the cost measured (Portico less portico-nochain). Nothing when no
// phase was profiled.
func (r *Run) ChainPartsTable(w io.Writer) {
	if len(r.ChainParts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nThe chain's own work per call, in us, from Portico's CPU profile of each profiled phase: the samples of each policy's interceptor less the next step's it calls, as a share of the process's samples, times Portico's CPU per call in the rounds above (\"n/a\": the policy is off, or does no work on that door). \"Measured\" is the chain's whole cost, Portico's CPU per call less portico-nochain's, round by round; what the parts leave of it is spread over grpc-go, the runtime and the garbage collector. Call facts, the chain's head, runs in portico-nochain too, so it is no part of that cost and not in the sum.")
	fmt.Fprintln(w)
	cols := append([]string{"mode", "workload"}, chainprof.Parts()...)
	header(w, 2, append(cols, "stats to validation together", "measured")...)
	for _, c := range r.ChainParts {
		on, off := r.Find(c.Mode, c.Workload, Portico), r.Find(c.Mode, c.Workload, PorticoOff)
		if on == nil {
			continue
		}
		fmt.Fprintf(w, "| %s | %s |", c.Mode, c.Workload)
		var sum float64
		for _, part := range chainprof.Parts() {
			share, ok := c.Shares[part]
			if !ok {
				fmt.Fprint(w, " n/a |")
				continue
			}
			us := share * on.CPUMicrosPerCall
			if part != chainprof.Facts {
				sum += us
			}
			fmt.Fprintf(w, " %.1f |", us)
		}
		fmt.Fprintf(w, " %.1f | %s |\n", sum, Across(on, off, cpuAdded).format("%+.0f", ""))
	}
}
