package stats

import (
	"bufio"
	"context"
	"io"
	"sync"
	"time"
)

// Access log buffering: one write(2) per call was the largest single item
// of the chain in the gateway's CPU profile. Lines are batched and written
// whole, at most logFlushEvery after they were logged while Stats runs.
const (
	logBufferSize = 64 << 10
	logFlushEvery = 100 * time.Millisecond
)

// logWriter buffers whole access log lines in front of out. slog's
// handlers write one line per Write, so a line never straddles two writes
// to out: a line that does not fit flushes the buffer first.
type logWriter struct {
	mu      sync.Mutex
	out     io.Writer
	buf     *bufio.Writer
	scratch []byte // writeLine's, reused under mu
}

func newLogWriter(out io.Writer) *logWriter {
	return &logWriter{out: out, buf: bufio.NewWriterSize(out, logBufferSize)}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(p) > w.buf.Available() && w.buf.Buffered() > 0 {
		w.flushLocked()
	}
	n, err := w.buf.Write(p)
	if err != nil {
		w.buf.Reset(w.out)
	}
	return n, err
}

// writeLine writes the line that appendLine appends to an empty slice,
// encoded in a buffer that every line reuses.
func (w *logWriter) writeLine(appendLine func([]byte) []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scratch = appendLine(w.scratch[:0])
	if len(w.scratch) > w.buf.Available() && w.buf.Buffered() > 0 {
		w.flushLocked()
	}
	if _, err := w.buf.Write(w.scratch); err != nil {
		w.buf.Reset(w.out)
	}
}

// Flush writes out the buffered lines.
func (w *logWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// flushLocked writes the buffer out. A failed write drops the lines it
// held, as an unbuffered write would have dropped its line, rather than
// leaving bufio's error stuck and losing every line after it.
func (w *logWriter) flushLocked() error {
	err := w.buf.Flush()
	if err != nil {
		w.buf.Reset(w.out)
	}
	return err
}

// flushEvery flushes w every interval until ctx ends, then once more.
func (w *logWriter) flushEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = w.Flush()
			return
		case <-t.C:
			_ = w.Flush()
		}
	}
}
