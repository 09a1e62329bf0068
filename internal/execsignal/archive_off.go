//go:build !(preforkarchive && cgo)

package execsignal

import (
	"os"
	"syscall"
)

// archive: this binary is a Go executable (see archive_cgo.go).
const archive = false

func record([]syscall.Signal) error { return nil }

func replay(chan os.Signal) {}
