//go:build amd64 || arm64

package execsignal

// sigaction is the kernel's struct sigaction (not libc's) on the
// architectures that define SA_RESTORER.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}
