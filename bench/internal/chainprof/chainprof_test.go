package chainprof

import (
	"math"
	"testing"

	"github.com/google/pprof/profile"
)

// fake builds a CPU profile of stacks, innermost frame first as pprof
// keeps them, each with its CPU nanoseconds.
func fake(stacks map[string][]string, cpu map[string]int64) *profile.Profile {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	locs := map[string]*profile.Location{}
	loc := func(name string) *profile.Location {
		if l, ok := locs[name]; ok {
			return l
		}
		fn := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name}
		p.Function = append(p.Function, fn)
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn}}}
		p.Location = append(p.Location, l)
		locs[name] = l
		return l
	}
	for key, frames := range stacks {
		s := &profile.Sample{Value: []int64{1, cpu[key]}}
		for _, f := range frames {
			s.Location = append(s.Location, loc(f))
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

// grpcStep is the function of a part's step of a gRPC call.
func grpcStep(t *testing.T, part string) string {
	t.Helper()
	for _, s := range GRPC {
		if s.Part == part {
			return s.Func
		}
	}
	t.Fatalf("no step %q", part)
	return ""
}

func TestShares(t *testing.T) {
	g := func(part string) string { return grpcStep(t, part) }
	invoke := GRPC[len(GRPC)-1].Func
	// A gRPC call's stacks, innermost first; the rate limiter is off, so
	// auth's next step is the decode step.
	outer := []string{g(Auth), g(Stats), g(Facts), "grpc.(*Server).processRPC"}
	p := fake(map[string][]string{
		"server":   {"grpc.(*Server).handleStream"},
		"facts":    {g(Facts), "grpc.(*Server).processRPC"},
		"stats":    {"stats.end", g(Stats), g(Facts)},
		"auth":     append([]string{"sha256.block"}, outer...),
		"decode":   append([]string{"proto.Unmarshal", g(Decode)}, outer...),
		"validate": append([]string{"protovalidate.Validate", g(Validation), g(Decode)}, outer...),
		"proxy":    append([]string{"grpc.(*ClientConn).Invoke", invoke, g(Validation), g(Decode)}, outer...),
		// stats measures the backend call from within the proxy.
		"measure": append([]string{"time.Now", stats.Also[0], invoke, g(Validation), g(Decode)}, outer...),
	}, map[string]int64{"server": 400, "facts": 10, "stats": 20, "auth": 30, "decode": 40, "validate": 50, "proxy": 445, "measure": 5})
	shares, missing := Shares(p, GRPC)
	want := map[string]float64{Facts: 0.01, Stats: 0.025, Auth: 0.03, Decode: 0.04, Validation: 0.05}
	if len(shares) != len(want) {
		t.Errorf("shares %v, want %v", shares, want)
	}
	for part, w := range want {
		if math.Abs(shares[part]-w) > 1e-9 {
			t.Errorf("%s: %v, want %v", part, shares[part], w)
		}
	}
	if len(missing) != 1 || missing[0] != g(RateLimit) {
		t.Errorf("missing %v, want the rate limiter's interceptor alone", missing)
	}
}

func TestSharesOfNothing(t *testing.T) {
	shares, _ := Shares(fake(nil, nil), REST)
	if len(shares) != 0 {
		t.Errorf("an empty profile gave %v", shares)
	}
}

// A composite method's steps call the chain again from within the proxy,
// so one stack holds every step twice: the inner chain's work is its own
// policies', not the proxy's of the outer call.
func TestSharesOfANestedChain(t *testing.T) {
	var chain []string // innermost first, as pprof keeps stacks
	for _, s := range GRPC {
		chain = append([]string{s.Func}, chain...)
	}
	g := func(part string) string { return grpcStep(t, part) }
	// inner is a stack inside the composite's step's chain, from one of its
	// functions down to the outer call's root.
	inner := func(frames ...string) []string {
		return append(append(frames, "proxy.(*Method).Call"), chain...)
	}
	p := fake(map[string][]string{
		"outer auth": append([]string{"sha256.block"}, chain[len(chain)-3:]...),
		"inner auth": inner("sha256.block", g(Auth), g(Stats), g(Facts)),
		"inner rate": inner("ratelimit.allow", g(RateLimit), g(Auth), g(Stats), g(Facts)),
		"inner call": inner("grpc.(*ClientConn).Invoke", GRPC[len(GRPC)-1].Func, g(Validation), g(Decode), g(RateLimit), g(Auth), g(Stats), g(Facts)),
	}, map[string]int64{"outer auth": 10, "inner auth": 20, "inner rate": 30, "inner call": 40})
	shares, _ := Shares(p, GRPC)
	for part, w := range map[string]float64{Auth: 0.3, RateLimit: 0.3} {
		if math.Abs(shares[part]-w) > 1e-9 {
			t.Errorf("%s: %v, want %v", part, shares[part], w)
		}
	}
}
