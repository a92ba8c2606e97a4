// Package edge is what every client connection and stream meets before
// routing: caps on connections, streams, headers and time, applied the
// same way on the REST and gRPC listeners, so that no client can hold the
// gateway's memory or goroutines with requests it never finishes.
//
// The gRPC side is grpc-go's own machinery where it has one:
// MaxConcurrentStreams (which also turns on grpc-go's handler quota),
// keepalive enforcement and connection ages, a header list size, and an
// InTapHandle (Tap) that runs when a stream's headers arrive, before any
// goroutine serves it. The tap caps the deadline a caller asks for at the
// route's maximum and refuses too many headers. A stream whose first
// request message has not arrived within RequestReadTimeout is ended by
// its proxy with DEADLINE_EXCEEDED (reason REQUEST_TIMEOUT) and counted
// here. Where grpc-go has nothing, the edge reads frame headers itself: a
// connection that resets streams faster than max_resets_per_second gets
// GOAWAY (rapidreset.go). The REST side is net/http's server timeouts and
// header size limit, a cap on open connections per listener
// (golang.org/x/net/netutil), and the HTTP/1.1 framing check net/http
// lacks: a request with both Content-Length and Transfer-Encoding is
// refused and its connection closed (http1.go).
//
// Every refusal is counted in portico_refused_total{reason}.
package edge
