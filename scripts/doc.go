// Package scripts holds the repository's shell scripts and their tests;
// it has no Go code of its own.
//
// deps makes sure what the tests (make test-deps) or the benchmarks
// (make bench-tools) run besides Go is installed: as root on Debian it
// installs what is missing with apt-get and runs npm ci beside every
// package-lock.json whose node_modules is missing or older; otherwise it
// stops with one line naming what is missing and the command for it.
//
//	scripts/deps test
//	scripts/deps bench
//
// The tests run it on a fake machine: a PATH of fake tools and a fake
// apt-get, id and npm, so they neither need nor touch the real packages.
package scripts
