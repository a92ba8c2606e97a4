// Package micro holds the hot path's testing.B benchmarks, run by
// `make bench` and compared across changes with benchstat:
//
//   - BenchmarkPolicy: each policy of the chain alone, and all four in
//     order, around a handler that does nothing, on the example messages;
//   - BenchmarkJSON: the REST door's JSON encoding and decoding of the
//     example messages, with the gateway's marshaler options;
//   - BenchmarkCall: one request end to end on loopback, through Portico
//     (chain on and off) and, for comparison, directly (gRPC), through a
//     bare grpc-gateway (REST) or through vanguard alone (Connect and
//     gRPC-Web unary calls). It needs a consul binary, as the
//     integration tests do, and is skipped without one.
//
// B/op and allocs/op of BenchmarkCall count the whole process: client,
// gateway and backend. The difference between paths is the gateway's
// share; the side-by-side harness (cmd/porticobench) measures the
// gateway's own allocations in a process of its own.
package micro
