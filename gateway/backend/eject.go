package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
)

// Outlier ejection is a balancer of ours, between the Consul resolver and
// grpc-go's balancer (round_robin, least_request or ring_hash), rather than
// grpc-go's outlier_detection. That one is registered only by
// google.golang.org/grpc/xds, and importing it costs the gateway binary a
// large dependency tree (measured in docs/resilience.md: size, init time and
// module count); it also has no consecutive-failures rule, only success-rate
// and failure-percentage rules run at interval ticks, so it could not eject
// an instance within a few failures of it going bad. This filter is small:
// it counts each attempt's result per instance in the picker's Done (every
// attempt, retries included: the proxy's own records see only a call's
// last attempt, which after a retry is the instance that answered), and it
// hands its child the resolver's endpoints minus the ejected ones.
//
// The filter also counts a call's attempts, for the access log and the
// retries metric (Attempts), and answers at once when the backend has no
// instance at all.

// Name is the balancer's registered name.
const Name = "portico_outlier"

func init() { balancer.Register(builder{}) }

type builder struct{}

func (builder) Name() string { return Name }

// lbConfig is the balancer's service-config JSON.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	ConsecutiveFailures int             `json:"consecutiveFailures"`
	Interval            jsonDur         `json:"interval"`
	BaseEjectionTime    jsonDur         `json:"baseEjectionTime"`
	MaxEjectionTime     jsonDur         `json:"maxEjectionTime"`
	MaxEjectionPercent  int             `json:"maxEjectionPercent"`
	ChildPolicy         json.RawMessage `json:"childPolicy"`

	childName string
	child     serviceconfig.LoadBalancingConfig
}

type jsonDur time.Duration

func (d *jsonDur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = jsonDur(v)
	return err
}

func (d jsonDur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var c lbConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	var child []map[string]json.RawMessage
	if err := json.Unmarshal(c.ChildPolicy, &child); err != nil || len(child) != 1 || len(child[0]) != 1 {
		return nil, fmt.Errorf("%s: childPolicy: want one policy, as [{\"round_robin\":{}}]", Name)
	}
	for name, cfg := range child[0] {
		b := balancer.Get(name)
		if b == nil {
			return nil, fmt.Errorf("%s: child policy %q is not registered", Name, name)
		}
		c.childName = name
		if p, ok := b.(balancer.ConfigParser); ok {
			parsed, err := p.ParseConfig(cfg)
			if err != nil {
				return nil, fmt.Errorf("%s: child policy %s: %w", Name, name, err)
			}
			c.child = parsed
		}
	}
	return &c, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &ejector{cc: cc, opts: opts, hosts: map[string]*host{}, subConns: map[balancer.SubConn]*host{}}
}

// ejector is one backend connection's filter.
type ejector struct {
	cc   balancer.ClientConn
	opts balancer.BuildOptions

	// childMu serialises every call into the child: grpc-go's own calls
	// (resolver updates, subchannel states) and the filter's (ejections,
	// returns), which come from RPC and timer goroutines. It is taken
	// before mu, never while mu is held.
	childMu   sync.Mutex
	child     balancer.Balancer // nil once closed
	childName string

	mu            sync.Mutex
	cfg           *lbConfig
	tracker       *Tracker
	state         resolver.State   // the resolver's last state, unfiltered
	hosts         map[string]*host // by address
	subConns      map[balancer.SubConn]*host
	timer         *time.Timer
	reviewPending bool
	closed        bool
}

// host is one instance as the filter sees it.
type host struct {
	addr, id    string
	done        func(balancer.DoneInfo) // records an attempt's result
	consecutive atomic.Int32            // failed attempts in a row
	lastErr     atomic.Pointer[string]

	// Under ejector.mu.
	ejectedAt, until time.Time
	times            int // ejections so far: each is longer
	reason           string
	kept             bool // refused ejection (max_ejection_percent), logged once
}

func (e *ejector) newHost(addr, id string) *host {
	h := &host{addr: addr, id: id}
	h.done = func(di balancer.DoneInfo) {
		if di.Err == nil && !di.BytesSent && !di.BytesReceived {
			return // grpc-go gave the pick back unused (its subchannel was not ready)
		}
		e.record(h, di.Err)
	}
	return h
}

func (e *ejector) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*lbConfig)
	if !ok {
		return fmt.Errorf("%s: no config", Name)
	}
	e.mu.Lock()
	e.cfg, e.state = cfg, s.ResolverState
	if t, ok := s.ResolverState.Attributes.Value(trackerKey{}).(*Tracker); ok && e.tracker != t {
		e.tracker = t
		t.attach(e)
	}
	seen := map[string]bool{}
	for _, ep := range s.ResolverState.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		addr := ep.Addresses[0].Addr
		seen[addr] = true
		if e.hosts[addr] == nil {
			e.hosts[addr] = e.newHost(addr, discovery.InstanceID(ep))
		}
	}
	var left []*host
	for addr, h := range e.hosts {
		if !seen[addr] {
			delete(e.hosts, addr) // gone from Consul: its ejection ends with it
			if !h.until.IsZero() {
				left = append(left, h)
			}
		}
	}
	t := e.tracker
	e.mu.Unlock()
	for _, h := range left {
		t.returned(h, "left Consul while ejected")
	}
	return e.syncChild()
}

// filteredLocked is the resolver state without the ejected instances.
func (e *ejector) filteredLocked() resolver.State {
	st := e.state
	st.Endpoints = nil
	for _, ep := range e.state.Endpoints {
		if len(ep.Addresses) > 0 {
			if h := e.hosts[ep.Addresses[0].Addr]; h != nil && !h.until.IsZero() {
				continue
			}
		}
		st.Endpoints = append(st.Endpoints, ep)
	}
	return st
}

// syncChild hands the child the latest filtered state. It reads that state
// while holding childMu, so whichever of a resolver update, an ejection or
// a return gets there last, the child ends with the newest list; and it
// does nothing once the filter is closed.
func (e *ejector) syncChild() error {
	e.childMu.Lock()
	defer e.childMu.Unlock()
	e.mu.Lock()
	if e.closed || e.cfg == nil {
		e.mu.Unlock()
		return nil
	}
	cfg, st := e.cfg, e.filteredLocked()
	e.mu.Unlock()
	if e.child == nil || e.childName != cfg.childName {
		if e.child != nil {
			e.child.Close()
		}
		e.child, e.childName = balancer.Get(cfg.childName).Build(&childCC{ClientConn: e.cc, e: e}, e.opts), cfg.childName
	}
	err := e.child.UpdateClientConnState(balancer.ClientConnState{ResolverState: st, BalancerConfig: cfg.child})
	if len(st.Endpoints) == 0 {
		// No instance: the child's picker already fails calls at once; its
		// complaint about an empty list needs nothing more.
		return nil
	}
	return err
}

func (e *ejector) ResolverError(err error) {
	e.childMu.Lock()
	defer e.childMu.Unlock()
	if e.child != nil {
		e.child.ResolverError(err)
		return
	}
	e.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure,
		Picker: errPicker{status.Error(codes.Unavailable, err.Error())}})
}

func (e *ejector) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {
	// Subchannel states reach the child through their StateListener.
}

func (e *ejector) ExitIdle() {
	e.childMu.Lock()
	defer e.childMu.Unlock()
	if e.child != nil {
		e.child.ExitIdle()
	}
}

func (e *ejector) Close() {
	e.mu.Lock()
	e.closed = true
	if e.timer != nil {
		e.timer.Stop()
	}
	var out []*host
	for _, h := range e.hosts {
		if !h.until.IsZero() {
			out = append(out, h)
		}
	}
	t := e.tracker
	e.mu.Unlock()
	if t != nil {
		for _, h := range out {
			t.returned(h, "the backend connection closed")
		}
		t.detach(e)
	}
	e.childMu.Lock()
	defer e.childMu.Unlock()
	if e.child != nil {
		e.child.Close()
		e.child = nil
	}
}

// childCC is the ClientConn the child sees: its subchannels are known by
// address, and its pickers count attempts and results.
type childCC struct {
	balancer.ClientConn
	e *ejector
}

func (c *childCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	e := c.e
	listener := opts.StateListener
	var sc balancer.SubConn
	opts.StateListener = func(s balancer.SubConnState) {
		if s.ConnectivityState == connectivity.Shutdown {
			e.mu.Lock()
			delete(e.subConns, sc)
			e.mu.Unlock()
		}
		if listener != nil {
			e.childMu.Lock()
			defer e.childMu.Unlock()
			if e.child != nil { // closed: the child is gone
				listener(s)
			}
		}
	}
	sc, err := c.ClientConn.NewSubConn(addrs, opts)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if len(addrs) > 0 {
		h := e.hosts[addrs[0].Addr]
		if h == nil { // not from the resolver's list (it changed since): counted apart
			h = e.newHost(addrs[0].Addr, "")
		}
		e.subConns[sc] = h
	}
	e.mu.Unlock()
	return sc, nil
}

func (c *childCC) UpdateState(s balancer.State) {
	e := c.e
	e.mu.Lock()
	// A snapshot: the picker reads it without a lock. A subchannel made
	// after it is in the next picker, which its first state change brings.
	byConn := maps.Clone(e.subConns)
	cfg := e.cfg
	e.mu.Unlock()
	if s.Picker != nil {
		s.Picker = &picker{child: s.Picker, e: e, hosts: byConn, cfg: cfg}
	}
	c.ClientConn.UpdateState(s)
}

// picker counts each attempt and records its result against its instance.
type picker struct {
	child balancer.Picker
	e     *ejector
	hosts map[balancer.SubConn]*host
	cfg   *lbConfig
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	res, err := p.child.Pick(info)
	if err != nil {
		return res, err
	}
	// Counted at the pick. In the rare race where grpc-go finds the picked
	// subchannel no longer ready, gives the pick back and picks again, an
	// attempt counts twice; its result is not recorded (host.done).
	if c, ok := policy.FromContext(info.Ctx); ok {
		c.AddAttempt()
	}
	h := p.hosts[res.SubConn]
	if h == nil || p.cfg == nil || p.cfg.ConsecutiveFailures <= 0 {
		return res, nil
	}
	done := res.Done
	if done == nil { // round_robin's: the host's own callback, made once
		res.Done = h.done
		return res, nil
	}
	res.Done = func(di balancer.DoneInfo) {
		h.done(di)
		done(di)
	}
	return res, nil
}

type errPicker struct{ err error }

func (p errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, p.err
}

// failed says whether an attempt's error counts against its instance: the
// instance did not answer, answered that it cannot serve, or broke. A
// status the backend chose about the request (NOT_FOUND, INVALID_ARGUMENT,
// PERMISSION_DENIED, ...) is an answer, and the client's own cancelling
// says nothing of the instance.
func failed(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// record counts one attempt's result against h and ejects it when it has
// failed too many times in a row.
func (e *ejector) record(h *host, err error) {
	if !failed(err) {
		if h.consecutive.Load() != 0 && status.Code(err) != codes.Canceled {
			h.consecutive.Store(0)
		}
		return
	}
	msg := codeName(status.Code(err)) + ": " + status.Convert(err).Message()
	h.lastErr.Store(&msg)
	if int(h.consecutive.Add(1)) < e.cfgFailures() {
		return
	}
	// Off the RPC's goroutine: ejecting updates the child.
	go e.eject(h)
}

func (e *ejector) cfgFailures() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg == nil || e.cfg.ConsecutiveFailures <= 0 {
		return int(^uint(0) >> 1)
	}
	return e.cfg.ConsecutiveFailures
}

// eject takes h out of rotation, unless it is already out, has left, or
// the backend already has its share of instances out.
func (e *ejector) eject(h *host) {
	e.mu.Lock()
	cfg, t := e.cfg, e.tracker
	if e.closed || cfg == nil || !h.until.IsZero() || e.hosts[h.addr] != h ||
		int(h.consecutive.Load()) < cfg.ConsecutiveFailures {
		e.mu.Unlock()
		return
	}
	ejected := 0
	for _, o := range e.hosts {
		if !o.until.IsZero() {
			ejected++
		}
	}
	if allowed := len(e.hosts) * cfg.MaxEjectionPercent / 100; ejected >= allowed {
		// Keep counting from zero: it may be ejected once another returns.
		h.consecutive.Store(0)
		first := !h.kept
		h.kept = true
		e.mu.Unlock()
		if first {
			t.refused(h)
		}
		return
	}
	now := time.Now()
	h.times++
	h.kept = false
	d := min(time.Duration(cfg.BaseEjectionTime)*time.Duration(h.times), time.Duration(cfg.MaxEjectionTime))
	last := ""
	if p := h.lastErr.Load(); p != nil {
		last = *p
	}
	h.ejectedAt, h.until = now, now.Add(d)
	h.reason = fmt.Sprintf("%d consecutive failures, the last %s", h.consecutive.Load(), last)
	h.consecutive.Store(0)
	e.scheduleLocked(time.Duration(cfg.Interval))
	e.mu.Unlock()
	t.ejected(h, d)
	if err := e.syncChild(); err != nil && !errors.Is(err, balancer.ErrBadResolverState) {
		t.logf("outlier ejection: updating the balancer: %v", err)
	}
}

// scheduleLocked makes sure a review of ejections runs within every; a
// review already pending keeps its time, so a run of ejections does not
// postpone returns.
func (e *ejector) scheduleLocked(every time.Duration) {
	if e.reviewPending {
		return
	}
	e.reviewPending = true
	if e.timer == nil {
		e.timer = time.AfterFunc(every, e.review)
		return
	}
	e.timer.Reset(every)
}

// review returns the instances whose ejection is over, and comes again
// while any is still out.
func (e *ejector) review() {
	e.mu.Lock()
	e.reviewPending = false
	if e.closed || e.cfg == nil {
		e.mu.Unlock()
		return
	}
	now, cfg, t := time.Now(), e.cfg, e.tracker
	var back []*host
	out := false
	for _, h := range e.hosts {
		switch {
		case h.until.IsZero():
		case !now.Before(h.until):
			h.until, h.reason = time.Time{}, ""
			h.consecutive.Store(0)
			back = append(back, h)
		default:
			out = true
		}
	}
	if out {
		e.scheduleLocked(time.Duration(cfg.Interval))
	}
	e.mu.Unlock()
	if len(back) == 0 {
		return
	}
	for _, h := range back {
		t.returned(h, "its ejection time is over")
	}
	if err := e.syncChild(); err != nil && !errors.Is(err, balancer.ErrBadResolverState) {
		t.logf("outlier ejection: updating the balancer: %v", err)
	}
}

// snapshot lists the instances now ejected.
func (e *ejector) snapshot() []Ejection {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Ejection
	for _, h := range e.hosts {
		if !h.until.IsZero() {
			out = append(out, Ejection{ID: h.id, Addr: h.addr, Since: h.ejectedAt, Until: h.until, Reason: h.reason, Times: h.times})
		}
	}
	return out
}

// codeName is a code as gRPC's specification and service configs spell it:
// UNAVAILABLE, DEADLINE_EXCEEDED.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
