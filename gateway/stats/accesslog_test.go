package stats

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// TestJSONAccessLogMatchesSlog holds the access log's JSON encoder to
// slog.NewJSONHandler: the same bytes for the same entry, for every shape of
// line and for strings that need escaping.
func TestJSONAccessLogMatchesSlog(t *testing.T) {
	now := time.Date(2026, 11, 28, 23, 40, 1, 123456000, time.UTC)
	var hard strings.Builder
	for c := 0; c < 0x80; c++ {
		hard.WriteByte(byte(c))
	}
	hard.WriteString("josé \u2028\u2029 \xff\xfe 日本 <a&b>")
	entries := []entry{
		{transport: "grpc", method: "/catalog.v1.CatalogService/GetProduct", code: codes.OK, latency: 1234567,
			clientIP: "127.0.0.1", in: 12, out: 345, backend: "catalog", instance: "catalog-1"},
		{transport: "rest", route: "GET /v1/products/{id}", method: "/catalog.v1.CatalogService/GetProduct", status: 429,
			code: codes.ResourceExhausted, latency: 99, clientIP: "2001:db8::1", consumer: "tester", backend: "catalog",
			rejectedBy: "ratelimit", reason: "RATE_LIMITED", traceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{transport: "grpc", method: hard.String(), code: codes.Unauthenticated, clientIP: "unknown", consumer: hard.String(),
			backend: "catalog", reason: hard.String()},
	}
	for i, e := range entries {
		var want bytes.Buffer
		h := slog.NewJSONHandler(&want, nil)
		r := slog.NewRecord(now, slog.LevelInfo, "call", 0)
		r.AddAttrs(e.attrs(nil)...)
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if got := e.appendJSON(nil, now); string(got) != want.String() {
			t.Errorf("entry %d:\n got %s\nwant %s", i, got, want.String())
		}
	}
}

// BenchmarkAccessLogLine is one access log line through slog's JSON handler
// and through the access log's own encoder, both into a buffered writer.
func BenchmarkAccessLogLine(b *testing.B) {
	e := entry{transport: "rest", route: "GET /v1/products/{id}", method: "/catalog.v1.CatalogService/GetProduct", status: 200,
		code: codes.OK, latency: 1234567, clientIP: "127.0.0.1", consumer: "tester", in: 12, out: 345, backend: "catalog", instance: "catalog-1"}
	b.Run("slog", func(b *testing.B) {
		w := newLogWriter(discard{})
		l := slog.New(slog.NewJSONHandler(w, nil))
		b.ReportAllocs()
		for b.Loop() {
			var buf [16]slog.Attr
			l.LogAttrs(context.Background(), slog.LevelInfo, "call", e.attrs(buf[:0])...)
		}
	})
	b.Run("own", func(b *testing.B) {
		w := newLogWriter(discard{})
		b.ReportAllocs()
		for b.Loop() {
			w.writeLine(func(buf []byte) []byte { return e.appendJSON(buf, time.Now()) })
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// blockingSink is an access log destination whose writes wait until the
// test releases them: a disk or a pipe reader that has fallen behind.
type blockingSink struct {
	started chan int      // the size of each write, as it starts
	release chan struct{} // one write ends per receive
	mu      sync.Mutex
	got     []byte
}

func (s *blockingSink) Write(p []byte) (int, error) {
	s.started <- len(p)
	<-s.release
	s.mu.Lock()
	s.got = append(s.got, p...)
	s.mu.Unlock()
	return len(p), nil
}

// TestLogWriterSlowSink: while one call writes a full buffer to a sink that
// does not return, other calls go on logging into the other buffer without
// waiting; only once that one is full too does logging wait for the sink.
// Every line arrives, in order.
func TestLogWriterSlowSink(t *testing.T) {
	sink := &blockingSink{started: make(chan int, 4), release: make(chan struct{})}
	w := newLogWriter(sink)
	const perBuffer = logBufferSize/101 + 1 // lines of 101 bytes that fill a buffer
	next := 0
	// logLines logs n lines in a goroutine, as calls would, and closes the
	// channel it returns when they are in.
	logLines := func(n int) chan struct{} {
		from := next
		next += n
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := from; i < from+n; i++ {
				w.writeLine(func(b []byte) []byte { return fmt.Appendf(b, "%0100d\n", i) })
			}
		}()
		return done
	}
	within := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal(what)
		}
	}
	first := logLines(perBuffer) // its last line writes the buffer out, and waits
	select {
	case n := <-sink.started:
		t.Logf("the sink holds a write of %d bytes", n)
	case <-time.After(10 * time.Second):
		t.Fatal("a full buffer was not written out")
	}
	within(logLines(perBuffer-1), "logging waited for a slow write with room in the other buffer")
	t.Logf("%d lines logged while the sink held the first buffer", perBuffer-1)
	second := logLines(1) // fills the second buffer: waits for the first write
	// Nothing may happen until the sink returns; a wrong writer would go
	// on within microseconds, so a tenth of a second shows it.
	select {
	case <-sink.started:
		t.Fatal("a second write started while the first was in progress")
	case <-second:
		t.Fatal("logging went on with both buffers full and the sink stuck")
	case <-first:
		t.Fatal("the first write returned before the sink did")
	case <-time.After(100 * time.Millisecond):
	}
	sink.release <- struct{}{} // the first write ends; the second starts
	within(first, "the first writer did not return once the sink did")
	<-sink.started
	sink.release <- struct{}{}
	within(second, "the second writer did not return once the sink did")
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		if err := w.Flush(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-sink.started: // nothing was left to write, or this
		sink.release <- struct{}{}
	case <-flushed:
	}
	within(flushed, "Flush did not return")
	lines := bytes.Split(bytes.TrimSuffix(sink.got, []byte("\n")), []byte("\n"))
	if len(lines) != next {
		t.Fatalf("%d lines reached the sink, want %d", len(lines), next)
	}
	for n, l := range lines {
		if want := fmt.Sprintf("%0100d", n); string(l) != want {
			t.Fatalf("line %d is %q", n, l)
		}
	}
}
