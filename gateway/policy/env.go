package policy

import (
	"log/slog"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/prometheus/client_golang/prometheus"
)

// Env is what the gateway hands every policy's constructor, besides the
// policy's own Config and the route table: each takes what it needs.
type Env struct {
	// Consul is the gateway's Consul client.
	Consul *api.Client
	// Logger is the gateway's logger.
	Logger *slog.Logger
	// Registry is the gateway's own Prometheus registry.
	Registry prometheus.Registerer
	// Watch tunes the Consul watches a policy runs (backoff, wait time).
	Watch []discovery.Option
	// Self is the gateway's own Consul registration; zero when off.
	Self Self
}

// Self names the gateway's own entry in Consul, so that replicas can count
// each other.
type Self struct {
	Service, ID string
}
