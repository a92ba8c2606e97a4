package policy

import "context"

// Step marks a call that a composite method (package compose) makes as one
// of its steps. The step runs through the chain as the composite's caller,
// like any call of its method; the mark only tells stats to log it as a
// step of the composite.
type Step struct {
	// Composite is the composite method, /package.Service/Method.
	Composite string
	// Name is the step's name in the composite's plan.
	Name string
}

type stepKey struct{}

// WithStep returns ctx marking the calls made with it as step s.
func WithStep(ctx context.Context, s *Step) context.Context {
	return context.WithValue(ctx, stepKey{}, s)
}

// StepFromContext returns the step mark in ctx, or nil for a client's own call.
func StepFromContext(ctx context.Context) *Step {
	s, _ := ctx.Value(stepKey{}).(*Step)
	return s
}
