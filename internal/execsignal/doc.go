// Package execsignal carries the supervisor's signals across the execve of
// an in-place upgrade, so that none is fatal to the new image and none is
// lost: in the archive build not one, in a Go executable as few as its
// runtime allows.
//
// # The archive build
//
// The supervisor as scripts/build-supervisor builds it is Go code linked
// as a C archive (-buildmode=c-archive, build tag preforkarchive) under
// the C main of cmd/supervisor/archive_main.go. Linked into a C program,
// Go's runtime keeps the signal mask each thread inherits
// (runtime.blockableSig) and installs no handler for SIGTERM, SIGINT or
// SIGHUP until os/signal asks (runtime.sigInstallGoHandler). Then:
//   - the C main's constructor blocks Signals before the runtime starts
//     (not for ctl, probe and the exec shim): every thread the runtime
//     starts keeps them blocked, and one sent meanwhile stays pending;
//   - this package's init makes a C handler that only records the
//     disposition of Signals (archive_cgo.go), then asks os/signal for
//     them on Early's channel, then sends on it what the recorder caught:
//     os/signal unblocks a signal on its own thread before it installs
//     Go's handler (runtime.sigenable), and one pending then is delivered
//     to the disposition there was;
//   - Unblock unblocks them on the thread that forks the workers, whose
//     mask they inherit;
//   - Hold, on the thread that is about to execve, blocks them there and
//     stops os/signal's delivery (signal.Stop), which blocks them on
//     os/signal's thread: every thread then blocks them, and the kernel
//     keeps each one pending, across execve (the mask is kept, signal(7)),
//     until the new image's init unblocks them as above. The ones Go had
//     received are on Early's channel, for the state. release (execve
//     failed) asks os/signal for them again.
//
// The image an upgrade starts is such a binary when its -check-upgrade
// said so (HoldsAtStart). When it may be a Go executable, Hold also sets
// SIGHUP, SIGINT and SIGTERM to SIG_IGN, which survives execve, so that
// its runtime cannot die of them; setting SIG_IGN discards a pending
// signal, so Hold takes those first, onto Early's channel.
//
// # A Go executable
//
// Without a C compiler or cgo the supervisor is a Go executable, and the
// new image's runtime, before any Go code runs:
//   - unblocks SIGHUP, SIGINT, SIGTERM (and SIGQUIT) on every thread it
//     starts (runtime.minitSignalMask). One of those pending at that
//     moment is delivered at once: with SIG_DFL it would kill the
//     process, so Hold ignores them, and it is lost;
//   - keeps SIGHUP and SIGINT ignored until os/signal asks for them
//     (runtime.sigInstallGoHandler respects an inherited SIG_IGN for
//     those two): lost, never fatal, until this package's init;
//   - installs its own handler for SIGTERM, which kills the program unless
//     os/signal asked for it: this package's init asks as early as a
//     package can, before the supervisor's dependencies (Prometheus, zap)
//     run their own init. From the execve to that init SIGTERM is lost,
//     then fatal: a window of a few milliseconds, mostly the execve and
//     the runtime's start, which no Go executable can close;
//   - keeps SIGUSR2, SIGTTIN and SIGTTOU blocked on every thread, because
//     every thread's mask starts from the mask the image inherited
//     (runtime.initSigmask). init takes the ones pending with
//     sigtimedwait(2), then ignores SIGTTIN and SIGTTOU until os/signal's
//     handler is in. These three are neither lost nor fatal.
//
// In the old image, Hold blocks Signals on the calling thread only: until
// execve has ended the others, one of them may take a signal into Go's
// queue, lost with the image. With cgo, a C constructor (pending_cgo.go),
// which the dynamic loader runs before Go's runtime starts, takes the
// SIGTERM, SIGINT and SIGHUP pending at that moment.
//
// # Use
//
// The new image is told by the variable Env (HeldEnv), which also dates
// Hold and the execve; Early returns what init caught, in order, and keeps
// catching; Window says when the signals were held and when this init
// caught them again, which the supervisor logs. The package imports
// nothing its init would wait for beyond os/signal's own dependencies (no
// fmt, no strings), so that it runs right after os/signal.
//
//	// the old image, on the thread that execs:
//	release, err := execsignal.Hold(!newImageHolds)
//	err = unix.Exec(path, argv, append(env, execsignal.HeldEnv()))
//	release() // execve failed
//
//	// the new image (or any image of the archive build):
//	if sigs, ok := execsignal.Early(); ok { ... }
//
// Linux only.
package execsignal

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
