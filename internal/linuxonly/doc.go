// Package linuxonly stops a build for any other operating system with one
// clear error instead of pages of undefined identifiers.
//
// prefork is built on Linux-only system calls: SOCK_SEQPACKET socket pairs,
// accept4, SO_PEERCRED, PR_SET_CHILD_SUBREAPER, Pdeathsig and /proc. Every
// package that uses one of them imports this package for its side effect:
//
//	import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
//
// On Linux the package is empty. Elsewhere it imports a package that cannot
// exist, so the go command stops while loading packages, before it compiles
// anything, and GOOS=darwin go build ./... (or go vet, or go test) prints
// one line:
//
//	internal/linuxonly/other.go:12:8: package prefork_needs_Linux is not in std (...)
package linuxonly
