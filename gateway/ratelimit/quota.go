package ratelimit

import (
	"context"

	"github.com/portico-gw/portico/gateway/admin"
)

// Quota reads, without spending any, what a consumer has left of a
// method's limit right now: from Redis in mode redis (while it answers),
// else from this replica's bucket. ok is false for a method the gateway
// does not serve or that has no limit. A read from Redis ends by ctx's
// deadline (without one, each network read waits the decision timeout);
// it is not a decision, so the decision metrics do not count it. An error
// is logged with its detail.
func (l *Limiter) Quota(ctx context.Context, consumer, fullMethod string) (admin.Quota, bool, error) {
	m, ok := (*l.methods.Load())[fullMethod]
	if !ok {
		if l.opts.declared == nil {
			return admin.Quota{}, false, nil
		}
		service, name, lim, found := l.opts.declared(fullMethod)
		if !found {
			return admin.Quota{}, false, nil
		}
		m = l.newMethod(fullMethod, service, name, lim)
	}
	if s := l.store; s != nil && !s.isDown() {
		g := m.global.Load()
		if g == nil {
			return admin.Quota{}, false, nil
		}
		d, err := s.read(ctx, s.key(fullMethod, true, consumer), g, 0)
		if err != nil {
			l.opts.logger.Warn("quota read from the rate limit store failed", "store", "redis", "consumer", consumer,
				"method", fullMethod, "error", err)
			return admin.Quota{}, false, err
		}
		return admin.Quota{Limit: g.limit, Remaining: d.Remaining, Reset: d.Reset, Source: "redis"}, true, nil
	}
	r := m.rate.Load()
	if r == nil {
		return admin.Quota{}, false, nil
	}
	k := bucketKey{m: m, consumer: true, id: consumer}
	now := l.now()
	var tat int64
	s := l.shardOf(k)
	if b, ok := s.buckets.Load(k); ok {
		if tat = b.(*bucket).tat.Load(); tat == deadTAT {
			tat = 0 // dropped as idle: full
		}
	}
	d := r.decision(true, max(tat, now), now)
	return admin.Quota{Limit: r.limit, Remaining: d.Remaining, Reset: d.Reset, Source: "local"}, true, nil
}

// StoreStatus reports mode redis's store; ok is false in the other modes.
func (l *Limiter) StoreStatus() (admin.StoreStatus, bool) {
	if l.store == nil {
		return admin.StoreStatus{}, false
	}
	return l.store.status(), true
}

var (
	_ admin.RateLimitQuotas = (*Limiter)(nil)
	_ admin.RateLimitStore  = (*Limiter)(nil)
)
