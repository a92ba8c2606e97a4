// Package policy holds what every policy of the chain (auth, rate limiting,
// validation, stats) needs to know about a call, and nothing else: the
// effective policy of the method, which door the call came through, who the
// client is, and, once auth has run, who the caller is.
//
// The gateway puts a *Call into the context of every call before the chain
// runs; policies read it with FromContext. Keeping this in a leaf package
// lets each policy live in its own package without importing the gateway.
package policy
