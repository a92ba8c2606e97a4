// Package web is what the REST port offers browsers and front-end code
// besides REST/JSON: Server-Sent Events for server streams (sse.go), CORS
// (cors.go), gRPC-Web and the Connect protocol (rpc.go), and the OpenAPI 3
// document with a docs page (openapi.go).
//
// It wraps the REST door's handler. A preflight is answered before
// anything else, a gRPC-Web or Connect call is transcoded by vanguard into
// gRPC and handed to the gateway's own grpc.Server, so it meets the same
// chain as a native gRPC call, and everything else goes to the door.
package web
