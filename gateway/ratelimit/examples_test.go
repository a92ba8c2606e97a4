package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/ratelimit"
	"google.golang.org/grpc"
)

// A public read limited per client address: 2 calls a second, bursts of 3.
func ExampleLimiter_Decide() {
	now := time.Unix(0, 0)
	l := ratelimit.New(ratelimit.WithClock(func() time.Time { return now }))
	call := &policy.Call{
		FullMethod: "/catalog.v1.CatalogService/GetProduct", Service: "catalog.v1.CatalogService", Method: "GetProduct",
		Policy:   &policy.Policy{Access: policy.Public, RateLimit: policy.RateLimit{Requests: 2, Period: time.Second, Burst: 3}},
		ClientIP: "203.0.113.9",
	}
	for range 4 {
		d := l.Decide(context.Background(), call)
		fmt.Println(d.Allowed, d.Remaining, d.RetryAfter)
	}
	now = now.Add(500 * time.Millisecond)
	fmt.Println(l.Decide(context.Background(), call).Allowed)
	// Output:
	// true 2 0s
	// true 1 0s
	// true 0 0s
	// false 0 500ms
	// true
}

// The limiter is a chain policy: its interceptors go after whatever puts
// the policy.Call into the context (the gateway does) and auth.
func ExampleLimiter_UnaryServerInterceptor() {
	l := ratelimit.New(ratelimit.WithMaxKeys(50_000), ratelimit.WithIdleTimeout(2*time.Minute))
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor( /* call facts, auth, */ l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor( /* call facts, auth, */ l.StreamServerInterceptor()),
	)
	defer srv.Stop()
	fmt.Println(l.Stats().MaxKeys)
	// Output: 50000
}

// In cluster mode each of n replicas enforces its share of a limit.
func ExampleShare() {
	lim := policy.RateLimit{Requests: 50, Period: time.Second, Burst: 100}
	for _, n := range []int{1, 2, 3} {
		fmt.Println(n, ratelimit.Share(lim, n))
	}
	// Output:
	// 1 50/1s burst 100
	// 2 25/1s burst 50
	// 3 50/3s burst 33
}

// A limit as kept in Consul KV under portico/settings/ratelimit.
func ExampleParseLimit() {
	lim, err := ratelimit.ParseLimit([]byte(`{"requests": 10, "period": "1m", "burst": 5}`))
	fmt.Println(lim, err)
	// Output: 10/1m0s burst 5 <nil>
}
