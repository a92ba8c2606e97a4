package stats

import (
	"context"
	"io"
	"sync"
	"time"
)

// Access log buffering: one write(2) per call was the largest single item
// of the chain in the gateway's CPU profile. Lines are batched and written
// whole, when a buffer is full and at most logFlushEvery after they were
// logged while Stats runs.
const (
	logBufferSize = 64 << 10
	logFlushEvery = 100 * time.Millisecond
)

// logWriter buffers whole access log lines in front of out, in two
// buffers: calls append their lines to one while the other is written out,
// so a write to out, slow when out is a busy disk or a pipe whose reader
// lags, holds up no call that logs meanwhile. Only when the second buffer
// fills before the first is written do calls wait, which bounds the memory
// at two buffers. slog's handlers write one line per Write, and buffers are
// written whole, so a line never straddles two writes to out.
type logWriter struct {
	out io.Writer

	mu  sync.Mutex
	buf []byte // lines not yet handed to out

	// spare holds the buffer not in use, while no write is in progress.
	// Taking it (under mu) makes a caller the next writer, and it comes
	// back only when that write has ended: writes to out go one at a
	// time, in the order their buffers filled.
	spare chan []byte
	// writing is held for the length of a write, for Flush to wait on
	// one in progress.
	writing sync.Mutex
}

func newLogWriter(out io.Writer) *logWriter {
	w := &logWriter{out: out, buf: make([]byte, 0, logBufferSize), spare: make(chan []byte, 1)}
	w.spare <- make([]byte, 0, logBufferSize)
	return w
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.writeLine(func(b []byte) []byte { return append(b, p...) })
	return len(p), nil
}

// writeLine appends the line that appendLine appends, and writes the
// buffer out once it is full.
func (w *logWriter) writeLine(appendLine func([]byte) []byte) {
	w.mu.Lock()
	w.buf = appendLine(w.buf)
	if len(w.buf) < logBufferSize {
		w.mu.Unlock()
		return
	}
	_ = w.writeOut()
}

// Flush writes out the buffered lines, after any write in progress.
func (w *logWriter) Flush() error {
	w.mu.Lock()
	if len(w.buf) == 0 {
		w.mu.Unlock()
		w.writing.Lock() // a write in progress ends before Flush returns
		w.writing.Unlock()
		return nil
	}
	return w.writeOut()
}

// writeOut is called with mu held, and releases it: it swaps the buffer
// for the spare (waiting, with mu held, while the spare is being written)
// and writes the full one out without mu. A failed write drops the lines
// it held, as an unbuffered write would have dropped its line, and no
// more.
func (w *logWriter) writeOut() error {
	full := w.buf
	w.buf = <-w.spare
	w.writing.Lock()
	w.mu.Unlock()
	defer func() { // even if out panics, the next writer gets the spare
		w.writing.Unlock()
		w.spare <- full[:0]
	}()
	_, err := w.out.Write(full)
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
