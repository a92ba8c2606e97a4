package gateway

// ValidationConfig configures the validation policy. (Filled in by its issue.)
type ValidationConfig struct{}

// setupValidation builds the validation policy from g.cfg. Off until its issue lands.
func (g *Gateway) setupValidation() error { return nil }
