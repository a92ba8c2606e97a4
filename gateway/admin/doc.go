// Package admin serves the gateway's operator view on its admin listener:
// the portico.admin.v1 API over gRPC and REST, and a single page at / that
// shows the route table, each backend's healthy instances and live request
// rate, error rate and latency per route.
//
// The API is defined in proto/portico/admin/v1 like every other API;
// protoc-gen-portico keeps it out of gen/registry, so it is served here and
// never proxied. Its REST form goes through an in-process grpc-gateway mux
// (no network hop); its gRPC form shares the admin port over h2c. The page
// is embedded static HTML, CSS and JavaScript with no external assets, so it
// works offline; it polls the REST API every two seconds.
//
// The live numbers come from a Live source, which *stats.Stats is; the
// route table comes from the gateway. Nothing here is authenticated: the
// admin listener belongs on loopback or an operator network.
package admin
