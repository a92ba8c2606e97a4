package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The failure budget: each client address may fail authentication
// failure_limit times (default 20 per minute, burst 20); after that its
// credentials are refused unchecked until the budget refills.

// fakeClock is a monotonic clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// budgetPolicy is a policy with two API keys, the default failure budget
// on a fake clock, and a log the test can read.
func budgetPolicy(t *testing.T, change func(*Config)) (*Policy, *fakeClock, *testutil.LockedBuffer) {
	t.Helper()
	cfg := Config{APIKeys: []APIKeyConfig{
		{Consumer: "shop", SHA256: HashAPIKey(testKey), Scopes: []string{"catalog.write"}},
		{Consumer: "reader", SHA256: HashAPIKey(readOnlyKey)},
	}}
	if change != nil {
		change(&cfg)
	}
	logs := &testutil.LockedBuffer{}
	p, err := New(cfg, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	if p.failures != nil {
		clock.t = p.failures.epoch
		p.failures.clock = clock.now
	}
	return p, clock, logs
}

// attempt is one call's outcome, with the response headers it set.
type attempt struct {
	outcome
	retryAfter string
	retryDelay time.Duration // RetryInfo
}

// authorizeFrom runs Authorize for a call from ip.
func authorizeFrom(t *testing.T, p *Policy, ip string, pol *policy.Policy, md metadata.MD) attempt {
	t.Helper()
	ctx, call := newCall(t.Context(), pol, md, policy.GRPC)
	call.ClientIP = ip
	var hdr metadata.MD
	err := p.Authorize(ctx, func(m metadata.MD) error { hdr = metadata.Join(hdr, m); return nil })
	a := attempt{outcome: outcomeOf(err, hdr, call, err == nil)}
	if v := hdr.Get(retryAfterKey); len(v) > 0 {
		a.retryAfter = v[0]
	}
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			a.retryDelay = ri.GetRetryDelay().AsDuration()
		}
	}
	return a
}

var (
	write  = &policy.Policy{Access: policy.Authenticated, Scopes: []string{"catalog.write"}}
	public = &policy.Policy{Access: policy.Public}
	badKey = keyHeader("pk_guess")
)

func TestFailureBudget(t *testing.T) {
	p, clock, _ := budgetPolicy(t, nil)
	const attacker, other = "203.0.113.7", "198.51.100.9"

	for i := range 20 {
		if got := authorizeFrom(t, p, attacker, write, badKey); got.code != codes.Unauthenticated || got.reason != ReasonInvalidAPIKey {
			t.Fatalf("failure %d: %s %s %q, want the usual 401", i+1, got.code, got.reason, got.message)
		}
	}
	got := authorizeFrom(t, p, attacker, write, badKey)
	if got.code != codes.ResourceExhausted || got.reason != ReasonTooManyFailures || got.policy != PolicyName {
		t.Fatalf("21st failure: %s %s (policy %q) %q, want RESOURCE_EXHAUSTED %s", got.code, got.reason, got.policy, got.message, ReasonTooManyFailures)
	}
	// 20 per minute is a token every 3s.
	if got.retryAfter != "3" || got.retryDelay != 3*time.Second {
		t.Errorf("retry-after %q, RetryInfo %v; want 3 and 3s", got.retryAfter, got.retryDelay)
	}
	if got.challenge != "" {
		t.Errorf("a refusal for want of budget sent a challenge: %q", got.challenge)
	}

	t.Run("another address is unaffected", func(t *testing.T) {
		if got := authorizeFrom(t, p, other, write, badKey); got.code != codes.Unauthenticated {
			t.Errorf("bad key from another address: %s %s", got.code, got.reason)
		}
		if got := authorizeFrom(t, p, other, write, keyHeader(testKey)); got.code != codes.OK || got.identity.Consumer != "shop" {
			t.Errorf("good key from another address: %s %s %q", got.code, got.reason, got.message)
		}
	})

	t.Run("any credentials from the spent address are refused unchecked", func(t *testing.T) {
		// A good key too: otherwise a guesser would go on at full speed,
		// learning from each answer whether the guess was right.
		for name, md := range map[string]metadata.MD{
			"good key":        keyHeader(testKey),
			"bad token":       bearer("a.b.c"),
			"malformed":       metadata.Pairs(authorizationKey, "Basic x"),
			"bad key, public": badKey,
		} {
			pol := write
			if strings.HasSuffix(name, "public") {
				pol = public
			}
			if got := authorizeFrom(t, p, attacker, pol, md); got.code != codes.ResourceExhausted || got.retryAfter == "" {
				t.Errorf("%s: %s %s retry-after %q", name, got.code, got.reason, got.retryAfter)
			}
		}
	})

	t.Run("calls without credentials get their usual answer", func(t *testing.T) {
		if got := authorizeFrom(t, p, attacker, public, nil); got.code != codes.OK {
			t.Errorf("public method, no credentials: %s %s", got.code, got.reason)
		}
		if got := authorizeFrom(t, p, attacker, write, nil); got.code != codes.Unauthenticated || got.reason != ReasonMissing {
			t.Errorf("protected method, no credentials: %s %s", got.code, got.reason)
		}
	})

	t.Run("the budget refills at its rate", func(t *testing.T) {
		clock.add(2 * time.Second)
		if got := authorizeFrom(t, p, attacker, write, keyHeader(testKey)); got.code != codes.ResourceExhausted || got.retryAfter != "1" {
			t.Errorf("2s later: %s retry-after %q, want RESOURCE_EXHAUSTED and 1", got.code, got.retryAfter)
		}
		clock.add(time.Second)
		// A token is back: a good key passes and costs nothing...
		for range 5 {
			if got := authorizeFrom(t, p, attacker, write, keyHeader(testKey)); got.code != codes.OK {
				t.Fatalf("3s later, good key: %s %s %q", got.code, got.reason, got.message)
			}
		}
		// ... a bad one spends it.
		if got := authorizeFrom(t, p, attacker, write, badKey); got.code != codes.Unauthenticated {
			t.Errorf("3s later, bad key: %s %s", got.code, got.reason)
		}
		if got := authorizeFrom(t, p, attacker, write, keyHeader(testKey)); got.code != codes.ResourceExhausted {
			t.Errorf("after spending the new token: %s %s", got.code, got.reason)
		}
		clock.add(time.Minute)
		for i := range 20 {
			if got := authorizeFrom(t, p, attacker, write, badKey); got.code != codes.Unauthenticated {
				t.Fatalf("a minute later, failure %d: %s %s", i+1, got.code, got.reason)
			}
		}
	})
}

func TestFailureBudgetSpendsOnlyOnFailures(t *testing.T) {
	p, _, _ := budgetPolicy(t, nil)
	const ip = "192.0.2.1"
	for range 200 {
		// Successes, valid credentials short of a scope, and calls without
		// credentials cost nothing.
		for _, c := range []struct {
			pol  *policy.Policy
			md   metadata.MD
			want codes.Code
		}{
			{write, keyHeader(testKey), codes.OK},
			{write, keyHeader(readOnlyKey), codes.PermissionDenied},
			{write, nil, codes.Unauthenticated},
			{public, nil, codes.OK},
		} {
			if got := authorizeFrom(t, p, ip, c.pol, c.md); got.code != c.want {
				t.Fatalf("%v: %s %s, want %s", c.md, got.code, got.reason, c.want)
			}
		}
	}
	// Every kind of bad credential costs one.
	bad := []metadata.MD{
		badKey,
		metadata.Pairs(APIKeyHeader, testKey, APIKeyHeader, testKey),
		metadata.Pairs(authorizationKey, "Basic x"),
		bearer("a.b.c"),
		bearer(hmacSign(t, []byte(hmacSecret), nil)), // no issuer trusts it here
	}
	for i := range 20 {
		if got := authorizeFrom(t, p, ip, write, bad[i%len(bad)]); got.code != codes.Unauthenticated {
			t.Fatalf("failure %d: %s %s", i+1, got.code, got.reason)
		}
	}
	if got := authorizeFrom(t, p, ip, write, keyHeader(testKey)); got.code != codes.ResourceExhausted {
		t.Errorf("after 20 failures of every kind: %s %s", got.code, got.reason)
	}
}

func TestFailureBudgetDoesNotChargeTheGatewaysTrouble(t *testing.T) {
	// Keys that are not loaded (JWKS not fetched yet) fail every token,
	// good ones included: that must not throttle the callers.
	s := keys()
	p, _, _ := budgetPolicy(t, func(c *Config) {
		c.JWT = []IssuerConfig{{Issuer: jwksIssuer, Audiences: []string{audience}, JWKSURL: "http://127.0.0.1:1/jwks"}}
	})
	tok := bearer(sign(t, s.rs, nil))
	for i := range 50 {
		got := authorizeFrom(t, p, "192.0.2.2", write, tok)
		if got.code != codes.Unauthenticated || got.reason != ReasonUnknownKey {
			t.Fatalf("call %d before the keys are loaded: %s %s %q", i+1, got.code, got.reason, got.message)
		}
	}
}

func TestFailureBudgetConfig(t *testing.T) {
	t.Run("requests 0 turns it off", func(t *testing.T) {
		p, _, logs := budgetPolicy(t, func(c *Config) { c.FailureLimit = &policy.RateLimit{} })
		for i := range 100 {
			if got := authorizeFrom(t, p, "192.0.2.3", write, badKey); got.code != codes.Unauthenticated {
				t.Fatalf("failure %d with the budget off: %s %s", i+1, got.code, got.reason)
			}
		}
		if p.failures != nil || logs.String() != "" {
			t.Errorf("budget off, yet tracked (%v) or logged: %q", p.failures != nil, logs.String())
		}
	})
	t.Run("custom limit; burst defaults to requests", func(t *testing.T) {
		p, clock, _ := budgetPolicy(t, func(c *Config) { c.FailureLimit = &policy.RateLimit{Requests: 3, Period: time.Hour} })
		for range 3 {
			authorizeFrom(t, p, "192.0.2.4", write, badKey)
		}
		got := authorizeFrom(t, p, "192.0.2.4", write, badKey)
		if got.code != codes.ResourceExhausted || got.retryAfter != "1200" {
			t.Errorf("4th failure of 3/h: %s retry-after %q, want RESOURCE_EXHAUSTED and 1200", got.code, got.retryAfter)
		}
		clock.add(20 * time.Minute)
		if got := authorizeFrom(t, p, "192.0.2.4", write, keyHeader(testKey)); got.code != codes.OK {
			t.Errorf("20 minutes later: %s %s", got.code, got.reason)
		}
	})
	t.Run("the caller's config is not changed", func(t *testing.T) {
		cfg := Config{}
		if _, err := New(cfg); err != nil || cfg.FailureLimit != nil {
			t.Errorf("New: %v; config now %+v", err, cfg.FailureLimit)
		}
	})
	t.Run("a limit without a period is refused", func(t *testing.T) {
		if _, err := New(Config{FailureLimit: &policy.RateLimit{Requests: 5}}); err == nil || !strings.Contains(err.Error(), "failure_limit") {
			t.Errorf("New: %v", err)
		}
	})
}

func TestFailureBudgetAddresses(t *testing.T) {
	p, _, _ := budgetPolicy(t, nil)
	spend := func(ip string) {
		for range 20 {
			authorizeFrom(t, p, ip, write, badKey)
		}
	}
	refused := func(ip string) bool {
		return authorizeFrom(t, p, ip, write, keyHeader(testKey)).code == codes.ResourceExhausted
	}
	// An IPv6 host holds a /64: one budget for all of it.
	spend("2001:db8:1:2::1")
	if !refused("2001:db8:1:2:ffff::9") || refused("2001:db8:1:3::1") {
		t.Error("the budget of an IPv6 address is not its /64's")
	}
	// An IPv4-mapped address is the IPv4 address.
	spend("::ffff:192.0.2.10")
	if !refused("192.0.2.10") || refused("192.0.2.11") {
		t.Error("an IPv4-mapped address has a budget apart from its IPv4 address")
	}
	// Addresses that cannot be read share one budget rather than none.
	spend("unknown")
	if !refused("") {
		t.Error("unreadable addresses are not limited")
	}
}

func TestFailureBudgetLogsOncePerAddressPerPeriod(t *testing.T) {
	p, clock, logs := budgetPolicy(t, nil)
	lines := func() []string {
		var out []string
		for _, l := range logs.Lines() {
			if strings.Contains(l, "failed authentications") {
				out = append(out, l)
			}
		}
		return out
	}
	for range 50 { // 20 failures, 30 refusals
		authorizeFrom(t, p, "192.0.2.20", write, badKey)
	}
	authorizeFrom(t, p, "192.0.2.21", write, badKey)
	got := lines()
	if len(got) != 2 || !strings.Contains(got[0], "client=192.0.2.20 failures=1 refused=0 last_reason=INVALID_API_KEY") ||
		!strings.Contains(got[1], "client=192.0.2.21") {
		t.Fatalf("log after 50 bad calls from one address and 1 from another:\n%s", strings.Join(got, "\n"))
	}
	clock.add(time.Minute)
	authorizeFrom(t, p, "192.0.2.20", write, badKey)
	got = lines()
	// The line a period later counts what the first one did not: 19 more
	// failures and 30 refusals, then this failure.
	if len(got) != 3 || !strings.Contains(got[2], "client=192.0.2.20 failures=20 refused=30") {
		t.Fatalf("a period later:\n%s", strings.Join(got, "\n"))
	}
	for _, l := range got {
		if strings.Contains(l, "pk_guess") {
			t.Errorf("the log repeats a key: %s", l)
		}
	}
}

func TestFailureBudgetIsBounded(t *testing.T) {
	logs := &testutil.LockedBuffer{}
	b := newFailureBudget(policy.RateLimit{Requests: 20, Period: time.Minute, Burst: 20}, 1000, slog.New(slog.NewTextHandler(logs, nil)))
	clock := &fakeClock{t: b.epoch}
	b.clock = clock.now
	bound := b.perShard * failureShards
	if bound < 1000 || bound > 1100 {
		t.Fatalf("%d addresses per shard x %d shards = %d, want about 1000", b.perShard, failureShards, bound)
	}
	// One address spends its budget, then a spray of 100,000 addresses
	// fails once each.
	const attacker = "198.51.100.1"
	for range 20 {
		b.fail(attacker, ReasonInvalidAPIKey)
	}
	start := time.Now()
	for i := range 100_000 {
		b.fail(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff), ReasonInvalidAPIKey)
	}
	elapsed := time.Since(start)
	if n := b.size(); n > bound {
		t.Errorf("%d addresses tracked after a spray of 100,000, want at most %d", n, bound)
	}
	// Eviction takes the entries closest to a full budget first: the spent
	// address stays.
	if b.wait(attacker) == 0 {
		t.Error("the spray made the table forget an address that had spent its budget")
	}
	// Entries whose budget is full again make room first, and the table
	// keeps its bound.
	clock.add(2 * time.Minute)
	for i := range 5000 {
		b.fail(fmt.Sprintf("172.16.%d.%d", i>>8, i&0xff), ReasonInvalidAPIKey)
	}
	if n := b.size(); n > bound {
		t.Errorf("%d addresses tracked, want at most %d", n, bound)
	}
	// A line per address, but the log as a whole is capped too.
	if n := len(logs.Lines()); n > 150 {
		t.Errorf("%d log lines for a spray of 105,001 addresses", n)
	}
	t.Logf("100,000 sprayed addresses: %v (%v each), %d tracked, %d evicted, %d log lines",
		elapsed, elapsed/100_000, b.size(), b.evicted.Load(), len(logs.Lines()))
}

func TestFailureBudgetConcurrent(t *testing.T) {
	p, _, _ := budgetPolicy(t, nil)
	const workers, calls = 16, 200
	var mu sync.Mutex
	passedBad := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ip := fmt.Sprintf("192.0.2.%d", 100+w%4)
			for i := range calls {
				md, good := badKey, i%2 == 0
				if good {
					md = keyHeader(testKey)
				}
				got := authorizeFrom(t, p, ip, write, md)
				switch {
				case got.code == codes.Unauthenticated:
					mu.Lock()
					passedBad[ip]++
					mu.Unlock()
				case got.code == codes.ResourceExhausted:
				case got.code == codes.OK && good:
				default:
					t.Errorf("%s good=%v: %s %s", ip, good, got.code, got.reason)
					return
				}
			}
		})
	}
	wg.Wait()
	// Failures checked at once may all pass the budget before any is
	// charged, so the overshoot is bounded by the callers in flight.
	for ip, n := range passedBad {
		if n < 20 || n > 20+workers {
			t.Errorf("%s: %d bad keys checked, want 20 (up to %d with racing callers)", ip, n, 20+workers)
		}
	}
}

// The interceptors send Retry-After the way they send the challenge: with
// grpc.SetHeader, which the REST door turns into an HTTP header.
func TestFailureBudgetThroughTheInterceptors(t *testing.T) {
	p, _, _ := budgetPolicy(t, nil)
	for range 10 {
		callUnary(t, p, write, badKey)
		callStream(t, p, write, badKey)
	}
	ctx, call := newCall(t.Context(), write, keyHeader(testKey), policy.GRPC)
	rec := &headerRecorder{}
	handled := false
	_, err := p.UnaryServerInterceptor()(grpc.NewContextWithServerTransportStream(ctx, rec), "req",
		&grpc.UnaryServerInfo{FullMethod: call.FullMethod},
		func(context.Context, any) (any, error) { handled = true; return "resp", nil })
	if status.Code(err) != codes.ResourceExhausted || handled || strings.Join(rec.md.Get(retryAfterKey), ",") != "3" {
		t.Errorf("unary: %v handled=%v headers %v", err, handled, rec.md)
	}
	if got := callStream(t, p, write, keyHeader(testKey)); got.code != codes.ResourceExhausted || got.reason != ReasonTooManyFailures || got.handled {
		t.Errorf("stream: %s %s handled=%v", got.code, got.reason, got.handled)
	}
}
