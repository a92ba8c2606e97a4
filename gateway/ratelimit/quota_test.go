package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// Quota outside mode redis reads this replica's bucket: a consumer who
// spent two of five calls has three left and waits two intervals for a
// full bucket; one who spent none has the whole burst.
func TestQuotaLocal(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(WithClock(func() time.Time { return now }))
	lim := policy.RateLimit{Requests: 5, Period: time.Second, Burst: 5}
	c := &policy.Call{FullMethod: "/test.v1.Svc/Get", Service: "test.v1.Svc", Method: "Get",
		Policy: &policy.Policy{RateLimit: lim}, ClientIP: "192.0.2.1", Identity: &policy.Identity{Consumer: "alice"}}
	for range 2 {
		if d := l.Decide(context.Background(), c); !d.Allowed {
			t.Fatalf("call refused: %+v", d)
		}
	}
	q, ok, err := l.Quota(context.Background(), "alice", c.FullMethod)
	if err != nil || !ok || q.Remaining != 3 || q.Reset != 400*time.Millisecond || q.Source != "local" || q.Limit != lim {
		t.Fatalf("alice: Quota = %+v, %v, %v; want 3 left, reset 400ms, local, %v", q, ok, err, lim)
	}
	q, ok, err = l.Quota(context.Background(), "bob", c.FullMethod)
	if err != nil || !ok || q.Remaining != 5 || q.Reset != 0 {
		t.Fatalf("bob: Quota = %+v, %v, %v; want 5 left, reset 0", q, ok, err)
	}
	now = now.Add(time.Second) // alice's bucket is full again, and past it
	if q, _, _ = l.Quota(context.Background(), "alice", c.FullMethod); q.Remaining != 5 || q.Reset != 0 {
		t.Fatalf("alice a second later: Quota = %+v; want 5 left, reset 0", q)
	}
}
