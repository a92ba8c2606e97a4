package ratelimit

import (
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func call(method string, lim policy.RateLimit, ip string) *policy.Call {
	return &policy.Call{FullMethod: "/test.v1.Svc/" + method, Service: "test.v1.Svc", Method: method,
		Policy: &policy.Policy{RateLimit: lim}, ClientIP: ip}
}

func TestBucketMaths(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now))
	c := call("M", policy.RateLimit{Requests: 2, Period: time.Second, Burst: 4}, "203.0.113.1")

	// A new caller has the full burst.
	for i := range 4 {
		d := l.allow(c)
		if !d.Allowed || d.Remaining != uint32(3-i) {
			t.Fatalf("call %d: %+v, want allowed with %d remaining", i, d, 3-i)
		}
		if want := time.Duration(i+1) * 500 * time.Millisecond; d.Reset != want {
			t.Errorf("call %d: Reset %v, want %v (until the bucket is full)", i, d.Reset, want)
		}
	}
	d := l.allow(c)
	if d.Allowed || d.Remaining != 0 || d.RetryAfter != 500*time.Millisecond || d.Reset != 2*time.Second {
		t.Fatalf("fifth call: %+v, want rejected, retry in 500ms, full in 2s", d)
	}
	// Rejections spend nothing: waiting RetryAfter is enough.
	clk.Advance(499 * time.Millisecond)
	if l.allow(c).Allowed {
		t.Fatal("allowed 1ms before the token came back")
	}
	clk.Advance(time.Millisecond)
	if d := l.allow(c); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after RetryAfter: %+v, want allowed with 0 remaining", d)
	}
	// After a long pause the bucket holds the burst, never more.
	clk.Advance(time.Hour)
	n := 0
	for l.allow(c).Allowed && n < 100 {
		n++
	}
	if n != 4 {
		t.Errorf("after an hour idle %d calls passed, want the burst of 4", n)
	}
}

func TestBurstDefaultsToRequestsAndIntervalRoundsUp(t *testing.T) {
	r := newRate(policy.RateLimit{Requests: 3, Period: time.Second})
	if r.limit.Burst != 3 {
		t.Errorf("burst = %d, want requests (3)", r.limit.Burst)
	}
	// 1s/3 is 333333333.33ns: rounding up keeps the bucket no faster than 3/s.
	if r.interval != 333_333_334 {
		t.Errorf("interval = %d, want 333333334", r.interval)
	}
	if newRate(policy.RateLimit{}) != nil || newRate(policy.RateLimit{Requests: 5}) != nil {
		t.Error("a zero or period-less limit must mean no limit")
	}
	huge := newRate(policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1 << 31})
	if huge.tolerance <= 0 {
		t.Errorf("tolerance overflowed: %d", huge.tolerance)
	}
}

func TestShare(t *testing.T) {
	cases := []struct {
		in   policy.RateLimit
		n    int
		want policy.RateLimit
	}{
		{policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}, 1, policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}},
		{policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}, 2, policy.RateLimit{Requests: 25, Period: time.Second, Burst: 50}},
		{policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}, 3, policy.RateLimit{Requests: 50, Period: 3 * time.Second, Burst: 33}},
		{policy.RateLimit{Requests: 10, Period: time.Minute, Burst: 2}, 4, policy.RateLimit{Requests: 10, Period: 4 * time.Minute, Burst: 1}},
		{policy.RateLimit{Requests: 4, Period: time.Second}, 2, policy.RateLimit{Requests: 2, Period: time.Second, Burst: 2}},
		{policy.RateLimit{}, 3, policy.RateLimit{}},
	}
	for _, tc := range cases {
		if got := Share(tc.in, tc.n); got != tc.want {
			t.Errorf("Share(%v, %d) = %v, want %v", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestKeysAreSeparate(t *testing.T) {
	clk := newFakeClock()
	l := New(WithClock(clk.Now))
	lim := policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}
	a, b := call("M", lim, "203.0.113.1"), call("M", lim, "203.0.113.2")
	other := call("N", lim, "203.0.113.1")
	alice := call("M", lim, "203.0.113.1")
	alice.Identity = &policy.Identity{Consumer: "alice"}
	bob := call("M", lim, "203.0.113.1")
	bob.Identity = &policy.Identity{Consumer: "bob"}
	// An IP and a consumer that spells the same are different callers.
	spoof := call("M", lim, "alice")
	for _, c := range []*policy.Call{a, b, other, alice, bob, spoof} {
		if !l.allow(c).Allowed {
			t.Fatalf("first call of %s %q/%v was rejected", c.Method, c.ClientIP, c.Identity)
		}
	}
	for _, c := range []*policy.Call{a, b, other, alice, bob, spoof} {
		if l.allow(c).Allowed {
			t.Fatalf("second call of %s %q/%v was allowed", c.Method, c.ClientIP, c.Identity)
		}
	}
}

func TestNoLimitNoDecision(t *testing.T) {
	l := New()
	for _, c := range []*policy.Call{nil, {FullMethod: "/x/Y"}, call("M", policy.RateLimit{}, "203.0.113.1")} {
		if d := l.allow(c); !d.Allowed || d.Limit.Enabled() {
			t.Errorf("allow(%v) = %+v, want allowed without a limit", c, d)
		}
	}
	if n := l.Stats().Keys; n != 0 {
		t.Errorf("unlimited calls made %d buckets", n)
	}
}

func TestKilledBucket(t *testing.T) {
	r := newRate(policy.RateLimit{Requests: 1, Period: time.Second, Burst: 2})
	var b bucket
	now := int64(time.Hour)
	if ok, _ := b.take(r, now); !ok {
		t.Fatal("a new bucket refused a call")
	}
	if b.kill(now) {
		t.Fatal("killed a bucket a call spent from after the cutoff")
	}
	if !b.kill(now + int64(time.Second)) {
		t.Fatal("kept a bucket full since the cutoff")
	}
	if ok, tat := b.take(r, now+int64(time.Hour)); ok || tat != deadTAT {
		t.Fatalf("take from a dead bucket = %v, %d; want false, deadTAT", ok, tat)
	}
	if b.kill(now + int64(2*time.Hour)) {
		t.Error("killed a dead bucket twice")
	}
}
