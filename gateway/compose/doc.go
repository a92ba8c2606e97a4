// Package compose serves composite methods: proto methods whose
// implementation is a plan declared with option
// (portico.options.v1.compose), run by the gateway itself instead of a
// backend.
//
// A plan's steps call other routed methods; CEL expressions build each
// step's request from the composite's request and other steps' answers,
// and the response from all of them. New compiles and type-checks every
// plan against the descriptors when the gateway starts, so a plan that
// names an unknown method, a missing step, or has a type error or a cycle
// stops the gateway with a message naming the file, the method and the
// step.
//
// A step is a call like any other: it goes through the REST door's
// in-process connection (rest.Door.Conn) into its method's bound chain
// with the caller's metadata, so the caller's identity, access and scope
// checks, rate limits and validation apply to each step as if the caller
// had made it, and stats counts, logs and traces it under its method. A
// step runs as soon as the steps it reads have answered; for_each steps
// fan out with bounded concurrency over a bounded list (max_concurrency,
// max_items); every step has the composite's remaining deadline, cut to
// its own method's max_timeout. A required step's failure fails the call with that
// step's status and an ErrorInfo naming it; an optional step's failure
// leaves its answer empty and is reported in x-portico-partial-failure.
// docs/aggregation.md is the guide.
package compose
