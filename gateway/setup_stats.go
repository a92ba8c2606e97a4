package gateway

// StatsConfig configures the stats policy. (Filled in by its issue.)
type StatsConfig struct{}

// setupStats builds the stats policy from g.cfg. Off until its issue lands.
func (g *Gateway) setupStats() error { return nil }
