// Package e2e holds prefork's end-to-end tests: they build the real
// supervisor and worker binaries, run them on 127.0.0.1 with free ports,
// send real HTTP and real signals, and check that nothing is left behind.
//
// The test binary doubles as a worker program: started with PREFORK_E2E_ROLE
// set, TestMain runs that role (a worker that crashes after it is ready, one
// that hangs, ...) instead of the tests.
package e2e
