package stats

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
)

// Traffic is the live view of every route: what the admin page polls.
type Traffic struct {
	// Time is when the numbers were taken.
	Time time.Time
	// Window is what rates, ratios and percentiles cover; ErrorWindow what
	// RecentErrors covers. Both are shorter right after start.
	Window, ErrorWindow time.Duration
	// Routes follow the route table's order.
	Routes []RouteTraffic
}

// RouteTraffic is one route, REST and gRPC together.
type RouteTraffic struct {
	// FullMethod is /package.Service/Method.
	FullMethod string
	// Requests and Errors count calls since start; errors are calls that
	// did not end with OK.
	Requests, Errors uint64
	// RequestsPerSecond and ErrorRatio cover the window.
	RequestsPerSecond, ErrorRatio float64
	// P50 and P99 are latency percentiles over the window, interpolated
	// within histogram buckets; zero without calls.
	P50, P99 time.Duration
	// RecentErrors counts the error window's failed calls by code.
	RecentErrors []CodeCount
}

// CodeCount is a number of calls that ended with one code.
type CodeCount struct {
	Code  codes.Code
	Count uint64
}

// snapshot holds every route's cumulative counts at one moment. The live
// numbers are differences between two snapshots, so they cost the calls
// nothing: the counts are the Prometheus series themselves.
type snapshot struct {
	at     time.Time
	routes []routeCounts
}

type routeCounts struct {
	codes   [numCodes]uint64
	buckets []uint64 // cumulative, one per bound of durationBuckets
	count   uint64
}

func (s *Stats) zeroSnapshot() snapshot {
	snap := snapshot{at: s.opts.now(), routes: make([]routeCounts, len(s.order))}
	for i := range snap.routes {
		snap.routes[i].buckets = make([]uint64, len(durationBuckets))
	}
	return snap
}

func (s *Stats) takeSnapshot() snapshot {
	snap := s.zeroSnapshot()
	for i, r := range s.order {
		rc := &snap.routes[i]
		for _, se := range [...]*series{r.rest, r.grpc} {
			for code, n := range se.codes.counts() {
				rc.codes[code] += n
			}
			buckets, n := histogramCounts(se.duration)
			for k := range min(len(buckets), len(rc.buckets)) {
				rc.buckets[k] += buckets[k]
			}
			rc.count += n
		}
	}
	return snap
}

// sample takes a snapshot every tick and keeps those the error window needs.
func (s *Stats) sample(ctx context.Context) {
	t := time.NewTicker(s.opts.tick)
	defer t.Stop()
	keep := int(s.opts.errorWindow/s.opts.tick) + 2
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap := s.takeSnapshot()
		s.mu.Lock()
		s.snaps = append(s.snaps, snap)
		if len(s.snaps) > keep {
			s.snaps = append(s.snaps[:0], s.snaps[len(s.snaps)-keep:]...)
		}
		s.mu.Unlock()
	}
}

// base returns the latest snapshot taken at or before t, or the oldest.
func (s *Stats) base(t time.Time) snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.snaps[0]
	for _, snap := range s.snaps[1:] {
		if snap.at.After(t) {
			break
		}
		b = snap
	}
	return b
}

// Traffic returns the live numbers of every route.
func (s *Stats) Traffic() Traffic {
	now := s.takeSnapshot()
	live := s.base(now.at.Add(-s.opts.window))
	recent := s.base(now.at.Add(-s.opts.errorWindow))
	out := Traffic{Time: now.at, Window: now.at.Sub(live.at), ErrorWindow: now.at.Sub(recent.at)}
	for i, r := range s.order {
		cur, prev, old := &now.routes[i], &live.routes[i], &recent.routes[i]
		rt := RouteTraffic{FullMethod: r.FullMethod}
		var windowCalls, windowErrors uint64
		for code := range cur.codes {
			rt.Requests += cur.codes[code]
			windowCalls += cur.codes[code] - prev.codes[code]
			if codes.Code(code) == codes.OK {
				continue
			}
			rt.Errors += cur.codes[code]
			windowErrors += cur.codes[code] - prev.codes[code]
			if n := cur.codes[code] - old.codes[code]; n > 0 {
				rt.RecentErrors = append(rt.RecentErrors, CodeCount{Code: codes.Code(code), Count: n})
			}
		}
		if secs := out.Window.Seconds(); secs > 0 {
			rt.RequestsPerSecond = float64(windowCalls) / secs
		}
		if windowCalls > 0 {
			rt.ErrorRatio = float64(windowErrors) / float64(windowCalls)
		}
		delta := make([]uint64, len(cur.buckets))
		for k := range delta {
			delta[k] = cur.buckets[k] - prev.buckets[k]
		}
		total := cur.count - prev.count
		rt.P50 = seconds(quantile(0.50, durationBuckets, delta, total))
		rt.P99 = seconds(quantile(0.99, durationBuckets, delta, total))
		out.Routes = append(out.Routes, rt)
	}
	return out
}

// quantile estimates the q-quantile from cumulative bucket counts as
// Prometheus' histogram_quantile does: linear within the bucket; an
// observation above the last bound counts as the last bound.
func quantile(q float64, bounds []float64, cumulative []uint64, total uint64) float64 {
	if total == 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * float64(total)
	for i, c := range cumulative {
		if float64(c) < rank {
			continue
		}
		lower, below := 0.0, 0.0
		if i > 0 {
			lower, below = bounds[i-1], float64(cumulative[i-1])
		}
		in := float64(c) - below
		if in == 0 {
			return bounds[i]
		}
		return lower + (bounds[i]-lower)*(rank-below)/in
	}
	return bounds[len(bounds)-1]
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
