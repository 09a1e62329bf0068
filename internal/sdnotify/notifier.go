package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables systemd sets for a Type=notify service.
const (
	envSocket       = "NOTIFY_SOCKET"
	envWatchdogUsec = "WATCHDOG_USEC"
	envWatchdogPID  = "WATCHDOG_PID"
)

// ErrUnsupportedSocket is returned by Notify when $NOTIFY_SOCKET is neither an
// absolute path nor an abstract socket name ("@name"), for example the
// "vsock:" form newer systemd uses for virtual machines.
var ErrUnsupportedSocket = errors.New("sdnotify: unsupported NOTIFY_SOCKET address")

// ErrQueueFull is returned by Notify when the receiver's queue is full: the
// datagram is dropped, not waited for (see Dropped).
var ErrQueueFull = errors.New("sdnotify: receiver's queue full, notification dropped")

// Notifier sends sd_notify datagrams to $NOTIFY_SOCKET. The zero value, a nil
// *Notifier and one built by New without $NOTIFY_SOCKET are disabled: every
// call is a no-op returning nil.
type Notifier struct {
	socket   string        // $NOTIFY_SOCKET as systemd set it; "" when disabled
	watchdog time.Duration // half of $WATCHDOG_USEC; 0 when no watchdog applies to us
	dropped  atomic.Uint64 // notifications dropped on a full queue
}

// New reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. It does not
// touch the socket; errors surface from the first Notify.
func New() *Notifier {
	return &Notifier{
		socket:   os.Getenv(envSocket),
		watchdog: watchdogInterval(os.Getenv(envWatchdogUsec), os.Getenv(envWatchdogPID)),
	}
}

// watchdogInterval is half the watchdog timeout, as sd_watchdog_enabled(3)
// recommends, so that one late tick does not get the service killed.
func watchdogInterval(usec, pid string) time.Duration {
	if usec == "" {
		return 0
	}
	// WATCHDOG_PID names the process the watchdog applies to. When it is
	// set to another pid we inherited the variables by mistake.
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil || p != os.Getpid() {
			return 0
		}
	}
	u, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || u == 0 {
		return 0
	}
	return time.Duration(u) * time.Microsecond / 2
}

// Unsetenv removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// process environment so that children spawned afterwards do not inherit
// them. Call it after New, before starting any worker.
func Unsetenv() {
	for _, k := range []string{envSocket, envWatchdogUsec, envWatchdogPID} {
		os.Unsetenv(k)
	}
}

// Enabled reports whether $NOTIFY_SOCKET was set when the Notifier was built.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends the given "KEY=VALUE" assignments to systemd as one datagram,
// lines joined by "\n". It is a no-op when the Notifier is disabled.
func (n *Notifier) Notify(state ...string) error {
	if !n.Enabled() || len(state) == 0 {
		return nil
	}
	if err := n.checkAddr(); err != nil {
		return err
	}
	// A fresh socket per message, as sd_notify(3) does. systemd learns the
	// sender's pid from the kernel (SO_PASSCRED on its end) and, under
	// NotifyAccess=main, drops datagrams not sent by MainPID. Nothing stays
	// open between calls, and SOCK_CLOEXEC keeps it out of a worker
	// started meanwhile.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sdnotify: socket: %w", err)
	}
	defer unix.Close(fd)
	// MSG_DONTWAIT: the caller is the supervisor's owner loop, which must
	// never wait on a receiver that does not read. A datagram the
	// receiver's full queue cannot take is dropped and counted; the next
	// watchdog ping or status supersedes it.
	err = unix.Sendto(fd, []byte(strings.Join(state, "\n")), unix.MSG_DONTWAIT, &unix.SockaddrUnix{Name: n.socket})
	if errors.Is(err, unix.EAGAIN) {
		n.dropped.Add(1)
		return ErrQueueFull
	}
	if err != nil {
		return fmt.Errorf("sdnotify: send: %w", err)
	}
	return nil
}

// Dropped is how many notifications were dropped because the receiver's
// queue was full.
func (n *Notifier) Dropped() uint64 {
	if n == nil {
		return 0
	}
	return n.dropped.Load()
}

func (n *Notifier) checkAddr() error {
	// x/sys/unix maps a leading '@' to the Linux abstract namespace (a
	// leading NUL byte in sun_path), which is what systemd means by it.
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("%w: %q", ErrUnsupportedSocket, n.socket)
	}
	return nil
}

// Ready tells systemd that start-up (or a reload) has finished. A non-empty
// status is sent in the same datagram as STATUS=.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.Notify("READY=1")
	}
	return n.Notify("READY=1", "STATUS="+status)
}

// Reloading tells systemd that a reload has begun; send Ready when the new
// generation serves. MONOTONIC_USEC lets Type=notify-reload (systemd ≥ 253)
// tell this reload apart from an earlier one; plain Type=notify ignores it.
func (n *Notifier) Reloading() error {
	if usec, ok := monotonicUsec(); ok {
		return n.Notify("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
	}
	return n.Notify("RELOADING=1")
}

// Stopping tells systemd that a graceful stop has begun.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the free-form status line shown by systemctl status.
func (n *Notifier) Status(s string) error { return n.Notify("STATUS=" + s) }

// WatchdogInterval is how often to send WATCHDOG=1: half of $WATCHDOG_USEC
// when it is set and $WATCHDOG_PID is absent or names this process, else 0.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}
