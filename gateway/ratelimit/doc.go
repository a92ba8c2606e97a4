// Package ratelimit is the gateway's rate-limit policy: a token bucket per
// method and caller, on the same interceptor chain as auth and validation.
//
// Limits come from the proto options of each method or service, then the
// gateway config, then Consul KV (WithSettings), and reach the limiter
// through the policy.Call that the gateway puts into every call's context.
// The caller is the consumer that auth identified, or else the client
// address (after trusted proxies). A unary call is counted when it arrives,
// a stream when it is opened.
//
// Each bucket is one atomic word (GCRA): a decision on a known caller finds
// its bucket without a lock and allocates nothing, and over any
// window T one caller gets at most burst + rate*T calls however many
// goroutines race. Idle buckets are swept; the number of buckets is capped,
// and callers beyond the cap share an overflow bucket per method (see
// Limiter).
//
// In cluster mode (WithCluster) every gateway replica registers in Consul,
// counts the healthy replicas, and enforces its share of each limit: no
// shared store, no extra hop, at the price of exactness when a load balancer
// spreads one caller unevenly. docs/rate-limiting.md compares the two.
//
// In mode redis (NewRedis) the replicas share one bucket per method and
// caller in Redis: a caller gets its whole limit however its calls spread
// over the replicas, and a quota over a long window (10000 per 24h) holds
// across replicas and restarts. Each decision is one atomic round trip:
// go-redis runs redis_rate's GCRA script (burst, remaining count,
// retry-after and reset, on Redis's clock, so replicas' clocks do not
// matter). redis_rate puts "rate:" before every key; a thin adapter
// (unprefixed) takes it off, so keys begin with key_prefix exactly, as
// Redis ACL key patterns need. When Redis errs or does not answer within
// the timeout, the failure mode decides (this replica's share, as in
// cluster mode; allow; or deny) and no call waits on Redis again until a
// background PING, with capped and jittered backoff, hears it answer.
//
// Admitted REST, gRPC-Web and Connect calls carry ratelimit-* response
// metadata, which the REST door sends as RateLimit-Limit,
// RateLimit-Remaining, RateLimit-Reset and RateLimit-Policy headers (native
// gRPC calls only when WithAdmittedHeaders asks); rejected calls fail with
// RESOURCE_EXHAUSTED (HTTP 429), a google.rpc.RetryInfo and retry-after.
//
// Why not go-grpc-middleware's ratelimit interceptor: it replaces whatever
// its Limiter answers with a RESOURCE_EXHAUSTED of its own message, so the
// RetryInfo, the ErrorInfo and the RateLimit numbers of a rejection would
// be lost.
package ratelimit
