// Package rest is the gateway's REST/JSON door: grpc-gateway's ServeMux
// with the generated transcoders of every routed service, calling the same
// interceptor chain as native gRPC clients do.
//
// A unary REST call is a function call into the method's bound chain
// (conn.go): no encoding, no HTTP/2 framing and no goroutine between the
// door and the chain. Streams go over an in-memory gRPC connection to the
// gateway's own server. Bodies are limited before anything reads them
// (body.go), and every error, routing failures included, is written by one
// error handler as google.rpc.Status JSON (errors.go).
package rest
