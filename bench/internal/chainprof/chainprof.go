// Package chainprof reads what each policy of Portico's chain costs out of
// a CPU profile of the gateway under load. The chain's interceptors call
// one another, outermost first, so a policy's own work is the samples
// whose stack holds its interceptor and not the next step it calls.
package chainprof

import (
	"fmt"
	"os"
	"slices"

	"github.com/google/pprof/profile"
)

// A Step is one frame of a unary call's way through the gateway: Func is
// its function as a profile names it. Part is what the report calls the
// step's own work; a step with no Part bounds the one before it but is
// not the chain's (the REST door's handler, the proxy). Also are the
// part's functions that run below the last step, in the proxy: their
// samples count for the part too.
type Step struct {
	Part string
	Func string
	Also []string
}

// The parts of the chain, in the order of its steps.
const (
	Facts      = "call facts"
	Stats      = "stats"
	Auth       = "auth"
	RateLimit  = "rate limit"
	Decode     = "decode"
	Validation = "validation"
)

// Parts lists the parts in their order.
func Parts() []string { return []string{Facts, Stats, Auth, RateLimit, Decode, Validation} }

const pkg = "github.com/portico-gw/portico/gateway/"

// The steps of a unary call through each door, outermost first. A gRPC
// call is decoded for validation by the proxy's decode step; a REST call's
// outer half (facts to rate limit) resumes grpc-gateway's handler, which
// decodes the JSON and calls the inner half (validation) through the
// door's in-process connection. Both end in the proxy.
var (
	GRPC = []Step{
		{Part: Facts, Func: pkg + "chain.(*Chain).factsUnary"},
		stats,
		{Part: Auth, Func: pkg + "auth.(*Policy).UnaryServerInterceptor.UnaryServerInterceptor.func1"},
		{Part: RateLimit, Func: pkg + "ratelimit.(*Limiter).UnaryServerInterceptor.func1"},
		{Part: Decode, Func: pkg + "proxy.(*Method).decodeStep"},
		{Part: Validation, Func: pkg + "validate.(*Policy).UnaryServerInterceptor.func1"},
		{Func: pkg + "proxy.(*Method).Invoke"},
	}
	REST = []Step{
		{Part: Facts, Func: pkg + "chain.(*Chain).factsUnary"},
		stats,
		{Part: Auth, Func: pkg + "auth.(*Policy).UnaryServerInterceptor.UnaryServerInterceptor.func1"},
		{Part: RateLimit, Func: pkg + "ratelimit.(*Limiter).UnaryServerInterceptor.func1"},
		{Func: pkg + "rest.(*Door).resume"},
		{Part: Validation, Func: pkg + "validate.(*Policy).UnaryServerInterceptor.func1"},
		{Func: pkg + "proxy.(*Method).Invoke"},
	}
	// stats also measures the backend call, from within the proxy.
	stats = Step{Part: Stats, Func: pkg + "stats.(*Stats).UnaryServerInterceptor.func1", Also: []string{
		pkg + "stats.(*Stats).StartBackendCall", pkg + "stats.BackendCall.Reached",
		pkg + "stats.BackendCall.Attempts", pkg + "stats.BackendCall.End"}}
)

// Shares gives each part of steps its share of p's CPU: the samples whose
// innermost step is the part's function, with those of its Also found
// before any step, over all of p's samples. The chain's steps nest,
// outermost first, so those are the samples whose stack holds the part's
// function and not a step it calls (a policy that is off is on no stack),
// and a chain run again within the proxy (a composite method's steps)
// counts for its own policies. A part whose function p lacks is left out.
// missing lists the steps' functions p has no samples of: a policy that is
// off, or a function renamed.
func Shares(p *profile.Profile, steps []Step) (shares map[string]float64, missing []string) {
	value := len(p.SampleType) - 1
	for i, t := range p.SampleType {
		if t.Type == "cpu" {
			value = i
		}
	}
	// in[i] tells whether any stack holds steps[i]; own[i] is the value of
	// the samples whose innermost step, or Also, is steps[i]'s.
	n := len(steps)
	var total int64
	in, own := make([]bool, n), make([]int64, n)
	for _, s := range p.Sample {
		v := s.Value[value]
		total += v
		innermost := -1
		// Locations run from the leaf to the root, and a location's lines
		// from the innermost inlined call to the function it is in.
		for _, loc := range s.Location {
			for _, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				for i, st := range steps {
					if line.Function.Name == st.Func {
						in[i] = true
					}
					if innermost < 0 && (line.Function.Name == st.Func || slices.Contains(st.Also, line.Function.Name)) {
						innermost = i
					}
				}
			}
		}
		if innermost >= 0 {
			own[innermost] += v
		}
	}
	shares = map[string]float64{}
	if total == 0 {
		return shares, nil
	}
	for i, st := range steps {
		if !in[i] {
			missing = append(missing, st.Func)
			continue
		}
		if st.Part != "" {
			shares[st.Part] = float64(own[i]) / float64(total)
		}
	}
	return shares, missing
}

// File is Shares of the CPU profile at path.
func File(path string, steps []Step) (map[string]float64, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	shares, missing := Shares(p, steps)
	return shares, missing, nil
}
