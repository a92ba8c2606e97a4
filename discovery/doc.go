// Package discovery connects grpc-go to Consul.
//
// It has two halves. The resolver half is a grpc-go resolver for targets of
// the form consul:///<service>[?tag=<tag>&dc=<datacenter>]: one watcher per
// target runs blocking queries against Consul's health endpoint, pushes only
// passing instances to the ClientConn, and keeps the last known instances when
// Consul itself cannot be reached, so a blip in the registry never drops
// traffic. The registration half is what a service uses to put itself into
// Consul with a gRPC (or, for the gateway, HTTP) health check, to keep
// itself there while it runs (an agent that loses the entry gets it again
// within seconds), and to take itself out again on shutdown.
//
// WatchHealthy and WatchPrefix run the resolver's blocking-query loop for
// other watchers: the gateway's rate limiter counts its healthy replicas and
// follows limit changes in Consul KV with them.
//
// The gateway and the example services use the same resolver, so every
// backend call in Portico is found the same way.
package discovery
