//go:build !linux

package linuxonly

// prefork runs only on Linux (see doc.go). Importing a package that cannot
// exist makes the go command stop while loading, with this one line and no
// compiler output for any other package:
//
//	internal/linuxonly/other.go:12:8: package prefork_needs_Linux is not in std (...)
//
// Build with GOOS=linux, or inside a Linux container.
import _ "prefork_needs_Linux"
