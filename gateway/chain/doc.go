// Package chain is the interceptor chain that every routed call meets
// exactly once, whichever door it came through:
//
//	error source -> recovery -> call facts -> policies... -> [decode] -> embedder's -> proxy
//
// The error source step marks every failed call with who made its error
// and gives the gateway's errors an ErrorInfo. Recovery (go-grpc-middleware)
// turns a panic anywhere below into INTERNAL. Call facts put a
// *policy.Call into the context. The policies come in the order the
// gateway lists them; the chain knows them only as Policy values, and asks
// for what it needs through small interfaces (RequestReader, PanicCounter,
// Refusals). The decode step (package proxy) sits before the first policy
// that reads requests.
//
// Unary chains are bound once per method (Chain.Bind); streams go through
// the gRPC server's interceptors, where go-grpc-middleware's selector
// applies the routed part to routed methods only. The gateway's own
// services (health, reflection) get error marking and recovery, and an
// unknown method gets UNIMPLEMENTED from Unknown, counted as a refusal.
package chain
