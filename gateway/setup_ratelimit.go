package gateway

// RateLimitConfig configures the ratelimit policy. (Filled in by its issue.)
type RateLimitConfig struct{}

// setupRateLimit builds the ratelimit policy from g.cfg. Off until its issue lands.
func (g *Gateway) setupRateLimit() error { return nil }
