// Package validate is the validation policy: it checks every request (and
// every message of a client stream) against the buf.validate rules declared
// in the protos, with protovalidate, before the call reaches a backend.
//
// A violation is INVALID_ARGUMENT (HTTP 400) with a google.rpc.BadRequest
// listing every field violation: the field path, the rule and a message. The
// validator is built once, with the message types of the routed methods
// compiled up front, and shared by all calls.
//
// The policy runs after auth in the gateway's chain, so an anonymous caller
// learns nothing about the shape of a protected request.
//
// Why not go-grpc-middleware's protovalidate interceptor: it answers with
// buf.validate.Violations rather than the google.rpc.BadRequest that REST
// and gRPC clients read, without the ErrorInfo that names the policy for
// stats, and with the CEL error's text when a rule cannot be evaluated.
package validate
