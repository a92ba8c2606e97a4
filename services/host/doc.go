// Package host runs one instance of an example service: the part every
// service binary shares, so that cmd/catalog and cmd/orders are a few lines
// of flags each.
//
// A Host listens, serves the service on a grpc.Server together with
// grpc.health.v1 and server reflection, stamps every response with
// x-instance-id naming the instance (a header on an answer, a trailer on an
// error, so that errors stay retryable), and registers the instance in
// Consul with a gRPC health check, which it keeps there while it runs (an
// agent restarted with empty state gets the entry back within seconds). The
// same instance id is the Consul service ID, so a test or an operator can
// tell from any response which registered instance served it.
//
// With Config.TLS the Host serves TLS, and with a client CA it admits only
// clients whose certificate that CA signed (the gateway), except to
// grpc.health.v1, which Consul's check calls without a certificate. Its
// Consul entry says whether it serves TLS (meta portico-tls), which the
// gateway follows when it dials the instance.
//
// Start and Stop are what tests use in-process; Kill drops an instance
// without deregistering it, the way a crash would. Run is what a binary uses:
// it serves until its context ends, then shuts down gracefully.
package host
