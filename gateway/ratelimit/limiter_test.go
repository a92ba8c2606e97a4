package ratelimit

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/gateway/policy"
)

// hammer runs goroutines × attempts calls of c at once and counts the
// admitted ones.
func hammer(l *Limiter, c *policy.Call, goroutines, attempts int) int64 {
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range attempts {
				if l.allow(c).Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return admitted.Load()
}

// With a fake clock that moves in steps between rounds of racing
// goroutines, every window of rounds admits at most B + R*T calls, and,
// since every round asks for more than there is, exactly that many in
// total.
func TestConcurrentCallsNeverExceedTheBucket(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now))
	const R, B = 10, 5
	lim := policy.RateLimit{Requests: R, Period: time.Second, Burst: B}
	c := call("Hot", lim, "203.0.113.7")
	steps := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 350 * time.Millisecond, time.Second,
		10 * time.Millisecond, 90 * time.Millisecond, 3 * time.Second, 200 * time.Millisecond, 0}
	var at []time.Duration // clock of each round, from the first
	var admitted []int64
	var elapsed time.Duration
	for _, step := range steps {
		clk.Advance(step)
		if len(at) > 0 {
			elapsed += step
		}
		at = append(at, elapsed)
		admitted = append(admitted, hammer(l, c, 16, 20))
	}
	for i := range admitted {
		var sum int64
		for j := i; j < len(admitted); j++ {
			sum += admitted[j]
			window := at[j] - at[i]
			bound := int64(B) + int64(window*R/time.Second)
			if sum > bound {
				t.Fatalf("rounds %d..%d (window %v) admitted %d > B + R*T = %d; per round %v", i, j, window, sum, bound, admitted)
			}
		}
	}
	// Exact, not just bounded: one token per 100ms, never more than 5 held.
	want := []int64{5, 0, 1, 4, 5, 0, 1, 5, 2, 0}
	if fmt.Sprint(admitted) != fmt.Sprint(want) {
		t.Errorf("admitted per round %v, want exactly %v", admitted, want)
	}
}

// The same bound on the real clock: whatever the scheduling, calls admitted
// between two instants never exceed B + R*T.
func TestConcurrentCallsRealClock(t *testing.T) {
	l := New()
	const R, B = 1000, 20
	c := call("Hot", policy.RateLimit{Requests: R, Period: time.Second, Burst: B}, "203.0.113.8")
	start := time.Now()
	n := hammer(l, c, 32, 2000)
	elapsed := time.Since(start)
	if bound := int64(B) + int64(elapsed*R/time.Second) + 1; n > bound {
		t.Fatalf("admitted %d in %v, bound B + R*T = %d", n, elapsed, bound)
	}
}

func TestIdleBucketsAreEvicted(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now), WithIdleTimeout(time.Minute))
	lim := policy.RateLimit{Requests: 1, Period: 10 * time.Second, Burst: 2}
	busy, idle := call("M", lim, "203.0.113.1"), call("M", lim, "203.0.113.2")
	l.allow(busy)
	l.allow(busy)
	l.allow(idle)
	if got := l.Stats().Keys; got != 2 {
		t.Fatalf("keys = %d, want 2", got)
	}
	if n := l.Sweep(); n != 0 {
		t.Fatalf("swept %d buckets that were in use", n)
	}
	// idle is full after 10s and idle after 70s; busy after 20s and 80s.
	clk.Advance(75 * time.Second)
	if n := l.Sweep(); n != 1 {
		t.Fatalf("swept %d, want only the idle caller", n)
	}
	if st := l.Stats(); st.Keys != 1 || st.Evicted != 1 {
		t.Fatalf("stats %+v, want 1 key, 1 evicted", st)
	}
	// Dropping a full bucket loses nothing: the caller gets its burst.
	if !l.allow(idle).Allowed || !l.allow(idle).Allowed || l.allow(idle).Allowed {
		t.Error("an evicted caller must come back with exactly its burst")
	}
	clk.Advance(2 * time.Minute)
	l.Sweep()
	if st := l.Stats(); st.Keys != 0 {
		t.Errorf("keys = %d after everyone idled, want 0", st.Keys)
	}
}

func TestKeyCapSharesAnOverflowBucket(t *testing.T) {
	clk := newFakeClock()
	var logs bytes.Buffer // slog's handler serializes writes; reads come after
	var hook atomic.Int64
	l := New(WithClock(clk.Now), WithMaxKeys(100), WithIdleTimeout(time.Minute),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), WithOverflowHook(func() { hook.Add(1) }))
	lim := policy.RateLimit{Requests: 1, Period: time.Second, Burst: 3}
	known := call("M", lim, "198.51.100.1")
	l.allow(known)

	// A flood of distinct addresses, from many goroutines.
	var wg sync.WaitGroup
	var floodAdmitted atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				if l.allow(call("M", lim, fmt.Sprintf("10.%d.%d.%d", g, i/256, i%256))).Allowed {
					floodAdmitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	if st.Keys != 100 {
		t.Fatalf("keys = %d, want the cap of 100", st.Keys)
	}
	if want := uint64(8*5000 - 99); st.Overflowed != want || hook.Load() != int64(want) {
		t.Errorf("overflowed %d, hook %d; want %d each", st.Overflowed, hook.Load(), want)
	}
	// 99 new callers got their own bucket; the rest shared one burst of 3.
	if got := floodAdmitted.Load(); got != 99+3 {
		t.Errorf("flood admitted %d, want 99 tracked + 3 from the overflow bucket", got)
	}
	// A caller tracked before the flood keeps its own exact budget.
	if !l.allow(known).Allowed || !l.allow(known).Allowed || l.allow(known).Allowed {
		t.Error("a known caller's bucket changed during the flood")
	}
	if n := strings.Count(logs.String(), "key table full"); n != 1 {
		t.Errorf("logged the full table %d times, want once per episode:\n%s", n, logs.String())
	}

	// Once the flood idles out, sweeps make room and new callers are tracked again.
	clk.Advance(2 * time.Minute)
	l.Sweep()
	if !strings.Contains(logs.String(), "room again") {
		t.Errorf("no log line when the table had room again:\n%s", logs.String())
	}
	l.allow(call("M", lim, "192.0.2.1"))
	if st := l.Stats(); st.Keys != 1 || st.Overflowed != uint64(8*5000-99) {
		t.Errorf("after the sweep: %+v, want one tracked key and no new overflow", st)
	}
}

func TestReplicasAndOverridesChangeLimitsLive(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now))
	c := call("M", policy.RateLimit{Requests: 40, Period: time.Second, Burst: 40}, "203.0.113.1")
	if d := l.allow(c); d.Limit.Burst != 40 {
		t.Fatalf("declared limit: %+v", d.Limit)
	}
	l.SetReplicas(4)
	if d := l.allow(c); d.Limit != (policy.RateLimit{Requests: 10, Period: time.Second, Burst: 10}) || l.Stats().Replicas != 4 {
		t.Fatalf("with 4 replicas: %+v", d.Limit)
	}
	l.SetOverrides(map[string]policy.RateLimit{"test.v1.Svc": {Requests: 8, Period: time.Minute, Burst: 8}})
	if d := l.allow(c); d.Limit != (policy.RateLimit{Requests: 2, Period: time.Minute, Burst: 2}) {
		t.Fatalf("service override split 4 ways: %+v", d.Limit)
	}
	l.SetOverrides(map[string]policy.RateLimit{"test.v1.Svc": {Requests: 8, Period: time.Minute}, "test.v1.Svc/M": {}})
	if d := l.allow(c); d.Limit.Enabled() || !d.Allowed {
		t.Fatalf("a zero method override lifts the limit: %+v", d)
	}
	l.SetOverrides(nil)
	l.SetReplicas(1)
	if d := l.allow(c); d.Limit.Requests != 40 {
		t.Fatalf("back to declared: %+v", d.Limit)
	}
}

func TestSettingsFromKV(t *testing.T) {
	var logs bytes.Buffer // slog's handler serializes writes; reads come after
	l := New(WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), WithKnownMethods(func(s, m string) bool {
		return s == "test.v1.Svc" && (m == "" || m == "M")
	}))
	c := call("M", policy.RateLimit{Requests: 40, Period: time.Second}, "203.0.113.1")
	const prefix = "portico/settings/ratelimit/"
	kv := func(pairs ...string) api.KVPairs {
		var out api.KVPairs
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, &api.KVPair{Key: prefix + pairs[i], Value: []byte(pairs[i+1])})
		}
		return out
	}
	limit := func() policy.RateLimit { return l.allow(c).Limit }

	l.applySettings(prefix, kv("", "", "test.v1.Svc/M", `{"requests": 5, "period": "1m", "burst": 7}`))
	if got := limit(); got != (policy.RateLimit{Requests: 5, Period: time.Minute, Burst: 7}) {
		t.Fatalf("method override: %v", got)
	}
	// A bad value is logged and the key's last good value stays.
	l.applySettings(prefix, kv("test.v1.Svc/M", `{"requests": 5, "period": "soon"}`))
	if got := limit(); got.Requests != 5 || got.Burst != 7 {
		t.Fatalf("after a bad value: %v, want the last good one", got)
	}
	if !strings.Contains(logs.String(), "ignoring bad rate limit") || !strings.Contains(logs.String(), "soon") {
		t.Errorf("bad value not logged:\n%s", logs.String())
	}
	// Unknown names are refused; deleting the key restores the declared limit.
	l.applySettings(prefix, kv("test.v1.Svc/Nope", `{"requests": 1, "period": "1s"}`, "other.v1.X", `{"requests": 1, "period": "1s"}`))
	if got := limit(); got.Requests != 40 {
		t.Fatalf("after the key was deleted: %v, want the declared 40/s", got)
	}
	for _, want := range []string{`has no method \"Nope\"`, `no service \"other.v1.X\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

func TestParseLimit(t *testing.T) {
	good := map[string]policy.RateLimit{
		`{"requests": 100, "period": "1m", "burst": 20}`: {Requests: 100, Period: time.Minute, Burst: 20},
		`{"requests": 3, "period": "500ms"}`:             {Requests: 3, Period: 500 * time.Millisecond, Burst: 3},
		`{"requests": 0}`:                                {},
	}
	for in, want := range good {
		if got, err := ParseLimit([]byte(in)); err != nil || got != want {
			t.Errorf("ParseLimit(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{``, `{}`, `{"requests": 5}`, `{"requests": 5, "period": "-1s"}`, `{"requests": -1, "period": "1s"}`,
		`{"requests": 5, "period": "1s", "brust": 2}`, `{"requests": 5, "period": "1s"} {}`, `100/s`} {
		if _, err := ParseLimit([]byte(in)); err == nil {
			t.Errorf("ParseLimit(%s) accepted it", in)
		}
	}
}

func TestIPv6CallersAreLimitedPerSlash64(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::/64",
		"2001:db8:1:2:bbbb::9": "2001:db8:1:2::/64",
		"::ffff:203.0.113.7":   "::ffff:203.0.113.7",
		"unknown":              "unknown",
	} {
		if got := callerNet(in); got != want {
			t.Errorf("callerNet(%q) = %q, want %q", in, got, want)
		}
	}
}

// A key left out of rate_limit.headers keeps its default; one given wins.
func TestHeadersConfigOverDefaults(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		name string
		cfg  HeadersConfig
		want Headers
	}{
		{"defaults", HeadersConfig{}, Headers{REST: true, GRPC: false, Web: true}},
		{"native gRPC on", HeadersConfig{GRPC: &on}, Headers{REST: true, GRPC: true, Web: true}},
		{"all off", HeadersConfig{REST: &off, GRPC: &off, Web: &off}, Headers{}},
		{"web off only", HeadersConfig{Web: &off}, Headers{REST: true}},
	} {
		if got := tc.cfg.headers(); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A sweep that runs while calls spend from a bucket drops it only if no
// call has spent from it first, and a call that finds it dropped takes a
// new one: however the two interleave, a caller whose bucket was full gets
// exactly its burst. Decisions read the buckets without a lock, so this is
// the sweep's compare-and-swap at work, not mutual exclusion.
func TestSweepRacingDecisions(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now), WithIdleTimeout(time.Minute))
	const B = 5
	c := call("M", policy.RateLimit{Requests: 1, Period: time.Second, Burst: B}, "203.0.113.9")
	swept := 0
	for round := range 200 {
		clk.Advance(2 * time.Minute) // the bucket is full and idle
		done := make(chan int)
		go func() {
			n := 0
			for range 20 {
				n += l.Sweep()
			}
			done <- n
		}()
		got := hammer(l, c, 4, 10)
		swept += <-done
		if got != B {
			t.Fatalf("round %d: admitted %d with a sweep racing the calls, want exactly the burst %d", round, got, B)
		}
		if st := l.Stats(); st.Keys > 1 {
			t.Fatalf("round %d: %d keys for one caller", round, st.Keys)
		}
	}
	t.Logf("200 rounds of 40 calls each racing 20 sweeps: exactly %d admitted per round; %d buckets swept mid-round", B, swept)
}

// The interleaving TestSweepRacingDecisions can only hope to hit, made to
// happen: a call holds a bucket it found without a lock, the sweep drops
// it, and only then does the call spend from it. The stale bucket spends
// nothing, the call takes a new one, and the caller gets exactly its
// burst from one bucket.
func TestDecisionOnASweptBucket(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now), WithIdleTimeout(time.Minute))
	const B = 3
	lim := policy.RateLimit{Requests: 1, Period: time.Second, Burst: B}
	c := call("M", lim, "203.0.113.10")
	l.allow(c)
	m := l.method(c)
	k := bucketKey{m: m, id: "203.0.113.10"}
	s := l.shardOf(k)
	v, found := s.buckets.Load(k)
	if !found {
		t.Fatal("the caller has no bucket")
	}
	stale := v.(*bucket)
	clk.Advance(2 * time.Minute)
	if n := l.Sweep(); n != 1 {
		t.Fatalf("swept %d buckets, want the idle one", n)
	}
	if ok, tat := stale.take(m.rate.Load(), l.now()); ok || tat != deadTAT {
		t.Fatalf("the swept bucket spent a token (%v, %d)", ok, tat)
	}
	for i := range B {
		if !l.allow(c).Allowed {
			t.Fatalf("call %d of the burst refused after the sweep", i+1)
		}
	}
	if l.allow(c).Allowed {
		t.Error("a call over the burst admitted: the caller had two buckets")
	}
	if st := l.Stats(); st.Keys != 1 {
		t.Errorf("%d keys, want 1", st.Keys)
	}
}
