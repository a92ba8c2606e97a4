package stats_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/stats"
	"github.com/prometheus/client_golang/prometheus"
)

// writes records each write it is given, and can fail the next one.
type writes struct {
	mu      sync.Mutex
	got     [][]byte
	failOne bool
	written chan struct{} // capacity 1: signalled after each write
}

func newWrites() *writes { return &writes{written: make(chan struct{}, 1)} }

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failOne {
		w.failOne = false
		return 0, errors.New("disk full")
	}
	w.got = append(w.got, bytes.Clone(p))
	select {
	case w.written <- struct{}{}:
	default:
	}
	return len(p), nil
}

// lines returns the JSON lines written so far, checking that every write
// held whole lines.
func (w *writes) lines(t *testing.T) []map[string]any {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	for _, p := range w.got {
		if !bytes.HasSuffix(p, []byte("\n")) {
			t.Fatalf("a write ends mid-line: %q", p[max(len(p)-40, 0):])
		}
		for l := range bytes.Lines(p) {
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			out = append(out, m)
		}
	}
	return out
}

func (w *writes) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

func bufferedFixture(t *testing.T, w io.Writer) *fixture {
	t.Helper()
	return newFixture(t, stats.WithBufferedAccessLog(w, func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }))
}

func TestBufferedAccessLogWaitsForFlush(t *testing.T) {
	w := newWrites()
	f := bufferedFixture(t, w)
	c := restCall("GetProduct")
	if err := f.unary(t, incoming(c), c, ok); err != nil {
		t.Fatal(err)
	}
	if n := w.count(); n != 0 {
		t.Fatalf("%d writes before a flush, want the line buffered", n)
	}
	if f.log.String() != "" {
		t.Fatalf("the unbuffered fixture log got %q", f.log.String())
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := w.lines(t)
	if len(lines) != 1 || lines[0]["method"] != c.FullMethod || lines[0]["code"] != "OK" {
		t.Fatalf("after Flush: %v, want one line for %s", lines, c.FullMethod)
	}
}

func TestBufferedAccessLogWritesWholeLinesWhenFull(t *testing.T) {
	w := newWrites()
	f := bufferedFixture(t, w)
	c := restCall("GetProduct")
	const calls = 1000 // several buffers' worth
	for range calls {
		if err := f.unary(t, incoming(c), c, ok); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.count(); n < 2 {
		t.Fatalf("%d writes for %d lines before a flush, want the full buffer written out", n, calls)
	}
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(w.lines(t)); got != calls {
		t.Fatalf("%d lines after Close, want %d", got, calls)
	}
	if n := w.count(); n > calls/10 {
		t.Fatalf("%d writes for %d lines, want them batched", n, calls)
	}
}

func TestBufferedAccessLogFlushedWhileRunning(t *testing.T) {
	w := newWrites()
	f := bufferedFixture(t, w)
	if err := f.s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.s.Close()
	c := restCall("GetProduct")
	if err := f.unary(t, incoming(c), c, ok); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.written:
	case <-time.After(10 * time.Second):
		t.Fatal("the line was not flushed while Stats ran")
	}
	if lines := w.lines(t); len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
}

func TestBufferedAccessLogCloseFlushes(t *testing.T) {
	w := newWrites()
	f := bufferedFixture(t, w)
	if err := f.s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := restCall("GetProduct")
	for range 3 {
		if err := f.unary(t, incoming(c), c, ok); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if lines := w.lines(t); len(lines) != 3 {
		t.Fatalf("%d lines after Close, want 3", len(lines))
	}
}

// A failed write loses the lines it carried, as an unbuffered one would,
// and no more.
func TestBufferedAccessLogSurvivesAFailedWrite(t *testing.T) {
	w := newWrites()
	w.failOne = true
	f := bufferedFixture(t, w)
	c := restCall("GetProduct")
	if err := f.unary(t, incoming(c), c, ok); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Flush(); err == nil {
		t.Fatal("Flush hid the failed write")
	}
	if err := f.unary(t, incoming(c), c, ok); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Flush(); err != nil {
		t.Fatal(err)
	}
	if lines := w.lines(t); len(lines) != 1 {
		t.Fatalf("%d lines, want the one logged after the failure", len(lines))
	}
}

// Stats without a buffered access log has nothing to flush.
func TestFlushWithoutBuffer(t *testing.T) {
	s, err := stats.New(prometheus.NewRegistry(), routes)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
}
