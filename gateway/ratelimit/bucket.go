package ratelimit

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// rate is a limit in the form the bucket maths wants. It never changes; a
// new limit (Consul KV, a new replica count) swaps in a new *rate.
type rate struct {
	// limit is what is enforced here, after overrides and the cluster
	// split; headers and messages quote it.
	limit policy.RateLimit
	// interval is the time one token takes to come back, rounded up so the
	// bucket is never faster than declared.
	interval int64
	// tolerance is how far a bucket's theoretical arrival time may run
	// ahead of now: burst intervals.
	tolerance int64
	// limitHeader and policyHeader are the RateLimit-Limit and
	// RateLimit-Policy values, formatted once here rather than on every
	// call.
	limitHeader, policyHeader string
}

// newRate returns nil for a limit that admits everything.
func newRate(l policy.RateLimit) *rate {
	if !l.Enabled() {
		return nil
	}
	if l.Burst == 0 {
		l.Burst = l.Requests
	}
	interval := (int64(l.Period) + int64(l.Requests) - 1) / int64(l.Requests)
	tolerance := int64(math.MaxInt64 / 4) // a burst beyond ~70 years of tokens is no limit
	if int64(l.Burst) < tolerance/interval {
		tolerance = int64(l.Burst) * interval
	}
	return &rate{limit: l, interval: interval, tolerance: tolerance,
		limitHeader: strconv.FormatUint(uint64(l.Burst), 10), policyHeader: PolicyHeader(l)}
}

// bucket is a token bucket kept as one number, its theoretical arrival time
// (GCRA): the time, in nanoseconds since the limiter's epoch, at which the
// bucket will be full again. A call at now is admitted when spending one
// token keeps tat-now within tolerance. One atomic word per caller makes a
// decision lock-free and allocation-free, and exact under concurrency: each
// admission moves tat forward by one interval with a compare-and-swap, so
// over any window W at most burst + W/interval calls get through.
type bucket struct {
	tat atomic.Int64
}

// take spends a token at now if there is one. It returns whether it did,
// and the bucket's tat afterwards.
func (b *bucket) take(r *rate, now int64) (bool, int64) {
	for {
		old := b.tat.Load()
		if old == deadTAT {
			return false, deadTAT
		}
		next := max(old, now) + r.interval
		if next-now > r.tolerance {
			return false, old
		}
		if b.tat.CompareAndSwap(old, next) {
			return true, next
		}
	}
}

// deadTAT is the tat of a bucket the sweep has dropped: take spends
// nothing from it and returns deadTAT, and the caller takes a new bucket.
const deadTAT = math.MaxInt64

// kill marks the bucket dead if it has been full since before t. Such a
// bucket is indistinguishable from a new one, so dropping it loses nothing.
// A call that spends from it first keeps it alive; one that comes after
// finds it dead.
func (b *bucket) kill(t int64) bool {
	for {
		old := b.tat.Load()
		if old > t {
			return false
		}
		if b.tat.CompareAndSwap(old, deadTAT) {
			return true
		}
	}
}

// Decision is the outcome of one call's check.
type Decision struct {
	// Allowed says whether the call may go on.
	Allowed bool
	// Limit is the limit applied: after config, Consul KV and, in cluster
	// mode, this replica's share. The zero value means no limit applies
	// (and no headers are sent).
	Limit policy.RateLimit
	// Remaining is how many calls the caller could make right now.
	Remaining uint32
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until the next call can pass; zero when
	// Allowed.
	RetryAfter time.Duration

	rate *rate // the rate decided on, for its preformatted headers; may be nil
	// unavailable: mode redis's store did not answer and failure_mode is
	// deny; the call fails with UNAVAILABLE.
	unavailable bool
}

// decision turns the bucket's state into a Decision.
func (r *rate) decision(ok bool, tat, now int64) Decision {
	d := Decision{Allowed: ok, Limit: r.limit, Reset: time.Duration(max(tat-now, 0)), rate: r}
	if ok {
		d.Remaining = uint32(min((r.tolerance-(tat-now))/r.interval, math.MaxUint32))
	} else {
		d.RetryAfter = time.Duration(tat + r.interval - r.tolerance - now)
	}
	return d
}
