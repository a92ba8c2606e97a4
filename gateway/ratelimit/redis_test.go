package ratelimit_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"github.com/portico-gw/portico/internal/certs"
	"github.com/portico-gw/portico/internal/testredis"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// redisLimiter starts a Limiter in mode redis, stopped when the test ends.
func redisLimiter(t *testing.T, cfg ratelimit.RedisConfig, reg prometheus.Registerer, opts ...ratelimit.Option) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.NewRedis(cfg, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func consumerCall(method string, lim policy.RateLimit, consumer string) *policy.Call {
	return &policy.Call{FullMethod: "/test.v1.Svc/" + method, Service: "test.v1.Svc", Method: method,
		Policy: &policy.Policy{RateLimit: lim}, ClientIP: "203.0.113.50", Identity: &policy.Identity{Consumer: consumer}}
}

func storeState(l *ratelimit.Limiter) string {
	st, _ := l.StoreStatus()
	return st.State
}

// Two limiters on one Redis are two replicas: one caller moving between
// them spends one bucket, and the numbers of each answer come from Redis.
func TestRedisReplicasShareOneBucket(t *testing.T) {
	srv := testredis.New(t)
	cfg := ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: 2 * time.Second}
	a, b := redisLimiter(t, cfg, nil), redisLimiter(t, cfg, nil)
	lim := policy.RateLimit{Requests: 10, Period: time.Hour, Burst: 10}
	c := consumerCall("Get", lim, "alice")
	ctx := context.Background()
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		d := l.Decide(ctx, c)
		if !d.Allowed || d.Remaining != uint32(9-i) || d.Limit != lim {
			t.Fatalf("call %d: %+v, want admitted with %d remaining of the whole limit", i, d, 9-i)
		}
		if d.Reset <= 0 || d.Reset > time.Hour {
			t.Errorf("call %d: reset %v", i, d.Reset)
		}
	}
	for _, l := range []*ratelimit.Limiter{a, b} {
		d := l.Decide(ctx, c)
		if d.Allowed || d.RetryAfter < 5*time.Minute || d.RetryAfter > 6*time.Minute {
			t.Fatalf("11th call: %+v, want refused with a retry of about 6m (one token of 10/h)", d)
		}
		md := d.Metadata()
		if md.Get(ratelimit.HeaderRemaining)[0] != "0" || md.Get(ratelimit.HeaderLimit)[0] != "10" || len(md.Get(ratelimit.HeaderRetryAfter)) != 1 {
			t.Errorf("refusal metadata %v", md)
		}
		if status.Code(d.Err(c)) != codes.ResourceExhausted {
			t.Errorf("refusal: %v", d.Err(c))
		}
	}
	// Another consumer, and the quota the admin API reads without spending.
	if d := a.Decide(ctx, consumerCall("Get", lim, "bob")); !d.Allowed || d.Remaining != 9 {
		t.Errorf("bob: %+v, want his own bucket", d)
	}
	for range 2 {
		q, ok, err := b.Quota(ctx, "bob", "/test.v1.Svc/Get")
		if err != nil || !ok || q.Remaining != 9 || q.Source != "redis" || q.Limit != lim {
			t.Errorf("Quota(bob) = %+v %v %v, want 9 remaining from redis, unspent by reading", q, ok, err)
		}
	}
	if st, ok := a.StoreStatus(); !ok || st.State != "up" || st.Kind != "redis" || st.FailureMode != "local" {
		t.Errorf("StoreStatus = %+v %v", st, ok)
	}
}

// The answers of mode redis are local mode's: the same RateLimit-* and
// Retry-After for the same limit and calls.
func TestRedisMetadataAsLocal(t *testing.T) {
	srv := testredis.New(t)
	rl := redisLimiter(t, ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: 2 * time.Second}, nil)
	local := ratelimit.New()
	ctx := context.Background()
	for i, tc := range []struct {
		lim   policy.RateLimit
		calls int // the last one is compared
	}{
		{policy.RateLimit{Requests: 10, Period: time.Second, Burst: 10}, 1},
		{policy.RateLimit{Requests: 100, Period: time.Second, Burst: 100}, 1},
		{policy.RateLimit{Requests: 7, Period: time.Second, Burst: 2}, 1},
		{policy.RateLimit{Requests: 3, Period: time.Hour, Burst: 3}, 2},
		{policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}, 2}, // a refusal
	} {
		c := consumerCall("Meta"+strconv.Itoa(i), tc.lim, "alice")
		var dl, dr ratelimit.Decision
		for range tc.calls {
			dl, dr = local.Decide(ctx, c), rl.Decide(ctx, c)
		}
		ml, mr := dl.Metadata(), dr.Metadata()
		t.Logf("%d per %v, burst %d, call %d: local %v, redis %v", tc.lim.Requests, tc.lim.Period, tc.lim.Burst, tc.calls, map[string][]string(ml), map[string][]string(mr))
		if dr.Limit != tc.lim || !reflect.DeepEqual(ml, mr) {
			t.Errorf("%d per %v, burst %d, call %d: redis answers %v, local mode %v", tc.lim.Requests, tc.lim.Period, tc.lim.Burst, tc.calls, map[string][]string(mr), map[string][]string(ml))
		}
	}
}

// A quota read is not a decision: the decision histogram does not count
// it. A failed read logs the store's error.
func TestRedisQuotaReads(t *testing.T) {
	srv := testredis.New(t)
	reg := prometheus.NewRegistry()
	logs := &testutil.LockedBuffer{}
	lim := policy.RateLimit{Requests: 5, Period: time.Hour, Burst: 5}
	l := redisLimiter(t, ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: 2 * time.Second}, reg,
		ratelimit.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	ctx := context.Background()
	testutil.Eventually(t, 10*time.Second, "the store up", func() bool { return storeState(l) == "up" })
	if d := l.Decide(ctx, consumerCall("Get", lim, "alice")); !d.Allowed {
		t.Fatalf("first call: %+v", d)
	}
	for range 3 {
		if q, ok, err := l.Quota(ctx, "alice", "/test.v1.Svc/Get"); err != nil || !ok || q.Remaining != 4 {
			t.Fatalf("Quota = %+v %v %v, want 4 remaining", q, ok, err)
		}
	}
	if n := decisionsObserved(t, reg); n != 1 {
		t.Errorf("decision histogram counted %d round trips, want the 1 decision, not the 3 quota reads", n)
	}
	// Stopped, Redis is not yet known to be down: the read fails.
	srv.Stop()
	if _, _, err := l.Quota(ctx, "alice", "/test.v1.Svc/Get"); err == nil || !strings.Contains(logs.String(), "quota read from the rate limit store failed") ||
		!strings.Contains(logs.String(), srv.Addr) {
		t.Errorf("a read from a stopped redis: %v, want an error logged with its detail:\n%s", err, logs)
	}
}

func decisionsObserved(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	var n uint64
	for _, mf := range gather(t, reg) {
		if mf.GetName() == "portico_ratelimit_store_decision_seconds" {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// A limit over a long window: 1000 a day. Spent through one limiter, it
// is still spent through a new one (a replica restarted), and exactly 1000
// calls pass, plus one per 86.4s (the refill) that the test took: the
// bounds come from the time measured, not from a speed assumed.
func TestRedisDailyQuotaSurvivesRestart(t *testing.T) {
	srv := testredis.New(t)
	cfg := ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: 2 * time.Second}
	lim := policy.RateLimit{Requests: 1000, Period: 24 * time.Hour, Burst: 1000}
	interval := lim.Period / time.Duration(lim.Requests)
	c := consumerCall("Daily", lim, "alice")
	ctx := context.Background()
	start := time.Now()
	first, err := ratelimit.NewRedis(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	admitted := 0
	for range 600 {
		if first.Decide(ctx, c).Allowed {
			admitted++
		}
	}
	first.Close()
	second := redisLimiter(t, cfg, nil, ratelimit.WithDeclaredLimits(func(string) (string, string, policy.RateLimit, bool) {
		return "test.v1.Svc", "Daily", lim, true
	}))
	q, _, err := second.Quota(ctx, "alice", "/test.v1.Svc/Daily")
	refilled := int(time.Since(start) / interval)
	if err != nil || int(q.Remaining) < 400 || int(q.Remaining) > 400+refilled {
		t.Fatalf("after a restart: remaining %d (%v), want 400 (+%d refilled in %v)", q.Remaining, err, refilled, time.Since(start))
	}
	for range 500 {
		if second.Decide(ctx, c).Allowed {
			admitted++
		}
	}
	took := time.Since(start)
	refilled = int(took / interval)
	t.Logf("1000/24h: %d of 1100 calls admitted across a restart in %v; remaining after the first 600: %d", admitted, took, q.Remaining)
	if admitted < 1000 || admitted > 1000+refilled {
		t.Errorf("admitted %d calls, want 1000 (+%d refilled in %v)", admitted, refilled, took)
	}
}

// With Redis stopped each failure mode decides as documented; Redis back,
// the limiter finds it without a restart and exact limits resume.
func TestRedisFailureModes(t *testing.T) {
	lim := policy.RateLimit{Requests: 6, Period: time.Hour, Burst: 6}
	for _, tc := range []struct {
		mode     string
		admitted int // of 10 calls with Redis down, by a fresh caller
		code     codes.Code
	}{
		{"local", 2, codes.ResourceExhausted}, // this replica's share: 6 over 3 replicas
		{"allow", 10, codes.OK},
		{"deny", 0, codes.Unavailable},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			srv := testredis.New(t)
			logs := &testutil.LockedBuffer{}
			reg := prometheus.NewRegistry()
			l := redisLimiter(t, ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, FailureMode: tc.mode, Timeout: 2 * time.Second},
				reg, ratelimit.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
			l.SetReplicas(3)
			if strings.Contains(logs.String(), "split across") || !strings.Contains(logs.String(), "failure_mode local enforces 1/n") {
				t.Errorf("mode redis splits no limit while redis answers; the replica count's log line says otherwise:\n%s", logs)
			}
			ctx := context.Background()
			testutil.Eventually(t, 10*time.Second, "the store up", func() bool { return storeState(l) == "up" })
			if d := l.Decide(ctx, consumerCall("Get", lim, "before")); !d.Allowed || d.Remaining != 5 {
				t.Fatalf("with redis: %+v, want the whole limit", d)
			}

			srv.Stop()
			c := consumerCall("Get", lim, "during")
			admitted, code := 0, codes.OK
			for range 10 {
				d := l.Decide(ctx, c)
				if d.Allowed {
					admitted++
					continue
				}
				code = status.Code(d.Err(c))
				if tc.mode == "deny" && d.Metadata().Get(ratelimit.HeaderRetryAfter)[0] != "1" {
					t.Errorf("deny: metadata %v, want retry-after 1", d.Metadata())
				}
			}
			t.Logf("failure_mode %s, redis stopped: %d of 10 calls admitted, refusals %v", tc.mode, admitted, code)
			if admitted != tc.admitted || code != tc.code {
				t.Errorf("redis down: %d of 10 admitted, refusal %v; want %d and %v", admitted, code, tc.admitted, tc.code)
			}
			if st, _ := l.StoreStatus(); st.State != "down" || st.LastError == "" || st.Outages != 1 {
				t.Errorf("StoreStatus while down = %+v", st)
			}
			if !strings.Contains(logs.String(), "rate limit store unreachable") {
				t.Errorf("no log line when redis went away:\n%s", logs)
			}

			srv.Start(t)
			testutil.Eventually(t, 10*time.Second, "the store up again", func() bool { return storeState(l) == "up" })
			if !strings.Contains(logs.String(), "rate limit store reachable again") {
				t.Errorf("no log line when redis came back:\n%s", logs)
			}
			// The new Redis is empty: a caller gets the whole limit, exactly.
			after := consumerCall("Get", lim, "after")
			n := 0
			for range 10 {
				if l.Decide(ctx, after).Allowed {
					n++
				}
			}
			if n != 6 {
				t.Errorf("redis back: %d of 10 admitted, want exactly the limit, 6", n)
			}

			problems, err := promlint.NewWithMetricFamilies(gather(t, reg)).Lint()
			if err != nil || len(problems) > 0 {
				t.Errorf("metrics lint: %v %v", problems, err)
			}
			for name, want := range map[string]bool{"portico_ratelimit_store_errors_total": true, "portico_ratelimit_store_decision_seconds": true,
				"portico_ratelimit_store_up": true, "portico_ratelimit_store_fallbacks_total": tc.mode != ""} {
				if got := hasMetric(t, reg, name); got != want {
					t.Errorf("metric %s present %v, want %v", name, got, want)
				}
			}
		})
	}
}

// A Redis that answers too late is a Redis that is down.
func TestRedisTimeoutFollowsFailureMode(t *testing.T) {
	srv := testredis.NewWith(t, testredis.Options{Args: []string{"--enable-debug-command", "yes"}})
	l := redisLimiter(t, ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, FailureMode: "allow", Timeout: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	testutil.Eventually(t, 10*time.Second, "the store up", func() bool { return storeState(l) == "up" })
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	// DEBUG SLEEP holds Redis's one thread for 2s.
	slept := make(chan error, 1)
	go func() { slept <- admin.Do(context.Background(), "DEBUG", "SLEEP", "2").Err() }()
	defer func() {
		if err := <-slept; err != nil {
			t.Errorf("DEBUG SLEEP: %v", err)
		}
	}()
	lim := policy.RateLimit{Requests: 1, Period: time.Hour, Burst: 1}
	testutil.Eventually(t, 5*time.Second, "a decision to time out", func() bool {
		start := time.Now()
		d := l.Decide(ctx, consumerCall("Slow", lim, "alice"))
		if took := time.Since(start); took > time.Second {
			t.Fatalf("a decision took %v with a 50ms timeout", took)
		}
		return d.Allowed && d.Limit == (policy.RateLimit{}) // allowed by failure_mode allow, no numbers
	})
	if st, _ := l.StoreStatus(); st.State != "down" || !strings.Contains(st.LastError, "timeout") && !strings.Contains(st.LastError, "deadline") {
		t.Errorf("StoreStatus = %+v, want down with a timeout", st)
	}
	testutil.Eventually(t, 10*time.Second, "the store up after the sleep", func() bool { return storeState(l) == "up" })
}

// A Redis that answers PING but refuses decisions is down until it takes
// them again: one outage and one log line however many calls come, the
// probe (a decision, not a PING) failing as the calls would. Fixed, it is
// up again without a restart.
func TestRedisRefusalsStayDown(t *testing.T) {
	lim := policy.RateLimit{Requests: 5, Period: time.Hour, Burst: 5}
	c := consumerCall("Get", lim, "alice")
	key := "portico:rl:" + c.FullMethod + ":c:alice"
	passwordFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(passwordFile, []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	do := func(t *testing.T, admin *redis.Client, args ...any) {
		t.Helper()
		if err := admin.Do(context.Background(), args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	for _, tc := range []struct {
		name    string
		args    []string                                // redis-server's
		cfg     func(*ratelimit.RedisConfig)            // the limiter's
		breakIt func(t *testing.T, admin *redis.Client) // once the store is up; nil: broken from the start
		fix     func(t *testing.T, admin *redis.Client)
	}{
		{name: "NOPERM", args: []string{"--user", "portico", "on", ">pw", "~portico:rl:*", "+@all"},
			cfg: func(c *ratelimit.RedisConfig) {
				c.Username, c.PasswordFile, c.KeyPrefix = "portico", passwordFile, "other:"
			},
			fix: func(t *testing.T, a *redis.Client) { do(t, a, "ACL", "SETUSER", "portico", "~other:*") }},
		{name: "READONLY", args: []string{"--replicaof", "127.0.0.1", "1"},
			fix: func(t *testing.T, a *redis.Client) { do(t, a, "REPLICAOF", "NO", "ONE") }},
		{name: "OOM",
			breakIt: func(t *testing.T, a *redis.Client) { do(t, a, "CONFIG", "SET", "maxmemory", "1") },
			fix:     func(t *testing.T, a *redis.Client) { do(t, a, "CONFIG", "SET", "maxmemory", "0") }},
		{name: "WRONGTYPE",
			breakIt: func(t *testing.T, a *redis.Client) { do(t, a, "HSET", key, "f", "v") },
			fix:     func(t *testing.T, a *redis.Client) { do(t, a, "DEL", key) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testredis.NewWith(t, testredis.Options{Args: tc.args})
			admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
			defer admin.Close()
			cfg := ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Timeout: 2 * time.Second, FailureMode: "allow"}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			logs := &testutil.LockedBuffer{}
			l := redisLimiter(t, cfg, nil, ratelimit.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
			ctx := context.Background()
			if tc.breakIt != nil {
				testutil.Eventually(t, 10*time.Second, "the store up", func() bool { return storeState(l) == "up" })
				tc.breakIt(t, admin)
			}
			calls := 0
			testutil.Eventually(t, 15*time.Second, "six failed round trips", func() bool {
				for range 20 {
					l.Decide(ctx, c)
					calls++
				}
				st, _ := l.StoreStatus()
				return st.Errors >= 6
			})
			st, _ := l.StoreStatus()
			outages := strings.Count(logs.String(), "level=ERROR")
			t.Logf("%s: %d calls, %d failed round trips, %d outages, %d error lines; last error %q", tc.name, calls, st.Errors, st.Outages, outages, st.LastError)
			if st.State != "down" || st.Outages != 1 || outages != 1 || !strings.Contains(st.LastError, tc.name) {
				t.Errorf("store %+v with %d error lines, want down once with %s, and one line:\n%s", st, outages, tc.name, logs)
			}

			tc.fix(t, admin)
			testutil.Eventually(t, 10*time.Second, "the store up once fixed", func() bool { return storeState(l) == "up" })
			if d := l.Decide(ctx, c); !d.Allowed || d.Limit != lim {
				t.Errorf("fixed: %+v, want decided by redis", d)
			}
			if n := strings.Count(logs.String(), "rate limit store reachable again"); n != 1 {
				t.Errorf("%d lines saying the store is back, want 1:\n%s", n, logs)
			}
		})
	}
}

// A Redis whose replies take 100ms, with a decision timeout of 20ms: the
// decision answers within the timeout and a little slack, never waiting
// for Redis, and the failure mode decides it.
func TestRedisSlowDecisionFollowsFailureMode(t *testing.T) {
	const (
		timeout = 20 * time.Millisecond
		slow    = 100 * time.Millisecond
		slack   = 60 * time.Millisecond // timers and scheduling under -race; below what Redis takes
	)
	srv := testredis.New(t)
	proxy := testredis.NewProxy(t, srv.Addr)
	lim := policy.RateLimit{Requests: 5, Period: time.Hour, Burst: 5}
	for _, mode := range []string{"local", "allow", "deny"} {
		t.Run(mode, func(t *testing.T) {
			l := redisLimiter(t, ratelimit.RedisConfig{Address: ratelimit.Addresses{proxy.Addr}, Timeout: timeout, FailureMode: mode}, nil,
				ratelimit.WithLogger(slog.New(slog.DiscardHandler)))
			ctx := context.Background()
			// A loaded machine may pause the test for longer than the
			// slack: the best of three attempts meets the bound, every
			// attempt the failure mode.
			best := time.Hour
			for attempt := range 3 {
				proxy.SetDelay(0)
				testutil.Eventually(t, 10*time.Second, "the store up", func() bool { return storeState(l) == "up" })
				proxy.SetDelay(slow)
				c := consumerCall("Slow", lim, "caller-"+strconv.Itoa(attempt))
				start := time.Now()
				d := l.Decide(ctx, c)
				best = min(best, time.Since(start))
				if storeState(l) != "down" {
					t.Fatalf("attempt %d: the store is %s after a decision slower than the timeout, want down", attempt, storeState(l))
				}
				switch ok := d.Allowed; mode {
				case "local": // this replica's bucket: the whole limit, one replica
					if !ok || d.Limit != lim || d.Remaining != 4 {
						t.Errorf("attempt %d: %+v, want admitted by the local bucket", attempt, d)
					}
				case "allow":
					if !ok || d.Limit != (policy.RateLimit{}) {
						t.Errorf("attempt %d: %+v, want admitted without numbers", attempt, d)
					}
				case "deny":
					if ok || status.Code(d.Err(c)) != codes.Unavailable {
						t.Errorf("attempt %d: %+v, want UNAVAILABLE", attempt, d)
					}
				}
			}
			t.Logf("failure_mode %s: a decision against a redis replying in %v, timeout %v: %v (best of 3)", mode, slow, timeout, best)
			if best > timeout+slack {
				t.Errorf("a decision took %v, want at most the timeout %v and %v of slack: it waited for redis", best, timeout, slack)
			}
			proxy.SetDelay(0)
		})
	}
}

// Keys begin with key_prefix exactly, so a Redis ACL user can be limited
// to them; the password is read from password_file; TLS with a client
// certificate works.
func TestRedisACLAndTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("redis test CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server("localhost", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("portico")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey, err := server.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := client.WriteFiles(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	passwordFile := filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte("s3cret-redis\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsClient := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS()}, ServerName: "localhost"}
	srv := testredis.NewWith(t, testredis.Options{
		Args: []string{"--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--tls-ca-cert-file", caFile,
			"--user", "default", "off", "--user", "portico", "on", ">s3cret-redis", "~portico:rl:*", "+evalsha", "+eval", "+get", "+set", "+time", "+ping", "+hello", "+auth", "+client"},
		TLS: tlsClient,
	})
	cfg := ratelimit.RedisConfig{Address: ratelimit.Addresses{srv.Addr}, Username: "portico", PasswordFile: passwordFile,
		TLS: ratelimit.RedisTLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}, Timeout: 2 * time.Second}
	l := redisLimiter(t, cfg, nil)
	lim := policy.RateLimit{Requests: 2, Period: time.Hour, Burst: 2}
	c := consumerCall("Get", lim, "alice")
	for i, want := range []bool{true, true, false} {
		if d := l.Decide(context.Background(), c); d.Allowed != want || d.Limit != lim {
			st, _ := l.StoreStatus()
			t.Fatalf("call %d: %+v, want allowed=%v from redis (store %+v)", i, d, want, st)
		}
	}
	if st, _ := l.StoreStatus(); st.State != "up" || st.Errors != 0 {
		t.Fatalf("store %+v, want up without errors: the decisions came from redis", st)
	}
	// Another prefix is outside the user's keys: Redis refuses, the
	// failure mode (deny) decides.
	cfg.KeyPrefix, cfg.FailureMode = "other:", "deny"
	other := redisLimiter(t, cfg, nil, ratelimit.WithLogger(slog.New(slog.DiscardHandler)))
	if d := other.Decide(context.Background(), c); status.Code(d.Err(c)) != codes.Unavailable {
		t.Errorf("a key outside the ACL's pattern: %+v, want UNAVAILABLE from failure_mode deny", d)
	}
	if st, _ := other.StoreStatus(); !strings.Contains(st.LastError, "NOPERM") {
		t.Errorf("store status %+v, want redis's NOPERM", st)
	}
}

// A list of addresses is a Redis Cluster: buckets spread over its slots,
// and two limiters (replicas) still share each caller's bucket.
func TestRedisCluster(t *testing.T) {
	nodes := testredis.NewCluster(t, 3)
	cfg := ratelimit.RedisConfig{Timeout: 2 * time.Second}
	for _, n := range nodes {
		cfg.Address = append(cfg.Address, n.Addr)
	}
	a, b := redisLimiter(t, cfg, nil), redisLimiter(t, cfg, nil)
	lim := policy.RateLimit{Requests: 5, Period: time.Hour, Burst: 5}
	ctx := context.Background()
	for i := range 20 { // 20 callers: their keys land on every node
		c := consumerCall("Get", lim, "consumer-"+strconv.Itoa(i))
		admitted := 0
		for j := range 8 {
			l := a
			if j%2 == 1 {
				l = b
			}
			if d := l.Decide(ctx, c); d.Allowed {
				admitted++
			} else if d.Limit != lim {
				t.Fatalf("caller %d: decided without redis: %+v", i, d)
			}
		}
		if admitted != 5 {
			t.Errorf("caller %d: %d of 8 admitted over two limiters, want 5", i, admitted)
		}
	}
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cfg.Address})
	defer admin.Close()
	perNode := map[string]int{}
	var mu sync.Mutex // ForEachMaster calls each node at once
	if err := admin.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		keys, err := c.Keys(ctx, "portico:rl:*").Result()
		mu.Lock()
		perNode[c.Options().Addr] = len(keys)
		mu.Unlock()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("20 callers' buckets per cluster node: %v", perNode)
	if len(perNode) != 3 {
		t.Errorf("keys on %d nodes, want all 3: %v", len(perNode), perNode)
	}
	for node, n := range perNode {
		if n == 0 {
			t.Errorf("no bucket on node %s: %v", node, perNode)
		}
	}
}

func TestRedisConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  ratelimit.RedisConfig
		want string
	}{
		{ratelimit.RedisConfig{}, "address is required"},
		{ratelimit.RedisConfig{Address: ratelimit.Addresses{"localhost"}}, "want host:port"},
		{ratelimit.RedisConfig{Address: ratelimit.Addresses{"127.0.0.1:6379"}, FailureMode: "open"}, `failure_mode "open"`},
		{ratelimit.RedisConfig{Address: ratelimit.Addresses{"127.0.0.1:6379"}, PasswordFile: "/nonexistent/pw"}, "password_file"},
		{ratelimit.RedisConfig{Address: ratelimit.Addresses{"127.0.0.1:6379"}, TLS: ratelimit.RedisTLS{CAFile: "/nonexistent/ca.pem"}}, "rate_limit.redis.tls"},
	} {
		if _, err := ratelimit.NewRedis(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRedis(%+v) = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func hasMetric(t *testing.T, reg *prometheus.Registry, name string) bool {
	for _, mf := range gather(t, reg) {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}

// rate_limit.redis.address takes one address or a list.
func TestRedisAddressYAML(t *testing.T) {
	for in, want := range map[string]ratelimit.Addresses{
		`address: 127.0.0.1:6379`:                       {"127.0.0.1:6379"},
		`address: [10.0.0.1:6379, 10.0.0.2:6379]`:       {"10.0.0.1:6379", "10.0.0.2:6379"},
		"address:\n  - a:1\n  - b:2\n  - c:3":           {"a:1", "b:2", "c:3"},
		`{address: r:6379, failure_mode: deny}`:         {"r:6379"},
		`{address: "redis.internal:6379", timeout: 1s}`: {"redis.internal:6379"},
	} {
		var cfg ratelimit.RedisConfig
		if err := yaml.Unmarshal([]byte(in), &cfg); err != nil || !slices.Equal(cfg.Address, want) {
			t.Errorf("%s: %v %v, want %v", in, cfg.Address, err, want)
		}
	}
	var cfg ratelimit.RedisConfig
	if err := yaml.Unmarshal([]byte(`address: {host: x}`), &cfg); err == nil || !strings.Contains(err.Error(), "want host:port or a list") {
		t.Errorf("a map as address: %v", err)
	}
}
