package stats

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConsulStatus is whether the gateway reaches Consul, as the resolver's
// watches find it.
type ConsulStatus struct {
	// Reachable is true while the last query of at least one backend's
	// watch was answered; false before the first answer and once every
	// watch's last query has failed.
	Reachable bool
	// Since is when Reachable last changed; zero before any report.
	Since time.Time
	// Unreachable is how long Consul could not be reached since start,
	// the outage in progress included.
	Unreachable time.Duration
	// Outages counts the times Consul became unreachable.
	Outages uint64
	// LastError is the watch error that made Consul unreachable, while
	// it is.
	LastError string
}

// Consul returns whether the gateway reaches Consul now, and for how long
// it did not.
func (s *Stats) Consul() ConsulStatus { return s.backends.consul.status() }

// consulReach derives whether Consul can be reached from the reports of the
// watches the resolver already runs, one per backend, so it costs no query
// of its own. Consul counts as reachable while any watch's last query was
// answered: a failure that only one backend's watch sees (an ACL on that
// service, say) is that backend's trouble, shown by its watch errors, not
// an outage of Consul. An agent that is down fails every watch within a
// retry or two.
//
// The resolver keeps routing to the last instances it knew while Consul is
// away, so the gateway stays ready; this is what tells an operator that
// the list may be going stale.
type consulReach struct {
	logger *slog.Logger
	now    func() time.Time
	up     prometheus.Gauge

	mu        sync.Mutex
	answered  map[string]struct{}  // backends whose watch's last query was answered
	failing   map[string]time.Time // backend -> first failure of its current run of failures
	reported  bool                 // any report yet
	lastOK    time.Time            // the last answer of any watch
	reachable bool
	since     time.Time     // when reachable last changed
	away      time.Duration // closed outages
	outages   uint64
	lastErr   string
}

func newConsulReach(logger *slog.Logger, now func() time.Time) *consulReach {
	return &consulReach{
		logger:   logger,
		now:      now,
		up:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "portico_consul_up", Help: "1 while Consul answers the gateway's backend watches; 0 before its first answer and while every watch fails."}),
		answered: map[string]struct{}{},
		failing:  map[string]time.Time{},
	}
}

// watchOK notes an answered query of a backend's watch.
func (c *consulReach) watchOK(backend string) {
	now := c.now()
	c.mu.Lock()
	c.lastOK = now
	delete(c.failing, backend)
	c.answered[backend] = struct{}{}
	c.reported = true
	if c.reachable {
		c.mu.Unlock()
		return
	}
	away, wasDown := now.Sub(c.since), c.outages > 0
	if wasDown {
		c.away += away
	}
	c.reachable, c.since, c.lastErr = true, now, ""
	c.up.Set(1)
	c.mu.Unlock()
	if wasDown {
		c.logger.Info("consul reachable again", "away", away.Round(time.Millisecond), "backend", backend)
	}
}

// watchError notes a failed query of a backend's watch.
func (c *consulReach) watchError(backend string, err error) {
	c.mu.Lock()
	now := c.now()
	if _, ok := c.failing[backend]; !ok {
		c.failing[backend] = now
	}
	delete(c.answered, backend)
	first := !c.reported
	c.reported = true
	if len(c.answered) > 0 || (!c.reachable && !first) {
		c.mu.Unlock()
		return
	}
	// Every watch now fails: the outage began with the first failure
	// after the last answer. A watch that failed before it (the one with
	// an ACL of its own) tells nothing about when Consul went away.
	start := now
	for _, t := range c.failing {
		if t.Before(start) && t.After(c.lastOK) {
			start = t
		}
	}
	c.reachable, c.since, c.lastErr = false, start, err.Error()
	c.outages++
	c.up.Set(0)
	c.mu.Unlock()
	c.logger.Warn("consul unreachable; routing to the last known instances", "backend", backend, "error", err)
}

func (c *consulReach) status() ConsulStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ConsulStatus{Reachable: c.reachable, Since: c.since, Unreachable: c.away, Outages: c.outages, LastError: c.lastErr}
	if c.reported && !c.reachable && c.outages > 0 {
		st.Unreachable += c.now().Sub(c.since)
	}
	return st
}

// collectors are portico_consul_up and portico_consul_unreachable_seconds_total,
// the latter computed at scrape time so that an outage in progress counts.
func (c *consulReach) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.up, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "portico_consul_unreachable_seconds_total",
		Help: "Seconds during which every backend watch of the gateway failed to reach Consul, the outage in progress included.",
	}, func() float64 { return c.status().Unreachable.Seconds() })}
}
