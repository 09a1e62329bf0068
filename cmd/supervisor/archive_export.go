//go:build preforkarchive

package main

import "C"

// PreforkMain is the supervisor's main, called by the C main of the
// archive build (archive_main.go) on the process's main thread.
//
//export PreforkMain
func PreforkMain() { main() }
