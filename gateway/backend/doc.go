// Package backend makes the gateway's connections to its backends and what
// keeps calls flowing when an instance misbehaves while Consul still lists
// it as passing: retries, outlier ejection, the circuit breaker and the
// choice of load balancing, configured per service (Config) and applied to
// both doors, since both reach the backend through the same proxy.
//
// As much as grpc-go has is used as it comes: its service-config retry
// policy and retry throttling, its client-side health checking and its
// round_robin, least_request and ring_hash balancers. Ours are the outlier
// filter (eject.go says why) and the concurrency limit, which grpc-go has
// no piece for.
package backend
