package nodeipc

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/fdtest"
)

const deadline = 15 * time.Second

// nodeWorker is a real Node process running testdata/worker.js as cluster
// worker 1, its channel served by a Worker.
type nodeWorker struct {
	w      *Worker
	events chan Event
	exited chan error // the result of Wait
	stderr *bytes.Buffer
}

func startNode(t *testing.T, env ...string) *nodeWorker {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH (%v): these tests run a real Node.js cluster worker; install Node.js 20 or later", err)
	}
	ch, remote, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "testdata/worker.js")
	cmd.ExtraFiles = []*os.File{remote} // fd 3
	cmd.Env = append(append(os.Environ(), Environ(3, 1)...), env...)
	nw := &nodeWorker{events: make(chan Event, 16), exited: make(chan error, 1), stderr: new(bytes.Buffer)}
	cmd.Stderr = nw.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	remote.Close()
	if err != nil {
		ch.Close()
		t.Fatal(err)
	}
	go func() { nw.exited <- cmd.Wait() }()
	nw.w = NewWorker(ch, nw.events)
	t.Cleanup(func() {
		nw.w.Close()
		select {
		case err := <-nw.exited:
			nw.exited <- err
		default:
			cmd.Process.Kill()
		}
		if err := <-nw.exited; err != nil && !t.Failed() {
			t.Errorf("node: %v\n%s", err, nw.stderr)
		}
	})
	return nw
}

// next returns the next event, which must be a T.
func next[T any](t *testing.T, nw *nodeWorker) T {
	t.Helper()
	select {
	case ev := <-nw.events:
		if ev.Worker != nw.w {
			t.Fatalf("event from worker %p, want %p", ev.Worker, nw.w)
		}
		v, ok := ev.Value.(T)
		if !ok {
			var want T
			if m, ok := ev.Value.(Message); ok {
				t.Fatalf("message %s, want %T\nnode stderr:\n%s", m.Body, want, nw.stderr)
			}
			t.Fatalf("event %T %+v, want %T\nnode stderr:\n%s", ev.Value, ev.Value, want, nw.stderr)
		}
		return v
	case <-time.After(deadline):
		var want T
		t.Fatalf("no %T event within %v\nnode stderr:\n%s", want, deadline, nw.stderr)
	}
	panic("unreachable")
}

// disconnect asks the worker to leave and checks it closes the server of
// key, then the channel, and exits 0.
func (nw *nodeWorker) disconnect(t *testing.T, key string) {
	t.Helper()
	if err := nw.w.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if have := next[ServerClosed](t, nw); key != "" && have.Key != key {
		t.Errorf("closed server %q, want %q", have.Key, key)
	}
	if d := next[Disconnected](t, nw); d.Err != nil {
		t.Errorf("disconnected: %v", d.Err)
	}
	select {
	case err := <-nw.exited:
		nw.exited <- err
		if err != nil {
			t.Fatalf("worker exit: %v\n%s", err, nw.stderr)
		}
	case <-time.After(deadline):
		t.Fatalf("worker still running %v after disconnect", deadline)
	}
}

// get runs one HTTP request to addr in the background.
func get(addr string) <-chan string {
	res := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: deadline}
		r, err := c.Get("http://" + addr + "/x")
		if err != nil {
			res <- err.Error()
			return
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			res <- err.Error()
			return
		}
		res <- fmt.Sprintf("%d %s", r.StatusCode, b)
	}()
	return res
}

func await(t *testing.T, res <-chan string) string {
	t.Helper()
	select {
	case s := <-res:
		return s
	case <-time.After(deadline):
		t.Fatalf("no HTTP response within %v", deadline)
	}
	return ""
}

// dupFD returns a close-on-exec duplicate of c's descriptor.
func dupFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	return fd
}

func online(t *testing.T, nw *nodeWorker) QueryServer {
	t.Helper()
	next[Online](t, nw)
	q := next[QueryServer](t, nw)
	if q.Address != "127.0.0.1" || q.AddressType != "4" || q.FD != -1 {
		t.Errorf("query %+v, want address 127.0.0.1, type 4, no fd", q)
	}
	if want := "127.0.0.1:" + strconv.Itoa(q.Port) + ":4:undefined:0"; q.Key != want {
		t.Errorf("key %q, want %q", q.Key, want)
	}
	return q
}

// listening checks the worker's hello message, which carries what
// server.address() says in the worker (sent from the listen callback, so
// before the cluster's listening message), then its listening event.
func listening(t *testing.T, nw *nodeWorker, port int) {
	t.Helper()
	hello := next[Message](t, nw)
	want := fmt.Sprintf(`{"hello":1,"address":{"address":"127.0.0.1","family":"IPv4","port":%d}}`, port)
	if string(hello.Body) != want || hello.FD != -1 || hello.Internal() {
		t.Errorf("hello %s (fd %d), want %s", hello.Body, hello.FD, want)
	}
	if l := next[Listening](t, nw); l.Port != port || l.Address != "127.0.0.1" {
		t.Errorf("listening %+v, want 127.0.0.1 port %d", l, port)
	}
}

// handOff starts an HTTP request to ln, accepts it as the supervisor does,
// and hands the connection to w with NewConn(key, fd).
func handOff(t *testing.T, w *Worker, ln net.Listener, key string) (<-chan string, int) {
	t.Helper()
	res := get(ln.Addr().String())
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := dupFD(t, c.(*net.TCPConn))
	c.Close() // fd alone keeps the connection open
	if err := w.NewConn(key, fd); err != nil {
		t.Fatal(err)
	}
	return res, fd
}

// queried starts a worker, waits for its query, and opens the supervisor's
// listener to answer it with.
func queried(t *testing.T) (*nodeWorker, QueryServer, net.Listener) {
	t.Helper()
	nw := startNode(t)
	q := online(t, nw)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return nw, q, ln
}

func TestNodeRoundRobin(t *testing.T) {
	fds := fdtest.Open(t)
	nw, q, ln := queried(t)
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	if err := nw.w.ReplyRoundRobin(q, SocknameOf(addr)); err != nil {
		t.Fatal(err)
	}
	listening(t, nw, addr.Port)

	// The supervisor accepts; the worker serves.
	res, _ := handOff(t, nw.w, ln, q.Key)
	if a := next[Accepted](t, nw); a.Key != q.Key {
		t.Errorf("accepted key %q, want %q", a.Key, q.Key)
	}
	if have, want := await(t, res), `200 {"worker":1,"url":"/x"}`; have != want {
		t.Errorf("response %q, want %q", have, want)
	}

	// A connection for a server the worker does not have comes back.
	res, fd := handOff(t, nw.w, ln, "no-such-key")
	if r := next[Refused](t, nw); r.Key != "no-such-key" || r.FD != fd {
		t.Errorf("refused %+v, want key no-such-key fd %d", r, fd)
	}
	unix.Close(fd)
	if have := await(t, res); bytes.HasPrefix([]byte(have), []byte("200")) {
		t.Errorf("a refused connection was answered: %q", have)
	}

	if err := nw.w.Send(map[string]string{"echo": "ping"}); err != nil {
		t.Fatal(err)
	}
	if m := next[Message](t, nw); string(m.Body) != `{"echo":"ping"}` {
		t.Errorf("echo %s", m.Body)
	}

	nw.disconnect(t, q.Key)
	nw.w.Close()
	ln.Close()
	if have := fdtest.Open(t); have != fds {
		t.Errorf("%d descriptors open, want %d", have, fds)
	}
}

func TestNodeShared(t *testing.T) {
	fds := fdtest.Open(t)
	nw, q, ln := queried(t)
	port := ln.Addr().(*net.TCPAddr).Port
	lfd := dupFD(t, ln.(*net.TCPListener))
	err := nw.w.ReplyShared(q, lfd)
	unix.Close(lfd) // the channel sends its own duplicate
	ln.Close()      // the socket lives on in the worker
	if err != nil {
		t.Fatal(err)
	}
	listening(t, nw, port)

	res := get("127.0.0.1:" + strconv.Itoa(port))
	if have, want := await(t, res), `200 {"worker":1,"url":"/x"}`; have != want {
		t.Errorf("response %q, want %q", have, want)
	}

	nw.disconnect(t, q.Key)
	nw.w.Close()
	if have := fdtest.Open(t); have != fds {
		t.Errorf("%d descriptors open, want %d", have, fds)
	}
}

// TestNodeSendsHandle receives a handle from Node: the descriptor comes
// with its message, and Node's next message arrives only because Recv
// acknowledged it.
func TestNodeSendsHandle(t *testing.T) {
	nw := startNode(t)
	q := online(t, nw)
	if err := nw.w.ReplyRoundRobin(q, &Sockname{Address: "127.0.0.1", Family: "IPv4", Port: 9}); err != nil {
		t.Fatal(err)
	}
	listening(t, nw, 9)

	if err := nw.w.Send(map[string]bool{"sendServer": true}); err != nil {
		t.Fatal(err)
	}
	m := next[Message](t, nw)
	if m.FD < 0 || m.Handle != HandleServer {
		t.Fatalf("message %s with fd %d handle %q, want a net.Server", m.Body, m.FD, m.Handle)
	}
	defer unix.Close(m.FD)
	sa, err := unix.Getsockname(m.FD)
	if err != nil {
		t.Fatal(err)
	}
	accepting, err := unix.GetsockoptInt(m.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"server":%d}`, sa.(*unix.SockaddrInet4).Port)
	if string(m.Body) != want || accepting != 1 {
		t.Errorf("message %s (listening %d), want %s on a listening socket", m.Body, accepting, want)
	}
	if m := next[Message](t, nw); string(m.Body) != `{"after":1}` {
		t.Errorf("message %s, want {\"after\":1}", m.Body)
	}
	nw.disconnect(t, q.Key)
}

// TestNodeListenError: the worker's listen fails as Node's primary makes it
// fail, with the errno of ReplyError or, for a port other than the one the
// app asked for, EADDRINUSE from Node's own check.
func TestNodeListenError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(*Worker, QueryServer) error
		want  string
	}{
		{"errno", func(w *Worker, q QueryServer) error { return w.ReplyError(q, syscall.EACCES) },
			`{"error":"EACCES","syscall":"bind"}`},
		{"other port", func(w *Worker, q QueryServer) error {
			return w.ReplyRoundRobin(q, &Sockname{Address: "127.0.0.1", Family: "IPv4", Port: q.Port + 1})
		}, `{"error":"EADDRINUSE","syscall":"bind"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := startNode(t, "TEST_PORT=40999")
			q := online(t, nw)
			if q.Port != 40999 {
				t.Errorf("query port %d, want 40999", q.Port)
			}
			if err := tc.reply(nw.w, q); err != nil {
				t.Fatal(err)
			}
			if m := next[Message](t, nw); string(m.Body) != tc.want {
				t.Errorf("message %s, want %s", m.Body, tc.want)
			}
			// Not Disconnect: after the bind check fails, Node has
			// registered a round-robin handle whose close never calls
			// back, so the worker's disconnect would never finish.
			// A closed channel (the primary gone) makes it exit.
			nw.w.Close()
			select {
			case err := <-nw.exited:
				nw.exited <- err
			case <-time.After(deadline):
				t.Fatalf("worker still running %v after its channel closed", deadline)
			}
		})
	}
}
