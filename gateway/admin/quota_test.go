package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/admin"
	"github.com/portico-gw/portico/gateway/policy"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeQuotas is a rate limiter whose quota reads record their deadlines
// and fail from the call numbered failAt on (0: never).
type fakeQuotas struct {
	deadlines []time.Time
	failAt    int
}

func (f *fakeQuotas) Mode() (string, int) { return "redis", 1 }
func (f *fakeQuotas) Override(string, string) (policy.RateLimit, bool) {
	return policy.RateLimit{}, false
}

func (f *fakeQuotas) Quota(ctx context.Context, _, _ string) (admin.Quota, bool, error) {
	d, _ := ctx.Deadline()
	f.deadlines = append(f.deadlines, d)
	if f.failAt > 0 && len(f.deadlines) >= f.failAt {
		return admin.Quota{}, false, errors.New("dial tcp 10.0.0.5:6379: NOPERM user portico on key portico:rl:/secret")
	}
	return admin.Quota{Limit: policy.RateLimit{Requests: 5, Period: time.Second, Burst: 5}, Remaining: 4, Source: "redis"}, true, nil
}

// GetQuota reads every route under one deadline, and answers a failed read
// with a message of its own, not the store's error.
func TestGetQuotaOneDeadlineGenericError(t *testing.T) {
	f := &fakeQuotas{}
	srv, err := admin.New(testRoutes, fakeLive{}, admin.WithRateLimits(f))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	start := time.Now()
	out, err := srv.GetQuota(context.Background(), &adminv1.GetQuotaRequest{Consumer: "shop"})
	if err != nil || len(out.GetQuotas()) != len(testRoutes) {
		t.Fatalf("GetQuota = %v, %v; want a quota per route", out, err)
	}
	if len(f.deadlines) != len(testRoutes) {
		t.Fatalf("%d reads, want %d", len(f.deadlines), len(testRoutes))
	}
	for i, d := range f.deadlines {
		if d.IsZero() || d != f.deadlines[0] || d.Sub(start) > 5*time.Second {
			t.Errorf("read %d: deadline %v, want the request's one deadline for every read (first %v)", i, d, f.deadlines[0])
		}
	}

	f.deadlines, f.failAt = nil, 2
	_, err = srv.GetQuota(context.Background(), &adminv1.GetQuotaRequest{Consumer: "shop"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "NOPERM") || strings.Contains(st.Message(), "10.0.0.5") {
		t.Errorf("a failed read answers %v %q, want UNAVAILABLE without the store's error", st.Code(), st.Message())
	}
}
