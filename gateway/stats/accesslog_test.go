package stats

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
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
