// Package gateway is Portico's gateway: it serves every compiled proto service
// as REST/JSON (grpc-gateway) and as native gRPC, and forwards each call to the
// healthy backend instances that Consul knows of.
//
// # Call path
//
// Both front doors run one interceptor chain (auth, rate limiting,
// validation, stats), bound once per method around its proxy handler, so
// every call meets it exactly once whichever door it came through. Native
// gRPC clients reach it through the grpc.Server. grpc-gateway's transcoders
// call restConn (rest.go): a unary REST call is a function call into the
// same bound chain, with the request headers as incoming metadata and a
// grpc.ServerTransportStream that collects response metadata; REST streams
// go over an in-memory connection (bufconn) to the same server. The
// handlers behind the chain are built at start from the proto descriptors
// and forward to the backend's grpc.ClientConn, whose resolver watches
// Consul (package discovery).
//
// The chain's order is fixed (chain.go): error source, call facts
// (policy.Call), stats, auth, rate limit, validation, then the proxy.
//
// Messages travel as bytes (codec.go): the server and the backend
// connections share a codec under which the proxy holds a message as
// grpc-go's pooled receive buffers and sends those same buffers on. A
// request is decoded only when a policy reads it (validation, after auth and
// rate limiting), and a response only by the REST door, to write JSON.
// Interceptors of the embedder's get the generated Go types instead
// (messageMode in proxy.go).
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
