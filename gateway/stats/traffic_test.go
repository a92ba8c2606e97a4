package stats

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	for _, tc := range []struct {
		name       string
		q          float64
		cumulative []uint64
		total      uint64
		want       float64
	}{
		{"empty", 0.5, []uint64{0, 0, 0}, 0, 0},
		{"within the first bucket", 0.5, []uint64{10, 10, 10}, 10, 0.5},
		{"within a later bucket", 0.25, []uint64{0, 4, 8}, 8, 1.5},
		{"on a bound", 0.5, []uint64{5, 10, 10}, 10, 1},
		{"above the last bound", 0.99, []uint64{0, 0, 0}, 10, 4},
	} {
		if got := quantile(tc.q, bounds, tc.cumulative, tc.total); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: quantile = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTrafficWindows drives the clock by hand: rates cover the window since
// the snapshot at or before now-10s, recent errors everything since the
// oldest snapshot when less than a minute is known.
func TestTrafficWindows(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s, err := New(prometheus.NewRegistry(), []Route{{FullMethod: "/a.v1.A/Get", Service: "a.v1.A", Method: "Get", Backend: "a"}},
		func(o *options) { o.now = func() time.Time { return now } })
	if err != nil {
		t.Fatal(err)
	}
	c := &policy.Call{FullMethod: "/a.v1.A/Get", Service: "a.v1.A", Method: "Get", Backend: "a", Transport: policy.GRPC}
	calls := func(n int, code codes.Code, transport policy.Transport) {
		c.Transport = transport
		for range n {
			_, _ = s.UnaryServerInterceptor()(policy.NewContext(context.Background(), c), nil, &grpc.UnaryServerInfo{FullMethod: c.FullMethod},
				func(context.Context, any) (any, error) { return nil, status.Error(code, "") })
		}
	}
	calls(5, codes.OK, policy.GRPC)
	now = now.Add(10 * time.Second)
	s.snaps = append(s.snaps, s.takeSnapshot()) // what the ticker does
	calls(6, codes.OK, policy.REST)
	calls(2, codes.OK, policy.GRPC)
	calls(2, codes.Unavailable, policy.REST)
	now = now.Add(10 * time.Second)

	tr := s.Traffic()
	if tr.Window != 10*time.Second || tr.ErrorWindow != 20*time.Second {
		t.Errorf("windows = %v, %v; want 10s and 20s (all that is known)", tr.Window, tr.ErrorWindow)
	}
	r := tr.Routes[0]
	if r.Requests != 15 || r.Errors != 2 {
		t.Errorf("since start: %d requests, %d errors; want 15, 2", r.Requests, r.Errors)
	}
	if r.RequestsPerSecond != 1 || r.ErrorRatio != 0.2 {
		t.Errorf("window: %v req/s, error ratio %v; want 1 and 0.2", r.RequestsPerSecond, r.ErrorRatio)
	}
	if len(r.RecentErrors) != 1 || r.RecentErrors[0] != (CodeCount{codes.Unavailable, 2}) {
		t.Errorf("recent errors = %v", r.RecentErrors)
	}
	if r.P50 <= 0 || r.P99 < r.P50 || r.P99 > time.Minute {
		t.Errorf("p50 %v, p99 %v", r.P50, r.P99)
	}
}
