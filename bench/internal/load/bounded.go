package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/status"
)

// Tally is what a Bounded phase did: every call's outcome, failures by
// gRPC code, and the latency of the calls that succeeded.
type Tally struct {
	Calls    int64            // made, succeeded or not
	OK       int64            // succeeded
	Failures map[string]int64 // by gRPC code name
	FirstErr string
	Elapsed  time.Duration
	Latency  *hdrhistogram.Histogram // microseconds, successful calls only
}

// Bounded makes at most n calls from concurrency workers and stops early
// when d has passed, so that a path that hangs cannot hold the run.
func Bounded(ctx context.Context, call Call, concurrency int, n int64, d time.Duration) Tally {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := Tally{Failures: map[string]int64{}, Latency: NewHistogram()}
	var (
		issued atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
	)
	start := time.Now()
	for w := range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil && issued.Add(1) <= n {
				began := time.Now()
				err := call(ctx, w)
				took := max(time.Since(began).Microseconds(), minLatency)
				mu.Lock()
				t.Calls++
				if err == nil {
					t.OK++
					_ = t.Latency.RecordValue(took)
				} else {
					t.Failures[status.Code(err).String()]++
					if t.FirstErr == "" {
						t.FirstErr = err.Error()
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Elapsed = time.Since(start)
	return t
}
