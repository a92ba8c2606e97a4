package auth

import (
	"hash/maphash"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"golang.org/x/time/rate"
)

// maxFailureAddrs caps the addresses the budget tracks. An entry takes
// about 150 bytes, so the table stays within ~15 MB however many addresses
// spray the gateway.
const maxFailureAddrs = 100_000

// evictionSample is how many entries of a full shard are looked at to make
// room for a new address.
const evictionSample = 32

// failureShards spreads addresses over independently locked tables; every
// call that presents credentials reads one.
const failureShards = 64

// failureBudget gives each client address a token bucket (GCRA, as
// ratelimit's buckets) of failed authentications. A call that presents
// credentials first asks whether its address has a token left; if not it is
// refused before any key lookup or signature check, which is what makes a
// flood of bad credentials cheap. Only failures spend tokens: a caller that
// authenticates is never charged, and a refused call is not either, so an
// address that keeps failing gets exactly the configured rate of attempts.
//
// A bucket is one atomic word, as in gateway/ratelimit, rather than an
// x/time/rate Limiter (a mutex and four fields): the check every call with
// credentials makes is a map read and a load, and an address costs little
// memory. It runs no goroutine: a full shard makes room when a new address
// needs it (add).
type failureBudget struct {
	limit     policy.RateLimit
	interval  int64 // ns for one token to come back
	tolerance int64 // burst intervals
	period    int64 // at most one log line per address per period

	perShard int
	clock    func() time.Time
	epoch    time.Time
	seed     maphash.Seed
	shards   [failureShards]failureShard

	log *slog.Logger
	// logLines caps the log lines of all addresses together, so that a
	// spray of addresses (one line each) cannot flood the log either; lines
	// it drops are counted in the next one.
	logLines   *rate.Limiter
	suppressed atomic.Uint64
	evicted    atomic.Uint64
}

type failureShard struct {
	mu    sync.RWMutex
	addrs map[netip.Prefix]*failureEntry
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

// failureEntry is one address's bucket and what its next log line reports.
type failureEntry struct {
	tat      atomic.Int64 // theoretical arrival time: the bucket is full again then
	nextLog  atomic.Int64 // no log line for this address before then
	failures atomic.Uint32
	refused  atomic.Uint32
}

// newFailureBudget returns nil for a limit that is off.
func newFailureBudget(l policy.RateLimit, maxAddrs int, log *slog.Logger) *failureBudget {
	if !l.Enabled() {
		return nil
	}
	if l.Burst == 0 {
		l.Burst = l.Requests
	}
	interval := (int64(l.Period) + int64(l.Requests) - 1) / int64(l.Requests)
	b := &failureBudget{
		limit: l, interval: interval, tolerance: int64(l.Burst) * interval, period: int64(l.Period),
		perShard: max((maxAddrs+failureShards-1)/failureShards, 1),
		clock:    time.Now, seed: maphash.MakeSeed(), log: log,
		logLines: rate.NewLimiter(10, 100),
	}
	b.epoch = b.clock()
	for i := range b.shards {
		b.shards[i].addrs = map[netip.Prefix]*failureEntry{}
	}
	return b
}

func (b *failureBudget) now() int64 { return int64(b.clock().Sub(b.epoch)) }

// addrKey is the address a budget belongs to. An IPv6 host usually holds a
// whole /64, so one budget covers the /64 (as rate limiting does);
// otherwise one client could mint fresh budgets at will. Addresses that do
// not parse ("unknown") share the zero prefix.
func addrKey(ip string) netip.Prefix {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

func (b *failureBudget) shard(k netip.Prefix) *failureShard {
	return &b.shards[maphash.Comparable(b.seed, k)&(failureShards-1)]
}

func (b *failureBudget) entry(k netip.Prefix) *failureEntry {
	s := b.shard(k)
	s.mu.RLock()
	e := s.addrs[k]
	s.mu.RUnlock()
	return e
}

// wait returns how long ip must wait before its credentials are checked
// again: zero while it has budget left. It spends nothing.
func (b *failureBudget) wait(ip string) time.Duration {
	if b == nil {
		return 0
	}
	e := b.entry(addrKey(ip))
	if e == nil {
		return 0
	}
	now := b.now()
	if d := e.tat.Load() + b.interval - b.tolerance - now; d > 0 {
		return time.Duration(d)
	}
	return 0
}

// refused notes a call refused for having no budget, for the log.
func (b *failureBudget) refused(ip, reason string) {
	if b == nil {
		return
	}
	k := addrKey(ip)
	if e := b.entry(k); e != nil {
		e.refused.Add(1)
		b.maybeLog(k, e, reason, b.now())
	}
}

// fail spends one token of ip's budget for a failed authentication.
func (b *failureBudget) fail(ip, reason string) {
	if b == nil {
		return
	}
	k := addrKey(ip)
	now := b.now()
	e := b.entry(k)
	if e == nil {
		e = b.add(k, now)
	}
	// Concurrent failures of one address may all have passed wait before
	// any of them was charged; each is still charged, so the address waits
	// the longer for them.
	for {
		old := e.tat.Load()
		if e.tat.CompareAndSwap(old, max(old, now)+b.interval) {
			break
		}
	}
	e.failures.Add(1)
	b.maybeLog(k, e, reason, now)
}

// add puts a new address in the table. A full shard makes room from a
// sample of its entries (map iteration starts at random): the idle ones go
// (a full bucket whose log window has passed is the same as no entry), or
// if none is idle, the one closest to a full bucket. An address that has
// spent its budget is thus the last to be forgotten, a spray of new
// addresses cannot grow the table, and making room costs a few dozen steps
// under the shard's lock rather than a walk of the whole shard.
func (b *failureBudget) add(k netip.Prefix, now int64) *failureEntry {
	s := b.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.addrs[k]; e != nil {
		return e
	}
	if len(s.addrs) >= b.perShard {
		var oldest netip.Prefix
		oldestTAT, dropped, seen := int64(math.MaxInt64), uint64(0), 0
		for a, e := range s.addrs {
			switch tat := e.tat.Load(); {
			case tat <= now && e.nextLog.Load() <= now:
				delete(s.addrs, a)
				dropped++
			case tat < oldestTAT:
				oldest, oldestTAT = a, tat
			}
			if seen++; seen == evictionSample {
				break
			}
		}
		if dropped == 0 {
			delete(s.addrs, oldest)
			dropped = 1
		}
		b.evicted.Add(dropped)
	}
	e := &failureEntry{}
	s.addrs[k] = e
	return e
}

// maybeLog writes the address's log line if its period has passed since the
// last one: what failed and how often since.
func (b *failureBudget) maybeLog(k netip.Prefix, e *failureEntry, reason string, now int64) {
	next := e.nextLog.Load()
	if now < next || !e.nextLog.CompareAndSwap(next, now+b.period) {
		return
	}
	if !b.logLines.Allow() {
		b.suppressed.Add(1)
		return
	}
	attrs := []any{"client", clientName(k), "failures", e.failures.Swap(0), "refused", e.refused.Swap(0),
		"last_reason", reason, "budget", b.limit.String()}
	if n := b.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, "lines_suppressed", n)
	}
	b.log.Warn("failed authentications from a client (at most one line per client per budget period)", attrs...)
}

// clientName is how the log names the address of a budget.
func clientName(k netip.Prefix) string {
	switch {
	case !k.IsValid():
		return "unknown"
	case k.Addr().Is4():
		return k.Addr().String()
	}
	return k.String()
}

// size is the number of addresses tracked.
func (b *failureBudget) size() int {
	n := 0
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.RLock()
		n += len(s.addrs)
		s.mu.RUnlock()
	}
	return n
}
