// Package testutil holds the few helpers that tests across the module
// share: a log sink that a server's goroutines and the test may use at the
// same time, and a bounded wait for a state that another goroutine or
// process brings about.
//
// A test that waits should wait for the state it needs, never for a fixed
// time: Eventually returns as soon as the state holds and fails, naming
// what it waited for, when it never does.
package testutil
