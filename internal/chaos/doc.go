// Package chaos is prefork's fault suite: tests that build the real
// supervisor and worker binaries, run them on 127.0.0.1 and break things
// on purpose — kill -9 loops under load, reload and scale storms, descriptor
// and connection floods, a hostile worker written in Python, control-socket
// abuse, a stopped worker, in-place upgrades under fire (signals at every
// millisecond of an upgrade, descriptors closed between the two images,
// broken releases of every kind, a check that leaves a process behind,
// silent clients before a sticky key or a PROXY header, an
// upgrade right after a scale-down, a Node message over the bound) — and
// check what an operator relies on: no hung request, no lost worker, no
// leaked descriptor, goroutine or child.
//
// `go test ./internal/chaos` (and so `make test`) runs a short version;
// PREFORK_CHAOS=long, which `make chaos` sets, runs the full counts. Every
// scenario logs its figures as one line:
//
//	FIGURE scenario=<name> mode=<mode> key=value ...
//
// from which the README's table is filled.
package chaos
