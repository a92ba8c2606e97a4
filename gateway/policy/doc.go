// Package policy holds what every policy of the chain (auth, rate limiting,
// validation, stats) needs to know about a call, and nothing else: the
// effective policy of the method, which door the call came through, who the
// client is, and, once auth has run, who the caller is.
//
// The chain puts a *Call into the context of every routed call before the
// policies run; policies read it with FromContext, and refuse a call
// without one (NoCall). Keeping this in a leaf package lets each policy
// live in its own package without importing the gateway.
//
// It also holds the gateway's error model (errors.go: the ErrorInfo
// reasons, the error source, the one mapping of gRPC codes to HTTP
// statuses) and Env, what the gateway hands each policy's constructor.
package policy
