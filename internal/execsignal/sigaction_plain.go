//go:build !(amd64 || arm64)

package execsignal

// sigaction is the kernel's struct sigaction (not libc's) on the
// 64-bit architectures without SA_RESTORER (riscv64, loong64).
type sigaction struct {
	handler uintptr
	flags   uint64
	mask    uint64
}
