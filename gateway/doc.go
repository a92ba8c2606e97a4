// Package gateway is Portico's gateway: it serves every compiled proto service
// as REST/JSON (grpc-gateway) and as native gRPC, and forwards each call to the
// healthy backend instances that Consul knows of.
//
// # Call path
//
// Both front doors end in one grpc.Server. Native gRPC clients reach it over
// TCP. REST requests are transcoded by grpc-gateway and sent to the same
// server over an in-memory connection (bufconn), so the interceptor chain
// (auth, rate limiting, validation, stats) sees every call exactly once, as a
// gRPC call, whichever door it came through; server streams included. The
// handlers behind the chain are built at start from the proto descriptors and
// forward typed messages to the backend's grpc.ClientConn, whose resolver
// watches Consul (package discovery).
//
// The chain's order is fixed (chain.go): error source, call facts
// (policy.Call), stats, auth, rate limit, validation, then the proxy.
//
// The in-memory hop costs one extra protobuf encode/decode and HTTP/2 framing
// per REST call, in exchange for one chain, one set of semantics (metadata,
// deadlines, status codes, streams) and no transport-specific policy code.
//
// # Admin listener
//
// The admin listener serves /healthz, /readyz and /routes, and what the
// policies' setup adds: /metrics, the admin page and the portico.admin.v1
// API (packages gateway/stats and gateway/admin), over HTTP/1.1 and h2c.
//
// # Errors
//
// Errors made by the gateway (no healthy instance, deadline, bad JSON, no such
// route) carry a google.rpc.ErrorInfo in domain ErrorDomain and the trailer
// x-portico-error-source: gateway. Errors sent by a backend pass through
// unchanged, marked x-portico-error-source: backend. Over REST one error
// handler maps codes to HTTP statuses and writes google.rpc.Status as JSON.
package gateway
