// Package route is the gateway's route table: every method of every
// compiled proto service, with the backend that serves it, its deadline and
// its effective policy. The policy is merged from, weakest first, the
// gateway's defaults, the service's proto options, the service's config,
// the method's proto options and the method's config (merge.go).
//
// Building the table is pure logic: no sockets, no Consul. Contradictions
// (a public method that requires scopes, config for a service or method
// that does not exist) stop the gateway at start with a message that names
// the culprit and the file to fix.
package route
