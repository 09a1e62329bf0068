package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// ShimCommand is the supervisor's subcommand that sets LISTEN_PID to its
// own pid and executes a systemd-protocol worker in its place (ExecShim).
const ShimCommand = "exec-shim"

// maxNotify bounds one sd_notify datagram; a longer one is a protocol
// error. systemd's own limit is larger, but no state a worker sends here
// needs more.
const maxNotify = 4096

// systemd is a socket-activation-aware worker: the socket at fd 3 with
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, and a NOTIFY_SOCKET of its own
// for READY=1, WATCHDOG=1, STOPPING=1 and STATUS=. SIGTERM drains it.
type systemd struct {
	hang time.Duration // -hang-timeout, offered as WATCHDOG_USEC
	n    int           // links opened, for unique socket names (owner only)
}

func (*systemd) beats() bool    { return false }
func (*systemd) receives() bool { return false }
func (*systemd) stop()          {}

// open binds the worker's notify socket: a datagram socket in the abstract
// namespace, so no file is left behind and no directory needs to be
// reachable by -user. Anyone in the network namespace can send to it, so
// the reader takes only what the worker's own pid sent (SO_PASSCRED), as
// systemd's NotifyAccess=main does.
func (m *systemd) open(sl *slot) (link, error) {
	m.n++
	name := fmt.Sprintf("@prefork-%d-%d-%d", os.Getpid(), sl.id, m.n)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("worker notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
		err = errors.Join(err, cerr)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("worker notify socket: %w", err)
	}
	return &systemdLink{conn: conn, name: name, hang: m.hang}, nil
}

type systemdLink struct {
	conn *net.UnixConn
	name string
	hang time.Duration
}

func (l *systemdLink) control() (*ipc.Channel, *os.File) { return nil, nil }

// command runs the worker through the exec shim: os/exec has no hook
// between fork and exec to set LISTEN_PID to the child's pid, so the child
// starts as the supervisor's own binary (/proc/self/exe: the running one,
// even if the file was replaced since), which sets it and executes the
// worker in place. The pid stays the same, and so do Pdeathsig, the
// process group and credentials: execve keeps them for a binary that is
// not set-user-ID.
func (l *systemdLink) command(s *Supervisor, cmd *exec.Cmd, h handles) {
	cmd.Env = append(cmd.Env, listenFDs(s.mode.listeners())...)
	cmd.Env = append(cmd.Env,
		"NOTIFY_SOCKET="+l.name,
		"WATCHDOG_USEC="+strconv.FormatInt(l.hang.Microseconds(), 10),
	)
	cmd.ExtraFiles = h.files // from fd 3: SD_LISTEN_FDS_START
	if cmd.Err == nil {      // else Start reports the lookup's error
		cmd.Args = append([]string{"supervisor", ShimCommand, "--", cmd.Path}, cmd.Args...)
		cmd.Path = "/proc/self/exe"
	}
}

func (l *systemdLink) started(s *Supervisor, p *process) {
	go func() {
		defer close(p.read)
		l.read(s, p)
	}()
}

func (l *systemdLink) exited()                         { l.conn.SetReadDeadline(time.Now()) }
func (l *systemdLink) drain(s *Supervisor, p *process) { terminate(s, p) }
func (l *systemdLink) close()                          { l.conn.Close() }

// read passes on what a worker says on its notify socket until the socket
// closes or the worker has exited, boundedly, as a prefork worker's reader
// does.
func (l *systemdLink) read(s *Supervisor, p *process) {
	conn := l.conn
	buf := make([]byte, maxNotify+1)
	oob := make([]byte, 256)
	dgrams := newBucket(dgramBurst, dgramRate, time.Now())
	g := newGuard()
	var foreign int
	recv := conn.ReadMsgUnix
	for {
		n, oobn, flags, _, err := recv(buf, oob)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The worker has exited: read what it sent before, without
			// waiting (a past deadline fails every read, queued or not).
			conn.SetReadDeadline(time.Time{})
			recv = func(b, o []byte) (int, int, int, *net.UnixAddr, error) { return tryRecvmsg(conn, b, o) }
			continue
		}
		if err != nil {
			return // closed, or nothing left after the worker's exit
		}
		pid, err := notifySender(oob[:oobn])
		switch {
		case err == nil && pid != p.pid:
			// Not the worker: another process on the host, or a child
			// of the worker. Ignored, as systemd ignores it.
			if foreign++; foreign&(foreign-1) == 0 {
				s.log.Warn("ignoring sd_notify datagrams from another process", p.fields(zap.Int("sender", pid), zap.Int("count", foreign))...)
			}
			continue
		case err == nil && (n > maxNotify || flags&unix.MSG_TRUNC != 0):
			err = fmt.Errorf("supervisor: sd_notify datagram longer than %d bytes", maxNotify)
		case err == nil && !dgrams.take(time.Now()):
			if d := dgrams.dropped; d&(d-1) == 0 {
				s.log.Warn("worker sends sd_notify datagrams too fast; dropping some", p.fields(zap.Uint64("dropped", d))...)
			}
			continue
		case err == nil:
			err = l.onNotify(s, p, buf[:n], g.beats)
		}
		if err != nil && g.broke(s, p, err) {
			return
		}
	}
}

// tryRecvmsg reads one queued datagram without waiting; io.EOF when none
// is left.
func tryRecvmsg(conn *net.UnixConn, b, oob []byte) (n, oobn, flags int, _ *net.UnixAddr, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	cerr := raw.Control(func(fd uintptr) {
		// MSG_CMSG_CLOEXEC: a descriptor sent along must not leak into
		// a worker spawned meanwhile (notifySender closes it).
		n, oobn, flags, _, err = unix.Recvmsg(int(fd), b, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	})
	if err == nil {
		err = cerr
	}
	if errors.Is(err, unix.EAGAIN) {
		err = io.EOF
	}
	return n, oobn, flags, nil, err
}

// notifySender returns the pid the kernel stamped on a datagram
// (SO_PASSCRED), closing any descriptor sent along with it, which is a
// protocol error: nothing the supervisor reads carries one.
func notifySender(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, fmt.Errorf("supervisor: sd_notify control message: %w", err)
	}
	pid, rights := -1, 0
	for i := range msgs {
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			ipc.CloseAll(fds)
			rights += len(fds)
		} else if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			pid = int(cred.Pid)
		}
	}
	if rights > 0 {
		return pid, fmt.Errorf("supervisor: %d descriptors in an sd_notify datagram", rights)
	}
	return pid, nil
}

// onNotify handles one sd_notify datagram from the worker, on its reader's
// goroutine: newline-separated VARIABLE=VALUE assignments, of which it acts
// on READY=1, WATCHDOG=1 (a healthy heartbeat), WATCHDOG=trigger (an
// unhealthy one), and passes STOPPING, STATUS, RELOADING and ERRNO on as
// messages. Other variables are ignored, as systemd ignores unknown ones.
func (l *systemdLink) onNotify(s *Supervisor, p *process, msg []byte, beats *bucket) error {
	if !utf8.Valid(msg) {
		return errors.New("supervisor: sd_notify datagram is not UTF-8")
	}
	for line := range strings.SplitSeq(string(msg), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return fmt.Errorf("supervisor: sd_notify line %.64q is not VARIABLE=VALUE", line)
		}
		switch {
		case k == "READY" && v == "1":
			s.post(evReady{p: p})
		case k == "WATCHDOG" && (v == "1" || v == "trigger"):
			if beats.take(time.Now()) || v == "trigger" {
				s.post(evBeat{p: p, hb: ipc.Heartbeat{Healthy: v == "1"}})
			}
		case k == "STOPPING" || k == "STATUS" || k == "RELOADING" || k == "ERRNO":
			s.post(evMessage{p: p, msg: []byte(line)})
		}
	}
	return nil
}

// ExecShim is `supervisor exec-shim -- PATH ARGV0 ARGS...`: it sets
// LISTEN_PID (and WATCHDOG_PID, if WATCHDOG_USEC is set) to its own pid and
// executes PATH in its place, so that a systemd-protocol worker sees
// variables meant for it. It returns only on failure, with status 127 as a
// shell's exec does.
func ExecShim(args []string, stderr io.Writer) int {
	if len(args) < 3 || args[0] != "--" {
		fmt.Fprintln(stderr, "usage: supervisor "+ShimCommand+" -- PATH ARGV0 [ARGS...]")
		return 2
	}
	pid := strconv.Itoa(os.Getpid())
	os.Setenv("LISTEN_PID", pid)
	if os.Getenv("WATCHDOG_USEC") != "" {
		os.Setenv("WATCHDOG_PID", pid)
	}
	err := syscall.Exec(args[1], args[2:], os.Environ())
	fmt.Fprintf(stderr, "supervisor: %s: %s: %v\n", ShimCommand, args[1], err)
	return 127
}
