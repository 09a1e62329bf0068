//go:build cgo

package execsignal

/*
#include <signal.h>
#include <stdlib.h>
#include <time.h>

// Run by the dynamic loader before Go's runtime starts, which unblocks
// SIGTERM, SIGINT and SIGHUP on its first thread before any Go code runs:
// one pending then (sent while the old image was in execve) is delivered
// to SIG_IGN and lost. Here the mask is still the one Hold set, so they
// can be taken.
static int prefork_taken[16];
static int prefork_ntaken;

__attribute__((constructor, used)) static void prefork_take_pending(void) {
	if (getenv("PREFORK_HELD_SIGNALS") == NULL) {
		return;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	struct timespec zero = {0, 0};
	while (prefork_ntaken < 16) {
		int sig = sigtimedwait(&set, NULL, &zero);
		if (sig <= 0) {
			return; // EAGAIN: none left
		}
		prefork_taken[prefork_ntaken++] = sig;
	}
}

static int prefork_taken_n(void) { return prefork_ntaken; }
static int prefork_taken_at(int i) { return prefork_taken[i]; }
*/
import "C"

import "syscall"

// takenBeforeRuntime returns the SIGTERM, SIGINT and SIGHUP that were
// pending when this image started, taken before Go's runtime could lose
// them (a binary with cgo only: the C constructor above runs first).
func takenBeforeRuntime() []syscall.Signal {
	var out []syscall.Signal
	for i := range int(C.prefork_taken_n()) {
		out = append(out, syscall.Signal(C.prefork_taken_at(C.int(i))))
	}
	return out
}

// cgoTakesPending: this build takes them.
const cgoTakesPending = true
