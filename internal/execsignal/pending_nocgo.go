//go:build !cgo

package execsignal

import "syscall"

// takenBeforeRuntime returns nil: without cgo no code of this binary runs
// before Go's runtime (see pending_cgo.go).
func takenBeforeRuntime() []syscall.Signal { return nil }

// cgoTakesPending: this build does not take them.
const cgoTakesPending = false
