package gateway

import (
	"fmt"

	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dialBackends makes one connection per backend target, resolved by the
// Consul resolver and balanced round robin over healthy instances.
func (g *Gateway) dialBackends() error {
	ropts := append([]discovery.Option{discovery.WithLogger(g.opts.logger)}, g.opts.resolverOpts...)
	for _, o := range all[interface{ Observer() discovery.Observer }](g.parts) {
		ropts = append(ropts, discovery.WithObserver(o.Observer()))
	}
	builder := discovery.NewBuilder(g.consul, ropts...)
	for _, r := range g.routes.All() {
		if _, ok := g.backends[r.Target()]; ok {
			continue
		}
		conn, err := grpc.NewClient(r.Target(),
			grpc.WithResolvers(builder),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
			grpc.WithInitialWindowSize(windowSize), grpc.WithInitialConnWindowSize(windowSize),
		)
		if err != nil {
			g.closeConns()
			return fmt.Errorf("gateway: backend %s: %w", r.Target(), err)
		}
		g.backends[r.Target()] = conn
	}
	return nil
}
