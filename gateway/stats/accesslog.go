package stats

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
)

// logCall writes the call's access log line. Its fields are chosen, never
// copied from the request: no header, metadata, token or message body can
// reach the log.
func (s *Stats) logCall(ctx context.Context, cl *call, code codes.Code, d time.Duration, rejectedBy, reason string) {
	// Sampling drops only what says nothing new: an OK call, but never a
	// composite's that lost an optional step (its partial_failure).
	if code == codes.OK && cl.c.PartialFailure == "" && s.opts.sample < 1 && rand.Float64() >= s.opts.sample {
		return
	}
	c := cl.c
	e := entry{transport: string(c.Transport), method: c.FullMethod, code: code, latency: d,
		clientIP: c.ClientIP, in: cl.in, out: cl.out, backend: c.Backend,
		rejectedBy: rejectedBy, reason: reason, traceID: traceID(ctx, c, cl.span)}
	if c.Transport == policy.REST {
		e.route, e.status = c.HTTPRoute, policy.HTTPStatus(code)
		if cl.httpStatus != 0 {
			e.status = cl.httpStatus
		}
	}
	if id := c.Identity; id != nil {
		e.consumer = id.Consumer
	}
	e.instance = c.Instance()
	e.attempts = int32(c.Attempts())
	if st := c.Step; st != nil {
		e.stepOf, e.step = st.Composite, st.Name
	}
	e.partial = c.PartialFailure
	if s.opts.jsonLog {
		s.opts.logWriter.writeLine(func(b []byte) []byte { return e.appendJSON(b, s.opts.now()) })
		return
	}
	var buf [16]slog.Attr
	s.opts.accessLog.LogAttrs(ctx, slog.LevelInfo, "call", e.attrs(buf[:0])...)
}

// entry is one access log line. attrs (for a slog handler) and appendJSON
// (the JSON access log's own encoder) write the same fields, in the same
// order, under the same conditions; TestJSONAccessLogMatchesSlog holds
// them to it.
type entry struct {
	transport, route, method    string
	status                      int // HTTP status, REST only
	code                        codes.Code
	latency                     time.Duration
	clientIP, consumer          string
	in, out                     int64
	backend, instance           string
	attempts                    int32 // written when over 1: the call was retried
	rejectedBy, reason, traceID string
	// stepOf and step mark a composite's step; partial names the
	// composite's optional steps that failed.
	stepOf, step, partial string
}

// trailing is the line's last fields, each written only when not empty.
func (e *entry) trailing() [7]struct{ k, v string } {
	return [7]struct{ k, v string }{{"instance", e.instance}, {"rejected_by", e.rejectedBy}, {"reason", e.reason},
		{"step_of", e.stepOf}, {"step", e.step}, {"partial_failure", e.partial}, {"trace_id", e.traceID}}
}

func (e *entry) attrs(attrs []slog.Attr) []slog.Attr {
	attrs = append(attrs, slog.String("transport", e.transport))
	if e.route != "" {
		attrs = append(attrs, slog.String("route", e.route))
	}
	attrs = append(attrs, slog.String("method", e.method))
	if e.status != 0 {
		attrs = append(attrs, slog.Int("status", e.status))
	}
	attrs = append(attrs,
		slog.String("code", e.code.String()),
		// A duration, not a float: slog's JSON handler formats floats
		// through encoding/json, which costs more than the rest of the line.
		slog.Duration("latency", e.latency),
		slog.String("client_ip", e.clientIP),
	)
	if e.consumer != "" {
		attrs = append(attrs, slog.String("consumer", e.consumer))
	}
	attrs = append(attrs, slog.Int64("bytes_in", e.in), slog.Int64("bytes_out", e.out), slog.String("backend", e.backend))
	if e.attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", int(e.attempts)))
	}
	for _, a := range e.trailing() {
		if a.v != "" {
			attrs = append(attrs, slog.String(a.k, a.v))
		}
	}
	return attrs
}

// appendJSON appends the line slog.NewJSONHandler would write for the same
// record, newline included, without slog's per-record work: the access log
// runs on every call, and slog's JSON handler was its largest cost.
func (e *entry) appendJSON(b []byte, now time.Time) []byte {
	b = append(b, `{"time":"`...)
	b = now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"call"`...)
	b = appendJSONField(b, "transport", e.transport)
	if e.route != "" {
		b = appendJSONField(b, "route", e.route)
	}
	b = appendJSONField(b, "method", e.method)
	if e.status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.status), 10)
	}
	b = appendJSONField(b, "code", e.code.String())
	b = append(b, `,"latency":`...)
	b = strconv.AppendInt(b, int64(e.latency), 10)
	b = appendJSONField(b, "client_ip", e.clientIP)
	if e.consumer != "" {
		b = appendJSONField(b, "consumer", e.consumer)
	}
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.in, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.out, 10)
	b = appendJSONField(b, "backend", e.backend)
	if e.attempts > 1 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(e.attempts), 10)
	}
	for _, a := range e.trailing() {
		if a.v != "" {
			b = appendJSONField(b, a.k, a.v)
		}
	}
	return append(b, "}\n"...)
}

// appendJSONField appends ,"key":"value"; keys are constants that need no
// escaping.
func appendJSONField(b []byte, key, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':', '"')
	b = appendJSONString(b, value)
	return append(b, '"')
}

// appendJSONString escapes s as slog's JSON handler does: quote, backslash
// and control characters escaped, invalid UTF-8 as U+FFFD, and U+2028 and
// U+2029 escaped for JavaScript's sake; everything else as it is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
