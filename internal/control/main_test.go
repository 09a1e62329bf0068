package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/prefork/prefork/internal/fdtest"
)

// Environment variables that make the test binary a helper program.
const (
	// helperEnv: a client that asks the socket it names for the status and
	// prints the Response; TestPeerCred runs it as another user.
	helperEnv = "PREFORK_CONTROL_TEST_DIAL"
	// ctlEnv: `supervisor ctl` with the binary's arguments.
	ctlEnv = "PREFORK_CONTROL_TEST_CTL"
	// serveEnv: a server on the socket it names, answering status, until
	// its stdin closes; TestCtlRefusesServerOfAnotherUser runs it as
	// another user.
	serveEnv = "PREFORK_CONTROL_TEST_SERVE"
	// emfileEnv: a server that runs out of fds; see TestServeSurvivesEMFILE.
	emfileEnv = "PREFORK_CONTROL_TEST_EMFILE"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helperDial(path))
	}
	if path := os.Getenv(serveEnv); path != "" {
		os.Exit(helperServe(path))
	}
	if path := os.Getenv(emfileEnv); path != "" {
		os.Exit(helperEMFILE(path))
	}
	if os.Getenv(ctlEnv) != "" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	// Start the runtime's network poller (its epoll and wakeup fds) before
	// any test takes its fd baseline. An abstract socket leaves no file.
	if ln, err := net.Listen("unix", fmt.Sprintf("@prefork-control-test-%d", os.Getpid())); err == nil {
		ln.Close()
	}
	os.Exit(m.Run())
}

func helperDial(path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Call(ctx, path, Request{Cmd: CmdStatus})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	json.NewEncoder(os.Stdout).Encode(resp)
	return 0
}

func helperServe(path string) int {
	s, err := Listen(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(statusHandler(testStatus), nil) }()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the test closes it
	s.Close()
	err = <-served
	fmt.Println("served:", err)
	if err != nil {
		return 1
	}
	return 0
}

// checkLeaks fails t if, once its cleanups have run, goroutines started by
// this package or fds opened since are still there. Call it first, so that
// its cleanup runs last.
func checkLeaks(t *testing.T) {
	t.Helper()
	before, err := fdtest.List(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			gs, fds := leakedGoroutines(), newFDs(t, before)
			if len(gs) == 0 && len(fds) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked fds %v and goroutines:\n%s", fds, strings.Join(gs, "\n\n"))
				return
			}
			time.Sleep(5 * time.Millisecond) // poll, with a deadline
		}
	})
}

// newFDs returns the fds open now that were not in before.
func newFDs(t *testing.T, before []string) []string {
	now, err := fdtest.List(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, fd := range now {
		if !slices.Contains(before, fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}

// leakedGoroutines returns the stacks of goroutines created by this
// package's code (tests included), other than the caller's.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i > 0 && strings.Contains(g, "created by github.com/prefork/prefork/internal/control") {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

// serve starts a server on a socket in t's temp dir with h and events;
// opts adjust it before Serve. Cleanup closes it and checks that Serve
// returned nil.
func serve(t *testing.T, h Handler, events *Broadcaster, opts ...func(*Server)) (*Server, string) {
	t.Helper()
	return serveAt(t, filepath.Join(t.TempDir(), "ctl.sock"), h, events, opts...)
}

func serveAt(t *testing.T, path string, h Handler, events *Broadcaster, opts ...func(*Server)) (*Server, string) {
	t.Helper()
	s, err := Listen(path, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	for _, o := range opts {
		o(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(h, events) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v after Close, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of Close")
		}
	})
	return s, path
}

// statusHandler answers status with st and everything else with OK.
func statusHandler(st *Status) Handler {
	return HandlerFunc(func(_ context.Context, req Request) Response {
		if req.Cmd == CmdStatus {
			return Response{OK: true, Status: st}
		}
		return Response{OK: true, Message: string(req.Cmd) + " done"}
	})
}

// blockingHandler's Do reports each call on entered and returns when its
// ctx ends, reporting ctx.Err() on exited, or when release is closed.
type blockingHandler struct {
	entered chan Request
	exited  chan error
	release chan struct{}
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{entered: make(chan Request, 100), exited: make(chan error, 100), release: make(chan struct{})}
}

func (h *blockingHandler) Do(ctx context.Context, req Request) Response {
	h.entered <- req
	select {
	case <-ctx.Done():
		h.exited <- ctx.Err()
		return Response{Error: ctx.Err().Error()}
	case <-h.release:
		h.exited <- nil
		return Response{OK: true, Message: "released"}
	}
}

// recv returns the next value of ch, failing t after 10s.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		panic("unreachable")
	}
}

// rawRequest connects to path, writes data, and returns the line the server
// answers, or "" if it closes without one.
func rawRequest(t *testing.T, path, data string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(data)) // may fail once the server has answered and closed
	return readAll(t, c)
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("server neither answered nor closed; read so far %q", b.String())
			}
			return b.String()
		}
	}
}

func decodeResponse(t *testing.T, line string) Response {
	t.Helper()
	var r Response
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("answer %q: %v", line, err)
	}
	return r
}
