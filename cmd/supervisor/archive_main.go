//go:build preforkarchive

package main

/*
#include <pthread.h>
#include <signal.h>
#include <string.h>

extern void PreforkMain(void);

// Before Go's runtime starts (its own constructor, which has no priority,
// runs after this one, and starts the runtime on a thread that inherits
// this mask): the supervisor's signals blocked on every thread the
// runtime will start, until os/signal asks for them (see
// internal/execsignal). Not for the commands that are not a supervisor:
// the exec shim's mask is its worker's, and probe and ctl must die of
// SIGTERM as any program does. The names are main's (main.go).
__attribute__((constructor(101))) static void prefork_block_signals(int argc, char **argv) {
	if (argc > 1 && (strcmp(argv[1], "exec-shim") == 0 || strcmp(argv[1], "probe") == 0 || strcmp(argv[1], "ctl") == 0)) {
		return;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTTIN);
	sigaddset(&set, SIGTTOU);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

// The process's main thread calls the supervisor's main: after an
// upgrade it is the thread that called execve, the parent of the workers
// it kept, whose Pdeathsig fires when it exits. Go keeps it for the call.
int main(int argc, char **argv) {
	(void)argc;
	(void)argv;
	PreforkMain();
	return 0;
}
*/
import "C"
