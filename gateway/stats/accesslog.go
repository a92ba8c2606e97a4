package stats

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
)

// logCall writes the call's access log line. Its fields are chosen, never
// copied from the request: no header, metadata, token or message body can
// reach the log.
func (s *Stats) logCall(ctx context.Context, cl *call, code codes.Code, d time.Duration, rejectedBy, reason string) {
	if code == codes.OK && s.opts.sample < 1 && rand.Float64() >= s.opts.sample {
		return
	}
	c := cl.c
	var buf [16]slog.Attr
	attrs := append(buf[:0], slog.String("transport", string(c.Transport)))
	if c.Transport == policy.REST {
		attrs = append(attrs, slog.String("route", c.HTTPRoute))
	}
	attrs = append(attrs, slog.String("method", c.FullMethod))
	if c.Transport == policy.REST {
		attrs = append(attrs, slog.Int("status", runtime.HTTPStatusFromCode(code)))
	}
	attrs = append(attrs,
		slog.String("code", code.String()),
		// A duration, not a float: slog's JSON handler formats floats
		// through encoding/json, which costs more than the rest of the line.
		slog.Duration("latency", d),
		slog.String("client_ip", c.ClientIP),
	)
	if id := c.Identity; id != nil && id.Consumer != "" {
		attrs = append(attrs, slog.String("consumer", id.Consumer))
	}
	attrs = append(attrs, slog.Int64("bytes_in", cl.in), slog.Int64("bytes_out", cl.out), slog.String("backend", c.Backend))
	if inst := cl.rec.instance.Load(); inst != nil {
		attrs = append(attrs, slog.String("instance", *inst))
	}
	if rejectedBy != "" {
		attrs = append(attrs, slog.String("rejected_by", rejectedBy))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	if tid := traceID(ctx, cl.span); tid != "" {
		attrs = append(attrs, slog.String("trace_id", tid))
	}
	s.opts.accessLog.LogAttrs(ctx, slog.LevelInfo, "call", attrs...)
}
