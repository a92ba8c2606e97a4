package admin

import (
	"context"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// RateLimitStore is a rate limiter that may keep its counts in a store
// shared by the replicas (rate_limit mode redis); ok is false when it does
// not. *ratelimit.Limiter has it; WithRateLimits finds it.
type RateLimitStore interface {
	StoreStatus() (st StoreStatus, ok bool)
}

// StoreStatus is the state of a rate limiter's shared store.
type StoreStatus struct {
	Kind            string
	Addresses       []string
	State           string // "unknown", "up" or "down"
	Since           time.Time
	Errors, Outages uint64
	LastError       string
	FailureMode     string
}

// RateLimitQuotas is a rate limiter that tells what a consumer has left of
// a method's limit; ok is false for a method without a limit. Quota ends
// by ctx's deadline and logs the detail of its errors.
// *ratelimit.Limiter has it; WithRateLimits finds it.
type RateLimitQuotas interface {
	Quota(ctx context.Context, consumer, fullMethod string) (q Quota, ok bool, err error)
}

// Quota is a consumer's remaining quota of one method.
type Quota struct {
	Limit     policy.RateLimit
	Remaining uint32
	Reset     time.Duration
	Source    string // "redis" or "local"
}

func storeStatus(st StoreStatus) *adminv1.RateLimitStore {
	out := &adminv1.RateLimitStore{Kind: st.Kind, Addresses: st.Addresses, State: st.State, Errors: st.Errors,
		Outages: st.Outages, LastError: st.LastError, FailureMode: st.FailureMode}
	if !st.Since.IsZero() {
		out.Since = timestamppb.New(st.Since)
	}
	return out
}

// quotaTimeout bounds a GetQuota request: one deadline for the reads of
// every route it covers, not one each.
const quotaTimeout = time.Second

// GetQuota implements AdminService.
func (s *Server) GetQuota(ctx context.Context, req *adminv1.GetQuotaRequest) (*adminv1.GetQuotaResponse, error) {
	if req.GetConsumer() == "" {
		return nil, status.Error(codes.InvalidArgument, "consumer is required")
	}
	if s.quotas == nil {
		return nil, status.Error(codes.FailedPrecondition, "rate limiting is off")
	}
	ctx, cancel := context.WithTimeout(ctx, quotaTimeout)
	defer cancel()
	out := &adminv1.GetQuotaResponse{Consumer: req.GetConsumer()}
	found := false
	for _, r := range s.routes {
		if req.GetMethod() != "" && r.GetMethod() != req.GetMethod() {
			continue
		}
		found = true
		q, ok, err := s.quotas.Quota(ctx, req.GetConsumer(), r.GetMethod())
		if err != nil {
			// The store's error may name hosts and keys: the limiter logged it.
			return nil, status.Error(codes.Unavailable, "the rate-limit store could not be read; the gateway's log has the error")
		}
		if ok {
			out.Quotas = append(out.Quotas, &adminv1.Quota{Method: r.GetMethod(), RateLimit: RateLimit(q.Limit),
				Remaining: q.Remaining, ResetAfter: durationpb.New(q.Reset), Source: q.Source})
		}
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "no route for method %q", req.GetMethod())
	}
	return out, nil
}
