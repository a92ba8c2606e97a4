// Package gctune sets how often a gateway process collects garbage.
//
// A gateway's live heap is small (connections, routes, rate-limit buckets)
// and nearly all it allocates lives for one call, so Go's default target,
// a collection whenever the heap has grown by 100% of the live heap, spends
// a tenth of the process's CPU marking a heap that is almost all garbage.
// Collecting at 400% trades memory for that CPU: in the 2026-11-30 runs of
// make bench, 17% less CPU per proxied call and a peak RSS of about 105 MiB
// instead of 65 MiB (docs/performance.md).
package gctune

import (
	"os"
	"runtime/debug"
	"strconv"
)

// Percent is the GOGC value of a gateway process whose environment sets
// none.
const Percent = 400

// Apply sets the collector's target to Percent unless the GOGC environment
// variable sets one, which the Go runtime has then applied already; GOGC=100
// is Go's default. It returns the target in force ("off" for none; what the
// runtime made of GOGC, 100 for a value it could not read) and where it
// comes from, for the startup log. GOMEMLIMIT, when set, still caps the
// heap.
func Apply() (percent string, from string) {
	if os.Getenv("GOGC") != "" {
		cur := debug.SetGCPercent(100) // read back at once
		debug.SetGCPercent(cur)
		if cur < 0 {
			return "off", "GOGC"
		}
		return strconv.Itoa(cur), "GOGC"
	}
	debug.SetGCPercent(Percent)
	return strconv.Itoa(Percent), "default"
}
