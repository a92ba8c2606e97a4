package ratelimit

import (
	"context"
	"errors"
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// shardCount spreads callers over independent tables, each with its own
// lock for new buckets and the sweep. A power of two; enough that two
// cores (or sixty-four) adding callers rarely meet on one lock.
const shardCount = 128

// Limiter enforces each method's rate limit per caller: per consumer once
// auth has named one, else per client IP. It is the gateway's rate-limit
// policy: UnaryServerInterceptor and StreamServerInterceptor put it on the
// chain, Start runs its background work, Close stops it.
//
// Buckets of callers idle for longer than the idle timeout are dropped (a
// full bucket is the same as a new one, so nothing is lost). The number of
// callers tracked at once is capped; once the cap is reached, a caller
// without a bucket shares one overflow bucket per method, with that
// method's limit, until sweeps make room. Callers already tracked keep their
// own exact buckets, so a flood of new addresses neither grows memory nor
// takes anyone else's budget; it only competes with other untracked callers.
type Limiter struct {
	opts  options
	epoch time.Time
	seed  maphash.Seed

	shards [shardCount]shard
	keys   atomic.Int64 // buckets in the shards

	overflowed atomic.Uint64 // calls charged to an overflow bucket
	evicted    atomic.Uint64
	saturated  atomic.Bool // the key table is full; logged once per episode

	mode  string // "local", "cluster" or "redis", for the admin API
	store *store // mode redis; nil otherwise

	fallbacks atomic.Uint64                      // mode redis: calls decided by the failure mode
	methods   atomic.Pointer[map[string]*method] // copy on write

	mu        sync.Mutex // serializes limit changes and method creation
	replicas  int
	overrides map[string]policy.RateLimit
	kvGood    map[string]policy.RateLimit // last good value of each KV key

	sweepNow chan struct{} // capacity 1: bursts of "table full" collapse
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// method is one gRPC method's limit and overflow bucket.
type method struct {
	id            uint64
	service, name string
	declared      policy.RateLimit
	rate          atomic.Pointer[rate] // nil: no limit; in cluster mode (and redis mode's fallback) this replica's share
	global        atomic.Pointer[rate] // the whole limit, for mode redis; nil: no limit
	overflow      bucket
}

// shard holds some of the callers' buckets. A decision finds its bucket
// without a lock: a read lock, taken by every call of every caller on the
// shard, was a write to one shared word per call, which two cores passed
// back and forth. mu orders the two writers, a new bucket and the sweep.
type shard struct {
	mu      sync.Mutex
	buckets sync.Map // bucketKey → *bucket
	_       [64]byte // keep neighbouring shards off one cache line
}

// bucketKey names a caller of a method. A consumer and an address are told
// apart by a flag rather than a prefix, so no key is built per call.
type bucketKey struct {
	m        *method
	consumer bool
	id       string
}

// New returns a Limiter. It does no I/O and starts no goroutines: Start does.
func New(opts ...Option) *Limiter {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	l := &Limiter{opts: o, seed: maphash.MakeSeed(), replicas: 1, sweepNow: make(chan struct{}, 1)}
	l.epoch = o.clock()
	empty := map[string]*method{}
	l.methods.Store(&empty)
	return l
}

func (l *Limiter) now() int64 { return int64(l.opts.clock().Sub(l.epoch)) }

// allow is Decide in this replica's buckets: the whole decision in modes
// local and cluster, failure_mode local's in mode redis.
func (l *Limiter) allow(c *policy.Call) Decision {
	if c == nil || c.Policy == nil {
		return Decision{Allowed: true}
	}
	m := l.method(c)
	r := m.rate.Load()
	if r == nil {
		return Decision{Allowed: true}
	}
	k := bucketKey{m: m}
	k.consumer, k.id = caller(c)
	now := l.now()
	s := l.shardOf(k)
	if b, found := s.buckets.Load(k); found {
		// A bucket the sweep has dropped meanwhile is dead: the call
		// takes a new one, as a caller who had been idle would.
		if ok, tat := b.(*bucket).take(r, now); tat != deadTAT {
			return r.decision(ok, tat, now)
		}
	}
	return l.allowNew(s, k, r, now)
}

// shardOf is the shard that holds k's bucket.
func (l *Limiter) shardOf(k bucketKey) *shard {
	return &l.shards[(maphash.String(l.seed, k.id)^k.m.id)&(shardCount-1)]
}

// caller is who c's call is counted against: its consumer once auth named
// one, else its client address (an IPv6 /64).
func caller(c *policy.Call) (consumer bool, id string) {
	if c.Identity != nil && c.Identity.Consumer != "" {
		return true, c.Identity.Consumer
	}
	return false, callerNet(c.ClientIP)
}

// allowNew is allow for a caller without a bucket.
func (l *Limiter) allowNew(s *shard, k bucketKey, r *rate, now int64) Decision {
	s.mu.Lock()
	// Under mu no bucket dies: the sweep holds it too.
	var b *bucket
	if v, ok := s.buckets.Load(k); ok {
		b = v.(*bucket)
	} else {
		if l.keys.Add(1) > int64(l.opts.maxKeys) {
			l.keys.Add(-1)
			s.mu.Unlock()
			return l.allowOverflow(k.m, r, now)
		}
		b = &bucket{}
		k.id = strings.Clone(k.id) // don't pin the request's metadata
		s.buckets.Store(k, b)
	}
	ok, tat := b.take(r, now)
	s.mu.Unlock()
	return r.decision(ok, tat, now)
}

func (l *Limiter) allowOverflow(m *method, r *rate, now int64) Decision {
	l.overflowed.Add(1)
	if l.opts.onOverflow != nil {
		l.opts.onOverflow()
	}
	if l.saturated.CompareAndSwap(false, true) {
		l.opts.logger.Warn("rate limit key table full: new callers share one overflow bucket per method until idle ones are evicted",
			"max_keys", l.opts.maxKeys, "idle_timeout", l.opts.idle)
	}
	select {
	case l.sweepNow <- struct{}{}:
	default:
	}
	ok, tat := m.overflow.take(r, now)
	return r.decision(ok, tat, now)
}

// method returns the limiter's state for c's method, creating it on the
// first call. Methods are few and fixed (the route table), so the map is
// copied on write and read without a lock.
func (l *Limiter) method(c *policy.Call) *method {
	if m, ok := (*l.methods.Load())[c.FullMethod]; ok {
		return m
	}
	return l.newMethod(c.FullMethod, c.Service, c.Method, c.Policy.RateLimit)
}

func (l *Limiter) newMethod(fullMethod, service, name string, declared policy.RateLimit) *method {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.methods.Load()
	if m, ok := old[fullMethod]; ok {
		return m
	}
	m := &method{id: maphash.String(l.seed, fullMethod), service: service, name: name, declared: declared}
	l.setRates(m)
	next := make(map[string]*method, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[fullMethod] = m
	l.methods.Store(&next)
	return m
}

// setRates sets m's limits as they are now: a Consul KV override of the
// method, else of its service, else what proto and config declared; its
// rate is this replica's share of that limit in cluster mode (and in mode
// redis, for the local failure mode), its global rate the whole limit.
// Called with l.mu held.
func (l *Limiter) setRates(m *method) {
	lim := m.declared
	if o, ok := l.overrides[m.service+"/"+m.name]; ok {
		lim = o
	} else if o, ok := l.overrides[m.service]; ok {
		lim = o
	}
	m.rate.Store(newRate(Share(lim, l.replicas)))
	m.global.Store(newRate(lim))
}

// relimit recomputes every method's limit. Called with l.mu held.
func (l *Limiter) relimit() {
	for _, m := range *l.methods.Load() {
		l.setRates(m)
	}
}

// Share is one replica's part of a limit enforced by n replicas. The rate is
// split exactly: requests are divided when n divides them, otherwise the
// period is multiplied (50 per 1s over 3 replicas is 50 per 3s), so the
// replicas together never admit more than the limit's rate. The burst is
// divided rounding down, but never below 1: with fewer burst tokens than
// replicas, each replica still admits one call at a time.
func Share(l policy.RateLimit, n int) policy.RateLimit {
	if n <= 1 || !l.Enabled() {
		return l
	}
	if l.Burst == 0 {
		l.Burst = l.Requests
	}
	if l.Requests%uint32(n) == 0 {
		l.Requests /= uint32(n)
	} else {
		l.Period *= time.Duration(n)
	}
	l.Burst = max(l.Burst/uint32(n), 1)
	return l
}

// SetReplicas says how many gateway replicas share the limits; each then
// enforces 1/n of every limit (in mode redis, only while its failure mode
// local decides). Cluster mode calls it as replicas come and go; n < 1
// counts as 1.
func (l *Limiter) SetReplicas(n int) {
	n = max(n, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.replicas {
		return
	}
	if l.store != nil {
		// Mode redis splits nothing while Redis answers: only its local
		// failure mode enforces a share.
		l.opts.logger.Info("gateway replicas counted: while redis is down, failure_mode local enforces 1/n of each limit",
			"replicas", n, "previous", l.replicas)
	} else {
		l.opts.logger.Info("rate limits split across gateway replicas", "replicas", n, "previous", l.replicas)
	}
	l.replicas = n
	l.relimit()
}

// SetOverrides replaces the limits that win over proto and config, keyed by
// full service name ("catalog.v1.CatalogService", every method of it) or by
// service and method ("catalog.v1.CatalogService/CreateProduct"). A zero
// RateLimit lifts the limit. Overrides from Consul KV arrive here.
func (l *Limiter) SetOverrides(o map[string]policy.RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.overrides = o
	l.relimit()
}

// Override returns the Consul KV limit in force for a method (its own, else
// its service's), if any: what operators changed without a restart.
func (l *Limiter) Override(service, method string) (policy.RateLimit, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o, ok := l.overrides[service+"/"+method]; ok {
		return o, true
	}
	o, ok := l.overrides[service]
	return o, ok
}

// Stats is what a metrics exporter wants from the limiter.
type Stats struct {
	// Keys is the number of callers tracked now; MaxKeys the cap.
	Keys, MaxKeys int
	// Overflowed counts calls that found the table full and were charged
	// to their method's shared overflow bucket.
	Overflowed uint64
	// Evicted counts buckets dropped after their idle timeout.
	Evicted uint64
	// Replicas is how many replicas the limits are split across.
	Replicas int
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	n := l.replicas
	l.mu.Unlock()
	return Stats{Keys: int(l.keys.Load()), MaxKeys: l.opts.maxKeys, Overflowed: l.overflowed.Load(), Evicted: l.evicted.Load(), Replicas: n}
}

// Sweep drops the buckets of callers idle for longer than the idle timeout
// and returns how many it dropped. The sweeper started by Start calls it
// every idle timeout/2, and at most once a second while the table is full.
func (l *Limiter) Sweep() int {
	cutoff := l.now() - int64(l.opts.idle)
	dropped := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.buckets.Range(func(k, b any) bool {
			if b.(*bucket).kill(cutoff) {
				s.buckets.Delete(k)
				dropped++
			}
			return true
		})
		s.mu.Unlock()
	}
	l.keys.Add(-int64(dropped))
	l.evicted.Add(uint64(dropped))
	if dropped > 0 && l.keys.Load() < int64(l.opts.maxKeys) && l.saturated.CompareAndSwap(true, false) {
		l.opts.logger.Info("rate limit key table has room again", "keys", l.keys.Load(), "max_keys", l.opts.maxKeys,
			"overflowed_calls_total", l.overflowed.Load())
	}
	return dropped
}

// Start runs the sweeper and, when configured, the Consul watches (cluster
// replicas, KV settings). They stop when ctx ends or Close is called.
func (l *Limiter) Start(ctx context.Context) error {
	if l.cancel != nil {
		return errors.New("ratelimit: started twice")
	}
	ctx, l.cancel = context.WithCancel(ctx)
	l.goWithCtx(ctx, l.sweep)
	for _, w := range l.opts.watchers {
		l.goWithCtx(ctx, func(ctx context.Context) { w(ctx, l) })
	}
	if l.store != nil {
		l.goWithCtx(ctx, func(ctx context.Context) { l.store.run(ctx, l) })
	}
	return nil
}

func (l *Limiter) goWithCtx(ctx context.Context, fn func(context.Context)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn(ctx)
	}()
}

// Close stops what Start started and waits for it.
func (l *Limiter) Close() error {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
	if l.store != nil {
		return l.store.close()
	}
	return nil
}

func (l *Limiter) sweep(ctx context.Context) {
	tick := time.NewTicker(max(l.opts.idle/2, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.sweepNow:
		}
		l.Sweep()
		// A full table nudges on every new caller: sweep at most once a
		// second for it.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// callerNet is the address anonymous callers are limited by. An IPv6 host
// usually holds a whole /64, so one bucket covers the /64; otherwise a
// single client could mint new keys at will. IPv4 passes unchanged (and
// without allocating).
func callerNet(ip string) string {
	if strings.IndexByte(ip, ':') < 0 {
		return ip
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Is4In6() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
