package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Name is the policy's name in rejections (google.rpc.ErrorInfo metadata
// "policy"); Reason is their ErrorInfo reason.
const (
	Name   = "ratelimit"
	Reason = "RATE_LIMITED"
	// ReasonStoreUnavailable is the reason of a call refused with
	// UNAVAILABLE because mode redis's store did not answer and
	// failure_mode is deny.
	ReasonStoreUnavailable = "RATE_LIMIT_STORE_UNAVAILABLE"
)

// Response metadata. The gateway's REST door sends them as the HTTP headers
// RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy
// and Retry-After.
const (
	HeaderLimit      = "ratelimit-limit"
	HeaderRemaining  = "ratelimit-remaining"
	HeaderReset      = "ratelimit-reset"
	HeaderPolicy     = "ratelimit-policy"
	HeaderRetryAfter = "retry-after"
)

// UnaryServerInterceptor checks each call's limit before the handler runs.
// An admitted call carries the limit's numbers as response headers; a
// rejected one fails with RESOURCE_EXHAUSTED, a RetryInfo detail and the
// numbers as trailers. A call without a policy.Call is refused
// (policy.NoCall).
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, ok := policy.FromContext(ctx)
		if !ok {
			return nil, policy.NoCall(Name)
		}
		d := l.Decide(ctx, c)
		if !d.Limit.Enabled() {
			return handler(ctx, req)
		}
		if !d.Allowed {
			// A rejected call answers trailers-only; the REST door reads
			// these trailers as headers.
			_ = grpc.SetTrailer(ctx, d.Metadata())
			return nil, d.Err(c)
		}
		if l.quiet(c) {
			return handler(ctx, req)
		}
		// The numbers go out with the backend's headers, in one write
		// (the proxy merges them), or, if the call ends without them,
		// here.
		c.AddHeader(d.Metadata())
		resp, err := handler(ctx, req)
		c.SendKeptHeader(ctx)
		return resp, err
	}
}

// StreamServerInterceptor counts a stream once, when it is opened. A
// rejected stream carries the numbers as trailers.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, ok := policy.FromContext(ss.Context())
		if !ok {
			return policy.NoCall(Name)
		}
		d := l.Decide(ss.Context(), c)
		if !d.Limit.Enabled() {
			return handler(srv, ss)
		}
		if !d.Allowed {
			// A stream refused before any message ends trailers-only: gRPC
			// clients read the numbers in the trailers, and the REST door
			// answers with the trailers as headers.
			ss.SetTrailer(d.Metadata())
			return d.Err(c)
		}
		if !l.quiet(c) {
			if err := ss.SetHeader(d.Metadata()); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}

// quiet reports whether the admitted call c carries no numbers.
func (l *Limiter) quiet(c *policy.Call) bool {
	switch {
	case c.Transport == policy.REST:
		return !l.opts.headers.REST
	case c.Web:
		return !l.opts.headers.Web
	}
	return !l.opts.headers.GRPC
}

// Decide charges one call to the caller's bucket for c's method; calls
// without a limit are allowed with a zero Decision.Limit. In mode redis
// it spends the call from the caller's bucket in Redis, with the whole
// limit; while Redis does not answer (an error, or no answer within the
// timeout), the failure mode decides: this replica's share of the limit
// (local), every call (allow), or no limited call (deny: UNAVAILABLE).
func (l *Limiter) Decide(ctx context.Context, c *policy.Call) Decision {
	s := l.store
	if s == nil || c == nil || c.Policy == nil {
		return l.allow(c)
	}
	m := l.method(c)
	g := m.global.Load()
	if g == nil {
		return Decision{Allowed: true}
	}
	if !s.isDown() {
		consumer, id := caller(c)
		key := s.key(c.FullMethod, consumer, id)
		gen := s.gen.Load()
		d, err := s.allow(ctx, key, g)
		if err == nil {
			s.answered(l, gen)
			return d
		}
		if ctx.Err() == nil { // a caller that went away says nothing about Redis
			s.failed(l, err, key)
		}
	}
	l.fallbacks.Add(1)
	s.metrics.fallback()
	switch s.failure {
	case FailAllow:
		return Decision{Allowed: true}
	case FailDeny:
		return Decision{Limit: g.limit, RetryAfter: time.Second, unavailable: true}
	default:
		return l.allow(c)
	}
}

// Metadata is the decision as response metadata: the limit (burst), what
// remains, seconds until the bucket is full, the policy, and for a
// rejection the seconds to wait.
//
// It runs on every limited call, so it is built in four allocations: the
// limit and policy come preformatted with the rate, the numbers share one
// string and the values one backing array.
func (d Decision) Metadata() metadata.MD {
	if d.unavailable {
		// Nothing is known of the caller's bucket: only when to retry.
		return metadata.MD{HeaderRetryAfter: {strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10)}}
	}
	var limit, pol string
	if r := d.rate; r != nil && r.limit == d.Limit {
		limit, pol = r.limitHeader, r.policyHeader
	} else {
		limit, pol = strconv.FormatUint(uint64(d.Limit.Burst), 10), PolicyHeader(d.Limit)
	}
	// remaining, reset and retry-after as one string, cut into three.
	var buf [3 * 20]byte
	b := strconv.AppendUint(buf[:0], uint64(d.Remaining), 10)
	i := len(b)
	b = strconv.AppendInt(b, ceilSeconds(d.Reset), 10)
	j := len(b)
	if !d.Allowed {
		b = strconv.AppendInt(b, max(ceilSeconds(d.RetryAfter), 1), 10)
	}
	nums := string(b)
	n := 4
	if !d.Allowed {
		n = 5
	}
	// Full slice expressions keep an append to one value from writing into
	// the next.
	vals := make([]string, n)
	vals[0], vals[1], vals[2], vals[3] = limit, nums[:i], nums[i:j], pol
	md := make(metadata.MD, n)
	md[HeaderLimit] = vals[0:1:1]
	md[HeaderRemaining] = vals[1:2:2]
	md[HeaderReset] = vals[2:3:3]
	md[HeaderPolicy] = vals[3:4:4]
	if !d.Allowed {
		vals[4] = nums[j:]
		md[HeaderRetryAfter] = vals[4:5:5]
	}
	return md
}

// PolicyHeader formats a limit as RateLimit-Policy: requests per window of
// w seconds, with the burst as an extension parameter ("50;w=1;burst=100").
func PolicyHeader(l policy.RateLimit) string {
	return fmt.Sprintf("%d;w=%s;burst=%d", l.Requests, strconv.FormatFloat(l.Period.Seconds(), 'f', -1, 64), l.Burst)
}

// Err is the status error of a rejected call: RESOURCE_EXHAUSTED with an
// ErrorInfo (reason RATE_LIMITED) and a RetryInfo saying when to retry. The
// message names the caller by consumer name or client address, never by a
// credential.
func (d Decision) Err(c *policy.Call) error {
	if d.unavailable {
		return policy.Reject(codes.Unavailable, Name, ReasonStoreUnavailable,
			"rate limits cannot be checked right now; retry in "+roundUp(d.RetryAfter, time.Second).String(), nil,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(d.RetryAfter)})
	}
	kind, who := "ip", "client "+c.ClientIP
	if c.Identity != nil && c.Identity.Consumer != "" {
		kind, who = "consumer", "consumer "+c.Identity.Consumer
	}
	retry := roundUp(d.RetryAfter, time.Millisecond)
	if retry >= time.Second {
		retry = roundUp(retry, time.Second)
	}
	msg := fmt.Sprintf("rate limit of %d per %s exceeded for %s; retry in %s", d.Limit.Requests, d.Limit.Period, who, retry)
	meta := map[string]string{
		"limit":  strconv.FormatUint(uint64(d.Limit.Requests), 10),
		"period": d.Limit.Period.String(),
		"burst":  strconv.FormatUint(uint64(d.Limit.Burst), 10),
		"key":    kind,
	}
	return policy.Reject(codes.ResourceExhausted, Name, Reason, msg, meta, &errdetails.RetryInfo{RetryDelay: durationpb.New(d.RetryAfter)})
}

func ceilSeconds(d time.Duration) int64 { return int64(roundUp(d, time.Second) / time.Second) }

func roundUp(d, unit time.Duration) time.Duration { return (d + unit - 1) / unit * unit }
