// Package proxy forwards each routed method to its backend: the method
// proxies behind the interceptor chain (proxy.go), the codec that moves
// messages as the bytes received (codec.go), the mapping of what goes
// wrong on the way to a backend into the gateway's errors (errors.go), and
// every rule about which headers and metadata cross the gateway
// (headers.go).
//
// A method proxy is the handler the chain is bound around. It knows nothing
// of policies: the gateway gives it the bound chain (Method.Bind) and a
// meter for backend calls (package stats).
package proxy
