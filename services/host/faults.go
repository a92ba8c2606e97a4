package host

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Faults make an instance misbehave while its health check still passes,
// so that anyone can watch the gateway's retries, ejection and circuit
// breaking at work. Health calls are never touched: Consul keeps listing the
// instance as passing, which is the case those mechanisms exist for.
type Faults struct {
	// FailRate is the share of calls, 0 to 1, answered UNAVAILABLE at once.
	FailRate float64
	// Delay is added to every call before it is served.
	Delay time.Duration
	// HangRate is the share of calls, 0 to 1, never answered: they end
	// only when the caller's deadline or cancellation ends them.
	HangRate float64
}

// Enabled reports whether any fault is set.
func (f Faults) Enabled() bool { return f.FailRate > 0 || f.Delay > 0 || f.HangRate > 0 }

// Validate checks that the rates are shares and the delay is not negative.
func (f Faults) Validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{{"fail-rate", f.FailRate}, {"hang-rate", f.HangRate}} {
		if r.v < 0 || r.v > 1 {
			return fmt.Errorf("host: -%s %v: want a share between 0 and 1", r.name, r.v)
		}
	}
	if f.Delay < 0 {
		return fmt.Errorf("host: -delay %v: want a duration of 0 or more", f.Delay)
	}
	return nil
}

// FaultFlags defines -fail-rate, -delay and -hang-rate on fs and returns
// the Faults they fill in when fs is parsed. Without them the instance
// behaves.
func FaultFlags(fs *flag.FlagSet) *Faults {
	var f Faults
	fs.Float64Var(&f.FailRate, "fail-rate", 0, "share of calls (0-1) answered UNAVAILABLE, health checks excepted (fault injection)")
	fs.DurationVar(&f.Delay, "delay", 0, "added to every call, health checks excepted (fault injection)")
	fs.Float64Var(&f.HangRate, "hang-rate", 0, "share of calls (0-1) never answered until the caller's deadline (fault injection)")
	return &f
}

// received counts the calls an instance received, by full method, whether
// or not a fault answered them: what a test counts to prove a call was
// never sent twice.
type received struct{ m sync.Map } // full method -> *atomic.Int64

func (r *received) add(method string) {
	n, ok := r.m.Load(method)
	if !ok {
		n, _ = r.m.LoadOrStore(method, new(atomic.Int64))
	}
	n.(*atomic.Int64).Add(1)
}

func (r *received) get(method string) int64 {
	if n, ok := r.m.Load(method); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// inject applies f to one call of method; a non-nil error is the call's
// answer.
func (f Faults) inject(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthMethods) {
		return nil
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if f.HangRate > 0 && rand.Float64() < f.HangRate {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if f.FailRate > 0 && rand.Float64() < f.FailRate {
		return status.Error(codes.Unavailable, "injected fault: this instance fails a share of its calls (-fail-rate)")
	}
	return nil
}

// healthMethods prefixes every method of grpc.health.v1, which faults, like
// the client-certificate check (requireClientCert), leave alone.
var healthMethods = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// faultInterceptors count every call and apply the faults f holds before
// the handler.
func faultInterceptors(f *atomic.Pointer[Faults], seen *received) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			seen.add(info.FullMethod)
			if err := f.Load().inject(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			seen.add(info.FullMethod)
			if err := f.Load().inject(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}
}
