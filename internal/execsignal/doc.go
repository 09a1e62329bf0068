// Package execsignal carries the supervisor's signals across the execve of
// an in-place upgrade, so that none is fatal to the new image and as few
// as the kernel and Go's runtime allow are lost.
//
// The old image calls Hold on the thread that is about to execve: it
// blocks Signals on that thread, and sets SIGHUP, SIGINT and SIGTERM to
// SIG_IGN. Both survive execve (execve(2): the mask is kept, ignored
// signals stay ignored), and a blocked signal is never discarded as
// ignored: the kernel keeps it pending until it is unblocked (signal(7)).
//
// The new image's Go runtime then, before any Go code runs:
//   - unblocks SIGHUP, SIGINT, SIGTERM (and SIGQUIT) on every thread it
//     starts (runtime.minitSignalMask: signals that kill a Go program
//     cannot be blocked). One of those pending at that moment is
//     delivered at once: with SIG_DFL it would kill the process, so it is
//     ignored instead, and lost;
//   - keeps SIGHUP and SIGINT ignored until os/signal asks for them
//     (runtime.sigInstallGoHandler respects an inherited SIG_IGN for
//     those two): lost, never fatal, until this package's init;
//   - installs its own handler for SIGTERM, which kills the program unless
//     os/signal asked for it: this package's init asks as early as a
//     package can, before the supervisor's dependencies (Prometheus, zap)
//     run their own init. From the execve to that init SIGTERM is lost,
//     then fatal (Go's handler yields a few times before it kills, so
//     the process may run on for milliseconds): a window of 3–15 ms on
//     a 2-core machine at load 17, mostly the execve and the runtime's
//     start, which no Go program can close;
//   - keeps SIGUSR2, SIGTTIN and SIGTTOU blocked on every thread, because
//     every thread's mask starts from the mask the image inherited
//     (runtime.initSigmask). init takes the ones pending with
//     sigtimedwait(2), then ignores SIGTTIN and SIGTTOU until os/signal's
//     handler is in, because os/signal unblocks a signal before it
//     installs the handler (runtime.sigenable) and their default stops
//     the process. These three are neither lost nor fatal.
//
// In a binary built with cgo, a C constructor (pending_cgo.go), which the
// dynamic loader runs before Go's runtime starts, takes the SIGTERM,
// SIGINT and SIGHUP pending at that moment, with the mask Hold set still
// in place: those sent while the old image was in execve are then caught,
// not lost. Without cgo no code of the binary runs that early.
//
// The new image is told by the variable Env (HeldEnv), which also dates
// Hold and the execve; Early returns what its init caught, in order, and
// keeps catching; Window says when the signals were held and when this
// init caught them again: the window in which SIGTERM, SIGINT and SIGHUP
// can be lost, which the supervisor logs and make chaos judges by. The
// package imports nothing its init would wait for beyond os/signal's own
// dependencies (no fmt, no strings), so that it runs right after
// os/signal.
//
//	// the old image, on the thread that execs:
//	release, err := execsignal.Hold()
//	err = unix.Exec(path, argv, append(env, execsignal.HeldEnv()))
//	release() // execve failed
//
//	// the new image:
//	if sigs, ok := execsignal.Early(); ok { ... }
//
// Linux only.
package execsignal

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
