//go:build preforkarchive && cgo

package execsignal

/*
#include <signal.h>
#include <string.h>

// A handler that only records, installed for Signals before os/signal
// asks for them: os/signal unblocks a signal on its own thread before it
// installs Go's handler (runtime.sigenable), and in a c-archive the
// runtime installs none before that, so one pending then is delivered to
// whatever the disposition is (SIG_DFL: fatal or a stop; SIG_IGN: lost).
// Go saves this one as the handler to forward to and never calls it for
// a signal it handles; it is the disposition again after signal.Stop.
#define PREFORK_RING 256
static volatile int prefork_ring[PREFORK_RING];
static unsigned prefork_written;

static void prefork_record(int sig) {
	unsigned i = __atomic_fetch_add(&prefork_written, 1, __ATOMIC_SEQ_CST);
	prefork_ring[i % PREFORK_RING] = sig;
}

static int prefork_install_recorder(int sig) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = prefork_record;
	sigfillset(&sa.sa_mask);
	// On the alternate stack: Go's threads run goroutines on small stacks.
	sa.sa_flags = SA_ONSTACK | SA_RESTART;
	return sigaction(sig, &sa, NULL);
}

static unsigned prefork_recorded(void) { return __atomic_load_n(&prefork_written, __ATOMIC_SEQ_CST); }
static int prefork_recorded_at(unsigned i) { return prefork_ring[i % PREFORK_RING]; }
*/
import "C"

import (
	"os"
	"syscall"
)

// archive: the supervisor's C main links this binary (-buildmode=c-archive,
// see cmd/supervisor/archive_main.go), whose Go runtime leaves Signals
// blocked on every thread it starts and installs no handler for them
// until os/signal asks.
const archive = true

// record makes the C recorder the disposition of sigs.
func record(sigs []syscall.Signal) error {
	for _, sig := range sigs {
		if C.prefork_install_recorder(C.int(sig)) != 0 {
			return &Error{Op: "record " + sig.String(), Err: syscall.EINVAL}
		}
	}
	return nil
}

// replayed is how many of the recorder's entries replay has sent on.
var replayed C.uint

// replay sends to ch what the recorder caught since the last call, in
// order. Called after signal.Notify returned: the recorder then no longer
// runs, Go's handler does.
func replay(ch chan os.Signal) {
	for n := C.prefork_recorded(); replayed != n; replayed++ {
		send(ch, syscall.Signal(C.prefork_recorded_at(replayed)))
	}
}
