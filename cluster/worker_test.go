package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/ipc"
)

// helperEnv names the helper program the re-executed test binary runs.
const (
	helperEnv    = "CLUSTER_TEST_HELPER"
	helperNofile = "CLUSTER_TEST_NOFILE"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "sleep":
		io.Copy(io.Discard, os.Stdin) // until the test closes stdin
	case "spawn":
		helperSpawn()
	case "hold":
		helperHold()
	case "drain":
		helperDrain()
	case "latency":
		helperLatency()
	case "served":
		helperServed()
	case "handback":
		helperHandBack()
	}
	os.Exit(0)
}

// helperSpawn is a worker that starts a program (the "sleep" helper) and
// prints its pid, as an application may start one.
func helperSpawn() {
	ln, err := Listen("")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer ln.Close()
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), helperEnv+"=sleep")
	child.Stdin = os.Stdin
	if err := child.Start(); err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(child.Process.Pid)
	io.Copy(io.Discard, os.Stdin)
	child.Wait()
}

// helperHold is an rr worker with a small RLIMIT_NOFILE that writes one
// byte to every connection it accepts and holds it until the client closes.
func helperHold() {
	n, _ := strconv.ParseUint(os.Getenv(helperNofile), 10, 64)
	// Before the first call into the package, which reads the limit.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Println("error:", err)
		return
	}
	ln, err := Listen("")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			c.Write([]byte("x"))
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// helperDrain is an rr worker that never accepts, so a drain waits for it
// to park; it prints whether a message sent after the drain reached it
// before the drain reached the application.
func helperDrain() {
	if _, err := Listen(""); err != nil {
		fmt.Println("error:", err)
		return
	}
	drained := Drain()
	fmt.Println("serving")
	<-Messages()
	select {
	case <-drained:
		fmt.Println("drain first")
	default:
		fmt.Println("message first")
	}
	io.Copy(io.Discard, os.Stdin)
}

// runWorker starts the helper program as a worker in mode, with fd4 as its
// descriptor 4, and returns the supervisor's end of its control channel,
// its stdout, and the write end of its stdin: closing it ends the helper.
func runWorker(t *testing.T, helper, mode string, fd4 *os.File, env ...string) (*ipc.Channel, *bufio.Reader, io.Closer) {
	t.Helper()
	ctl, ctlRemote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer ctlRemote.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append(env,
		helperEnv+"="+helper,
		ipc.EnvWorkerID+"=1",
		ipc.EnvMode+"="+mode,
		ipc.EnvGeneration+"=1",
		ipc.EnvControlFD+"=3",
		ipc.EnvListenFD+"=4",
		ipc.EnvListenAddr+"=127.0.0.1:0",
		"GORACE=atexit_sleep_ms=0", // a race-enabled helper would wait a second to exit
	)...)
	cmd.ExtraFiles = []*os.File{ctlRemote, fd4}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("helper did not exit when its stdin closed")
		}
		ctl.Close()
	})
	return ctl, bufio.NewReader(stdout), stdin
}

// socketInode is the inode /proc/PID/fd links name as socket:[INODE].
func socketInode(t *testing.T, fd uintptr) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A program the worker starts must not inherit the listening socket (it
// would keep accepting on the port after the worker stops) nor the control
// channel.
func TestChildInheritsNoSocket(t *testing.T) {
	for _, mode := range []string{ModeShared, ModeReusePort} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			lf, err := ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			listenIno := socketInode(t, lf.Fd())
			_, out, stdin := runWorker(t, "spawn", mode, lf)

			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("helper: %q, %v", line, err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatalf("helper: %q", line)
			}
			ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
				// The child has a pipe for stdin and /dev/null otherwise:
				// any socket is one it inherited from the worker.
				if link == fmt.Sprintf("socket:[%d]", listenIno) {
					t.Errorf("child %d holds the listening socket as fd %s", pid, e.Name())
				} else if strings.HasPrefix(link, "socket:") {
					t.Errorf("child %d holds a socket as fd %s: %s", pid, e.Name(), link)
				}
			}
			stdin.Close()
		})
	}
}

// An rr worker near its descriptor limit sends Pause before the kernel
// truncates a frame (every connection of every frame before the pause is
// served), and Resume once its connections close.
func TestPauseBeforeTruncation(t *testing.T) {
	const limit = 400
	handoff, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer handoff.Close()
	ctl, _, _ := runWorker(t, "hold", ModeRR, remote,
		ipc.EnvFeatures+"="+strconv.Itoa(int(ipc.FeaturePause)), helperNofile+"="+strconv.Itoa(limit))
	remote.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()

	buf := make([]byte, ipc.MaxFrame)
	paused := false
	for frame := 0; frame < limit/ipc.MaxFDs+2 && !paused; frame++ {
		fds := make([]int, ipc.MaxFDs)
		for i := range fds {
			c, fd := dialAccepted(t, ln)
			clients = append(clients, c)
			fds[i] = fd
		}
		err := handoff.Send(ipc.ConnsFrame(len(fds)), fds)
		ipc.CloseAll(fds)
		if err != nil {
			t.Fatal(err)
		}
		// The worker writes a byte to every connection it accepted: to
		// all of them unless the kernel truncated the frame.
		for i, c := range clients[len(clients)-len(fds):] {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 1 {
				t.Fatalf("frame %d, connection %d: lost before the worker paused: %v", frame, i, err)
			}
		}
		// The worker decides before Accept returns a frame's first
		// connection, so a Pause it sent is queued by now.
		for {
			f, _, err := ctl.TryRecv(buf, nil)
			if errors.Is(err, ipc.ErrWouldBlock) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			switch f.Type {
			case ipc.TypePause:
				paused = true
			case ipc.TypeResume:
				t.Fatalf("frame %d: resume before any pause", frame)
			}
		}
	}
	if !paused {
		t.Fatalf("no pause after %d connections with RLIMIT_NOFILE %d", len(clients), limit)
	}

	for _, c := range clients {
		c.Close()
	}
	clients = nil
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, _, err := ctl.Recv(buf, nil)
		if err != nil {
			t.Fatalf("waiting for resume: %v", err)
		}
		if f.Type == ipc.TypeResume {
			break
		}
		if f.Type == ipc.TypePause {
			t.Fatal("second pause before a resume")
		}
	}
}

// A drain waiting for Accept to park does not stop the control channel: a
// message sent after the drain frame is delivered while the drain waits.
func TestDrainKeepsReadingControl(t *testing.T) {
	handoff, remote, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer handoff.Close()
	ctl, out, _ := runWorker(t, "drain", ModeRR, remote)
	remote.Close()
	// A drain before Drain is called sends SIGTERM instead.
	if line, err := out.ReadString('\n'); line != "serving\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	msg, _ := ipc.AppendFrame(nil, ipc.TypeMessage, []byte("hello"))
	if err := ctl.Send(ipc.AppendUint32(nil, ipc.TypeDrain, 5000), nil); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Send(msg, nil); err != nil {
		t.Fatal(err)
	}
	line, err := out.ReadString('\n')
	if want, have := "message first\n", line; want != have {
		t.Fatalf("want %q, have %q (%v)", want, have, err)
	}
}

// dialAccepted connects to ln and returns the client and the accepted
// socket's descriptor, non-blocking, as the supervisor hands it over.
func dialAccepted(t *testing.T, ln net.Listener) (net.Conn, int) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	defer s.Close()
	rc, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	// The duplicate shares the open file and so its O_NONBLOCK.
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return c, fd
}
