// Package e2e holds end-to-end tests of the built binaries: a newcomer's
// path through `make run`, with real processes, signals and Consul.
package e2e
