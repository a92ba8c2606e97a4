package testutil

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLockedBufferSharedByWriters(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				fmt.Fprintf(&b, "writer %d line %d\n", i, j)
				_ = b.String() // reads race with writes unless locked
			}
		})
	}
	wg.Wait()
	if n := len(b.Lines()); n != 8*50 {
		t.Errorf("%d lines, want %d", n, 8*50)
	}
}

func TestLockedBufferLines(t *testing.T) {
	var b LockedBuffer
	if got := b.Lines(); len(got) != 0 {
		t.Errorf("empty buffer: %q", got)
	}
	b.Write([]byte("a\r\n\nb\nc"))
	if got := b.Lines(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Lines = %q", got)
	}
}

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	calls := 0
	Eventually(t, time.Minute, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

// fatalTB records Fatalf instead of ending the test. It embeds the
// interface: what it does not fake, Eventually does not call.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventuallyFailsNamingWhat(t *testing.T) {
	tb := &fatalTB{}
	start := time.Now()
	last := time.Time{}
	// The fake's Fatalf returns, so make cond end the loop once it failed.
	Eventually(tb, 20*time.Millisecond, "the moon", func() bool { last = time.Now(); return tb.msg != "" })
	if !strings.Contains(tb.msg, "the moon") || !strings.Contains(tb.msg, "20ms") {
		t.Errorf("Fatalf message %q does not name what and how long", tb.msg)
	}
	if d := last.Sub(start); d < 20*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", d)
	}
}
