package execsignal

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Signals are the supervisor's: what it handles (stop, reload, scale,
// upgrade) and must neither die of nor lose during an upgrade.
var Signals = func() []os.Signal {
	var s []os.Signal
	for _, n := range sigNums {
		s = append(s, n)
	}
	return s
}()

// Error is what Hold returns when the kernel refused a step. The package
// does without fmt, so that its init, which must run as early as a
// package can, waits for as few others as possible.
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return "execsignal: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Env, set in the new image's environment, says that Hold blocked and
// ignored Signals before its execve.
const Env = "PREFORK_HELD_SIGNALS"

// early catches Signals in an image started with Env; nil otherwise.
var early chan os.Signal

// heldAt, execAt and caughtAt are the window Window reports.
var heldAt, execAt, caughtAt time.Time

func init() {
	v, ok := os.LookupEnv(Env)
	if ok {
		os.Unsetenv(Env)
		heldAt, execAt = parseWindow(v)
	}
	// In the archive build, the C main's constructor blocked Signals
	// before Go's runtime started, and every thread the runtime starts
	// keeps them blocked: nothing was lost or fatal so far, in the image
	// an upgrade started as in any other.
	if archive && blockedHere(sigNums[:]) {
		catchArchive()
		return
	}
	if ok {
		catchPlain()
	}
}

// parseWindow reads Env's value: when Hold ran and when execve did.
func parseWindow(v string) (held, exec time.Time) {
	h, e := v, ""
	for i := range len(v) {
		if v[i] == ',' {
			h, e = v[:i], v[i+1:]
			break
		}
	}
	return parseNanos(h), parseNanos(e)
}

// catchArchive catches Signals in the archive build, where they are still
// blocked on every thread: the recorder first, so that the one os/signal
// unblocks before it installs Go's handler is recorded, then os/signal,
// then what the recorder caught.
func catchArchive() {
	early = make(chan os.Signal, 32)
	for _, sig := range takenBeforeRuntime() {
		early <- sig
	}
	if err := record(sigNums[:]); err != nil {
		panic(err) // sigaction fails only for a bad signal number
	}
	signal.Notify(early, Signals...)
	replay(early)
	caughtAt = time.Now()
	holdsAtStart = true
}

// catchPlain catches Signals in a Go executable that Hold preceded.
func catchPlain() {
	// During init the main goroutine runs on the main thread, the one that
	// called execve, and its mask is still the one Hold set.
	early = make(chan os.Signal, 32)
	take := func(sigs []syscall.Signal) {
		for _, sig := range takePending(sigs) {
			early <- sig
		}
	}
	for _, sig := range takenBeforeRuntime() {
		early <- sig
	}
	take(sigNums[:])
	// First the signals Go's runtime has a handler for since it started:
	// this starts os/signal's thread, which takes milliseconds.
	signal.Notify(early, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	caughtAt = time.Now()
	// Then SIGTTIN and SIGTTOU, which os/signal unblocks on that thread
	// before it installs its handler: taken once more, and ignored for
	// the microseconds in between, so that one arriving then is lost
	// rather than stop the process.
	take(stopEarly[:])
	ignore(stopEarly[:])
	signal.Notify(early, syscall.SIGTTIN, syscall.SIGTTOU)
	// Children inherit the mask of the thread that forks them, and this
	// one forks the workers: they must not start with these blocked.
	// Every other thread keeps SIGUSR2, SIGTTIN and SIGTTOU blocked, which
	// is harmless: os/signal's own thread has them unblocked.
	Unblock()
}

// holdsAtStart: this process caught Signals without a window (the archive
// build, run as the supervisor).
var holdsAtStart bool

// HoldsAtStart reports whether this binary keeps Signals blocked from
// before its Go runtime starts until os/signal handles them (the archive
// build, run as the supervisor): an image of it started by execve after
// Hold loses none of them and dies of none, so Hold need not ignore any.
func HoldsAtStart() bool { return holdsAtStart }

// Unblock unblocks Signals on the calling thread, which must be locked to
// it: the thread that forks the workers, whose mask they inherit.
func Unblock() {
	set := sigset(sigNums[:])
	sigprocmask(sigUnblock, &set, nil)
}

// blockedHere reports whether every one of sigs is blocked on the calling
// thread.
func blockedHere(sigs []syscall.Signal) bool {
	var mask uint64
	if sigprocmask(sigBlock, nil, &mask) != nil {
		return false
	}
	set := sigset(sigs)
	return mask&set == set
}

// send sends sig on ch unless ch is full: standard signals do not queue
// in the kernel either.
func send(ch chan os.Signal, sig os.Signal) {
	select {
	case ch <- sig:
	default:
	}
}

// Window is when the old image held the signals (Hold) and when this
// image's init began catching SIGTERM, SIGINT and SIGHUP: the only time in
// an upgrade when one of those can be lost (or, for SIGTERM, from the new
// runtime's handler install on, be fatal). Both are zero unless Hold
// preceded the execve; held is zero from an older image.
func Window() (held, caught time.Time) { return heldAt, caughtAt }

// Exec is when the old image called execve, after Hold: zero from an
// older image. From Hold to Exec the old image's threads other than the
// one that execs take the signals; from Exec on, the kernel and this
// image's runtime do.
func Exec() time.Time { return execAt }

// HeldEnv is Env as the old image sets it after Hold, just before execve:
// the time of Hold and now, which the new image's Window and Exec report.
func HeldEnv() string {
	return Env + "=" + itoa(uint64(holding.UnixNano())) + "," + itoa(uint64(time.Now().UnixNano()))
}

// holding is when Hold was last called.
var holding time.Time

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// parseNanos is the time of v, nanoseconds since the epoch; zero if v is
// not that (an older image sets "1").
func parseNanos(v string) time.Time {
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' || n > (1<<63-1)/10 {
			return time.Time{}
		}
		n = n*10 + int64(c-'0')
	}
	if n < 1e18 { // before 2001: not a time
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Early returns the channel that has caught Signals since this image's
// init, the ones pending at that moment first; ok is false unless Hold
// preceded the execve that started the image or this is the archive build
// run as the supervisor (HoldsAtStart).
func Early() (sigs chan os.Signal, ok bool) { return early, early != nil }

// Hold blocks Signals on the calling thread, for an execve that follows;
// release undoes what it did if execve failed. The caller must be locked
// to its thread.
//
// With ignoreFatal, for a new image that may be a Go executable (not
// HoldsAtStart), it also ignores the ones Go's runtime unblocks there
// before any Go code runs (SIGTERM, SIGINT, SIGHUP), which would
// otherwise kill it. The others are not ignored: one that arrives while
// execve waits for this process's other threads to exit is then kept
// pending, while an ignored one is dropped as it is sent (signal(7)).
//
// In the archive build, every other thread has Signals blocked too but
// os/signal's, which Hold makes block them (signal.Stop on Early's
// channel): from then on the kernel keeps each one pending, across the
// execve, until the new image handles it. The ones Go had received by
// then are on Early's channel.
func Hold(ignoreFatal bool) (release func(), err error) {
	holding = time.Now()
	set := sigset(sigNums[:])
	var oldMask uint64
	if err := sigprocmask(sigBlock, &set, &oldMask); err != nil {
		return nil, &Error{Op: "block", Err: err}
	}
	stopped := archive && holdsAtStart
	if stopped {
		// Returns once os/signal's thread blocks them, with every signal
		// Go received before on the channel.
		signal.Stop(early)
		replay(early)
		held.Store(true)
	}
	resume := func() {
		if stopped {
			held.Store(false)
			signal.Notify(early, Signals...)
			replay(early) // the recorder is the disposition again in between
		}
		sigprocmask(sigSetmask, &oldMask, nil)
	}
	if !ignoreFatal {
		return resume, nil
	}
	if stopped {
		// Setting SIG_IGN discards a pending signal, blocked or not: taken
		// first, for the state the new image replays.
		for _, sig := range takePending(fatalEarly[:]) {
			send(early, sig)
		}
	}
	restore, err := ignore(fatalEarly[:])
	if err != nil {
		resume()
		return nil, err
	}
	return func() {
		restore()
		resume()
	}, nil
}

// held is true while Hold has stopped os/signal's delivery (archive
// build): Flush then has nothing to wait for.
var held atomic.Bool

// ignore sets sigs to SIG_IGN; restore sets back what they were.
func ignore(sigs []syscall.Signal) (restore func(), err error) {
	old := make([]sigaction, len(sigs))
	n := 0
	restore = func() {
		for i := range n {
			rtSigaction(sigs[i], &old[i], nil)
		}
	}
	ign := sigaction{handler: 1} // SIG_IGN
	for ; n < len(sigs); n++ {
		if err := rtSigaction(sigs[n], &ign, &old[n]); err != nil {
			restore()
			return nil, &Error{Op: "ignore " + sigs[n].String(), Err: err}
		}
	}
	return restore, nil
}

// fatalEarly are the Signals Go's runtime unblocks on every thread it
// starts (runtime.blockableSig).
var fatalEarly = [...]syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

// stopEarly are the Signals whose default stops the process and for which
// os/signal unblocks before it installs its handler (runtime.sigenable).
var stopEarly = [...]syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU}

// Flush returns once Go's runtime has handed every Signal it has received
// so far to the channels that asked for it (os/signal's goroutine may lag
// behind the signal handler by milliseconds on a busy machine): after
// Hold, a last look at those channels then misses nothing received before.
func Flush() {
	if held.Load() {
		return // Hold stopped it, and waited (archive build)
	}
	// signal.Stop waits until signal delivery is idle; with another
	// channel still registered, no signal is disabled.
	c := make(chan os.Signal, 1)
	signal.Notify(c, Signals...)
	signal.Stop(c)
}

// sigNums is Signals as numbers.
var sigNums = [...]syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR2}

func sigset(sigs []syscall.Signal) uint64 {
	var set uint64
	for _, s := range sigs {
		set |= 1 << (uint(s) - 1)
	}
	return set
}

// takePending takes the Signals pending for this process or thread,
// without delivering them: they are blocked here, so sigtimedwait with a
// zero timeout dequeues each one or returns EAGAIN.
func takePending(sigs []syscall.Signal) []os.Signal {
	var got []os.Signal
	set := sigset(sigs)
	var ts syscall.Timespec
	for range 64 { // standard signals do not queue: at most one each
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&set)), 0,
			uintptr(unsafe.Pointer(&ts)), 8, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return got
		}
		got = append(got, syscall.Signal(r))
	}
	return got
}

func sigprocmask(how int, set, old *uint64) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, uintptr(how), uintptr(unsafe.Pointer(set)),
		uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func rtSigaction(sig syscall.Signal, act, old *sigaction) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)),
		uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// rt_sigprocmask's how.
const (
	sigBlock   = 0
	sigUnblock = 1
	sigSetmask = 2
)
