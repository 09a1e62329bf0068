package listener

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseAddr(t *testing.T) {
	for _, ok := range []string{":3000", "127.0.0.1:0", "[::1]:80", "localhost:8080", "0.0.0.0:65535"} {
		if err := ParseAddr(ok); err != nil {
			t.Errorf("ParseAddr(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "3000", ":http", ":70000", "127.0.0.1:-1", "a b:80", "host:port:1"} {
		if err := ParseAddr(bad); !errors.Is(err, ErrAddr) {
			t.Errorf("ParseAddr(%q): want ErrAddr, have %v", bad, err)
		}
	}
}

func TestListenAddressInUse(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("want address already in use, have %v", err)
	}
}

func TestListenReusePortSharesPort(t *testing.T) {
	lns, err := ListenReusePort("127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	want := lns[0].Addr().String()
	for i, l := range lns {
		if have := l.Addr().String(); have != want {
			t.Fatalf("listener %d on %s, want %s", i, have, want)
		}
	}
	one, err := ListenOne(want)
	if err != nil {
		t.Fatal(err)
	}
	one.Close()
}

func TestDupKeepsOriginalNonBlocking(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := Dup(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// What os/exec does with ExtraFiles.
	fd := f.Fd()
	flags, _ := unix.FcntlInt(fd, unix.F_GETFD, 0)
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("duplicate is not close-on-exec")
	}
	rc, _ := ln.SyscallConn()
	var fl int
	rc.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if fl&unix.O_NONBLOCK == 0 {
		t.Fatal("original listener became blocking after Fd() on the duplicate")
	}
}

// TestActivated runs the test binary as a helper with LISTEN_FDS set, the
// way systemd starts a socket-activated service.
func TestActivated(t *testing.T) {
	if os.Getenv("PREFORK_TEST_ACTIVATED") == "1" {
		specs, socks, err := Activated()
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error())
			os.Exit(1)
		}
		if os.Getenv("LISTEN_FDS") != "" {
			os.Stdout.WriteString("LISTEN_FDS still set")
			os.Exit(1)
		}
		os.Stdout.WriteString(specs[0].Name + " " + socks[0].Addr().String())
		os.Exit(0)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := Dup(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A shell sets LISTEN_PID to its own pid and execs the test binary, so
	// the pid matches, as with systemd.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run '^TestActivated$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "PREFORK_TEST_ACTIVATED=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if want, have := "web "+ln.Addr().String(), string(out); want != have {
		t.Fatalf("want %s, have %s", want, have)
	}
}

func TestActivatedWrongPID(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	if _, _, err := Activated(); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("want ErrNotActivated, have %v", err)
	}
}

var _ syscall.Conn = (*net.TCPListener)(nil)

// detachedWithClient detaches a new listener and connects a client to it.
func detachedWithClient(t *testing.T) *Socket {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Detach(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial after detach: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s
}

func TestDetachKeepsSocketOpen(t *testing.T) {
	// The socket still listens: a client connects, and a duplicate made
	// from the Socket accepts it.
	s := detachedWithClient(t)
	f, err := Dup(s)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	conn, err := l2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Connections accepted on a detached socket inherit TCP_NODELAY and the
// keep-alive settings.
func TestDetachTunesAccepted(t *testing.T) {
	s := detachedWithClient(t)
	var nfd int
	var aerr error
	rc, _ := s.SyscallConn()
	rc.Control(func(fd uintptr) { nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC) })
	if aerr != nil {
		t.Fatal(aerr)
	}
	defer unix.Close(nfd)
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
	} {
		if have, err := unix.GetsockoptInt(nfd, o.level, o.opt); err != nil || have != o.want {
			t.Errorf("%s on the accepted socket: %d, %v; want %d", o.name, have, err, o.want)
		}
	}
}

// Listen binds plain TCP, as fasthttp's reuseport and ListenReusePort do,
// not MPTCP (Go's default for listeners where the kernel has it): every
// connection to an MPTCP listener from a plain TCP client, all of them in
// practice, goes through MPTCP's fallback, which cost Connection: close
// load measurable CPU per connection in the kernel (mptcp_stream_accept,
// subflow_v4_req_destructor).
func TestListenIsPlainTCP(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var perr error
	rc.Control(func(fd uintptr) { proto, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if perr != nil {
		t.Fatal(perr)
	}
	if proto != unix.IPPROTO_TCP {
		t.Errorf("listening socket protocol %d, want IPPROTO_TCP (%d)", proto, unix.IPPROTO_TCP)
	}
}
