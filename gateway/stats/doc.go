// Package stats is the gateway's stats policy: Prometheus metrics, a
// structured access log and OpenTelemetry tracing for every call, REST and
// gRPC alike, plus the view of the backends behind them.
//
// It sits in the chain right after the call facts (policy.Call), before
// auth, so it sees every call the chain gets, rejections included; a
// rejection made with policy.Reject is counted by policy and reason. The
// backend side comes from two hooks outside the chain: Observer, which the
// Consul resolver tells about instances and watch errors, and
// StartBackendCall, which the proxy calls around each backend call to
// measure it per instance and carry the trace to the backend.
//
// Label values come only from the route table (New's routes), the gRPC code
// list, Consul service IDs of listed instances and the gateway's own policy
// names and reasons, never from paths or client input, so the number of
// series stays bounded. Every route's series are resolved in New; a call
// pays a map lookup, a few atomic adds and, with tracing on, two spans.
//
// The live numbers of the admin page (Traffic) are differences between
// snapshots of those same series, taken once a second by the goroutine that
// Start starts and Close stops.
package stats
