// Package gateway is Portico's composition root: it reads the config and
// wires the packages that serve every compiled proto service as REST/JSON
// and as native gRPC in front of the backends Consul knows of.
//
//	route     the route table: proto options and config merged per method
//	policies  auth, rate limiting, validation, stats, each owning its Config
//	chain     error source, recovery, call facts, then the policies in order
//	proxy     one method proxy per route, bytes through, behind the chain
//	rest      the REST door: grpc-gateway calling the same bound chains
//
// New builds them in that order (gateway.go; the policy list is in
// policies.go) and does no I/O. What a policy offers besides interceptors
// (background work, admin endpoints, readiness, backend measurements) is
// found by small interfaces (lifecycle.go), never by its type. Start and
// Shutdown own the listeners, readiness and the gateway's own Consul entry
// (register.go).
//
// The admin listener serves /healthz, /readyz, /routes and what the parts
// offer: /metrics, the admin page and the portico.admin.v1 API, over
// HTTP/1.1 and h2c.
package gateway
