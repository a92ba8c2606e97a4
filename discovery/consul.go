package discovery

import (
	"fmt"

	"github.com/hashicorp/consul/api"
)

// ConsulConfig says how to reach Consul. Empty fields keep Consul's own
// conventions: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and friends, then the
// agent on 127.0.0.1:8500.
type ConsulConfig struct {
	Address    string `yaml:"address"`
	Token      string `yaml:"token"`
	Datacenter string `yaml:"datacenter"`
}

// NewConsulClient returns a Consul API client. It does no I/O.
func NewConsulClient(cfg ConsulConfig) (*api.Client, error) {
	c := api.DefaultConfig() // reads the CONSUL_HTTP_* environment
	if cfg.Address != "" {
		c.Address = cfg.Address
	}
	if cfg.Token != "" {
		c.Token = cfg.Token
	}
	if cfg.Datacenter != "" {
		c.Datacenter = cfg.Datacenter
	}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul client for %q: %w", c.Address, err)
	}
	return client, nil
}
