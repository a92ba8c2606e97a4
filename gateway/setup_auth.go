package gateway

import (
	"fmt"

	"github.com/portico-gw/portico/gateway/auth"
)

// AuthConfig configures authentication: JWT issuers and API keys. See
// package auth.
type AuthConfig = auth.Config

// setupAuth builds the auth policy. It is always on: a method that is not
// public needs credentials even when none are configured (every such call
// is then refused, which is the safe reading of an empty config).
func (g *Gateway) setupAuth() error {
	p, err := auth.New(g.cfg.Auth, auth.WithConsul(g.consul), auth.WithLogger(g.opts.logger))
	if err != nil {
		return fmt.Errorf("%s: %w", g.cfg.where(), err)
	}
	g.policies.auth = p
	return nil
}
