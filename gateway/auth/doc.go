// Package auth is the authentication and authorization policy.
//
// A caller proves who it is with a JWT bearer token (Authorization: Bearer
// over REST, authorization metadata over gRPC) or an API key (x-api-key).
// Tokens are verified against configured issuers: RS256, ES256 and EdDSA keys
// from a JWKS URL (cached, refreshed in the background, refetched on an
// unknown kid at a capped rate) or a local JWKS file, and HS256 only for an
// issuer configured with a shared secret. Issuer, audience, expiry and
// not-before are checked with a small leeway, and an issuer may cap a
// token's lifetime; alg "none" and algorithm confusion are rejected because
// each issuer accepts only its own algorithms and key types, and a "crit"
// header parameter is rejected because the policy implements no JWS
// extension. API keys are stored only as SHA-256 hashes, in the config
// file and optionally under a Consul KV prefix that is watched for changes.
//
// A client certificate can be a credential too (clientcert.go): on a
// listener that verifies client certificates, a call that sends no token
// or key is the consumer of the client_certificates entry that names one
// of its certificate's URI or DNS SANs. Only a chain the handshake verified
// counts (policy.Call.ClientCert, set by the chain's call facts from
// either door); a token or key, when sent, wins over the certificate, and
// a certificate that no entry names leaves the call anonymous.
// CredentialKinds says which kinds are configured, for the route table and
// the admin page.
//
// The method's policy (policy.Call.Policy) says whether credentials are
// needed and which scopes. Missing or bad credentials are UNAUTHENTICATED
// (401) with a WWW-Authenticate challenge; valid credentials without a
// required scope are PERMISSION_DENIED (403) naming the scope. Messages say
// what to fix (expired, wrong audience, unknown key) and never echo a token
// or key. The verified identity is stored in policy.Call.Identity; the
// gateway forwards it to the backend as x-portico-consumer,
// x-portico-subject and x-portico-scopes, and drops any such header a client
// sent.
//
// Each client address has a budget of failed authentications
// (failures.go). Once it is spent, credentials from that address are refused
// with RESOURCE_EXHAUSTED and Retry-After before they are checked, so a
// flood of bad credentials costs a map lookup per call, not a signature
// check; failures are logged at most once per address and period.
//
// The interceptors are go-grpc-middleware's auth interceptors around
// Authorize, which decides per route from the call's policy (the
// gateway's own services never reach it: the chain's selector keeps them
// out) and sets the WWW-Authenticate challenge with grpc.SetHeader.
package auth
