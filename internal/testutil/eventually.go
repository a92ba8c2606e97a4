package testutil

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns true, at once and then after
// pauses that grow from a millisecond to 50ms, and fails the test with
// "timed out after <timeout> waiting for <what>" if it still does not
// after timeout. cond runs on the test's goroutine, so it may call
// t.Fatal itself.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}
