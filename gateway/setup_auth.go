package gateway

// AuthConfig configures the auth policy. (Filled in by its issue.)
type AuthConfig struct{}

// setupAuth builds the auth policy from g.cfg. Off until its issue lands.
func (g *Gateway) setupAuth() error { return nil }
