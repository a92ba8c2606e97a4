package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApplySetsTheDefaultWhenGOGCIsUnset(t *testing.T) {
	t.Setenv("GOGC", "")
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	percent, from := Apply()
	if percent != "400" || from != "default" {
		t.Errorf("Apply() = %s, %s; want 400, default", percent, from)
	}
	if got := debug.SetGCPercent(100); got != Percent {
		t.Errorf("GC percent after Apply = %d, want %d", got, Percent)
	}
}

func TestApplyLeavesGOGCAlone(t *testing.T) {
	t.Setenv("GOGC", "150")
	prev := debug.SetGCPercent(120) // what the runtime would have from GOGC
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	percent, from := Apply()
	if percent != "120" || from != "GOGC" {
		t.Errorf("Apply() = %s, %s; want the runtime's 120, GOGC", percent, from)
	}
	if got := debug.SetGCPercent(prev); got != 120 {
		t.Errorf("GC percent after Apply = %d, want it untouched (120)", got)
	}
}
