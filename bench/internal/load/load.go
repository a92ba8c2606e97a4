// Package load drives the benchmark's traffic: the four workloads over REST
// and gRPC, closed-loop at a fixed concurrency for throughput, and
// open-loop at a fixed rate for latency, measured from each request's
// scheduled send time so that a stalled server cannot hide its stall
// (no coordinated omission).
package load

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Call makes one request; worker says which goroutine makes it, so a
// caller can spread workers over connections.
type Call func(ctx context.Context, worker int) error

// Result counts what a phase did.
type Result struct {
	Requests int64         // completed without error
	Errors   int64         // failed
	FirstErr string        // the first failure, if any
	Elapsed  time.Duration // wall time of the measured part
}

// PerSecond is the phase's throughput.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

type counter struct {
	ok, failed atomic.Int64
	once       sync.Once
	first      string
}

func (c *counter) done(err error) {
	if err == nil {
		c.ok.Add(1)
		return
	}
	c.failed.Add(1)
	c.once.Do(func() { c.first = err.Error() })
}

func (c *counter) result(elapsed time.Duration) Result {
	return Result{Requests: c.ok.Load(), Errors: c.failed.Load(), FirstErr: c.first, Elapsed: elapsed}
}

// Closed runs concurrency workers back to back for d and counts calls.
func Closed(ctx context.Context, call Call, concurrency int, d time.Duration) Result {
	var c counter
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				c.done(call(ctx, w))
			}
		})
	}
	wg.Wait()
	return c.result(time.Since(start))
}

// Histogram range: 1 us to 60 s, three significant digits.
const (
	minLatency = 1
	maxLatency = 60_000_000
)

// NewHistogram makes a latency histogram in microseconds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(minLatency, maxLatency, 3)
}

// Open sends rate requests a second for warm+d from up to workers
// goroutines. Request i is due at start + i/rate; its latency runs from
// then, not from when a worker was free to send it, so queueing behind a
// slow response counts. Requests due during warm are not recorded.
//
// One pacer on a thread of its own hands out due times: time.Sleep wakes
// on the runtime's millisecond timer tick, which would send requests in
// bursts and late, while nanosleep keeps to tens of microseconds.
func Open(ctx context.Context, call Call, rate float64, workers int, warm, d time.Duration) (Result, *hdrhistogram.Histogram) {
	var c counter
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	measureFrom, end := start.Add(warm), start.Add(warm+d)
	due := make(chan time.Time, 1<<16)
	go pace(ctx, due, start, end, interval)
	h := NewHistogram()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for at := range due {
				err := call(ctx, w)
				if at.Before(measureFrom) {
					continue
				}
				c.done(err)
				if err == nil {
					mu.Lock()
					_ = h.RecordValue(max(time.Since(at).Microseconds(), minLatency))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return c.result(end.Sub(measureFrom)), h
}

// pace sends the due time of every request from start to end, each when it
// falls due, then closes due. A send that blocks (every worker busy and the
// buffer full) only delays the hand-out: the due times stay on schedule.
func pace(ctx context.Context, due chan<- time.Time, start, end time.Time, interval time.Duration) {
	defer close(due)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := int64(0); ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(end) {
			return
		}
		if wait := time.Until(at); wait > 0 {
			ts := syscall.NsecToTimespec(wait.Nanoseconds())
			_ = syscall.Nanosleep(&ts, nil)
		}
		select {
		case due <- at:
		case <-ctx.Done():
			return
		}
	}
}
