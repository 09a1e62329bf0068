package control

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

var testStatus = &Status{
	PID: 4242, Listen: ":3000", Mode: "rr", Generation: 3, UptimeS: 3723.9,
	Workers: []WorkerStatus{
		{Slot: 0, PID: 4243, Generation: 3, State: StateReady, UptimeS: 3723.4, OpenConns: 12,
			Requests: 34567, RSSBytes: 12897485, CPUPercent: 1.52, HeartbeatAgeS: 0.41,
			RequestsPerS: 812.4, P50S: 0.00042, P99S: 0.0123},
		{Slot: 1, PID: 4250, Generation: 3, State: StateStarting, UptimeS: 4.24, Restarts: 2, HeartbeatAgeS: -1},
	},
}

func TestStatusRoundTrip(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	have, err := Call(t.Context(), path, Request{Cmd: CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	want := Response{OK: true, Status: testStatus}
	if !reflect.DeepEqual(have, want) {
		t.Fatalf("have %+v\nwant %+v", have, want)
	}
}

func TestStatusJSONNames(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	line := rawRequest(t, path, `{"cmd":"status"}`+"\n")
	for _, field := range []string{`"ok":true`, `"pid":4242`, `"uptime_s":3723.9`, `"open_conns":12`,
		`"rss_bytes":12897485`, `"cpu_percent":1.52`, `"heartbeat_age_s":-1`, `"state":"starting"`} {
		if !strings.Contains(line, field) {
			t.Errorf("answer lacks %s: %s", field, line)
		}
	}
	if !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
		t.Errorf("answer is not one line: %q", line)
	}
}

func TestSocketModeIs0600(t *testing.T) {
	checkLeaks(t)
	old := syscall.Umask(0) // the most permissive umask must not widen it
	defer syscall.Umask(old)
	dir := t.TempDir()
	s, _ := serveAt(t, filepath.Join(dir, "ctl.sock"), statusHandler(testStatus), nil)
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want a socket with 0600", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %v, want only the socket", ents)
	}
}

func TestListenLiveSocketFails(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	s2, err := Listen(path, zaptest.NewLogger(t))
	if !errors.Is(err, ErrInUse) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "already") {
		t.Errorf("error %q does not say a supervisor already answers at the path", err)
	}
	if _, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); err != nil {
		t.Errorf("first server no longer answers: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // as a killed supervisor leaves it
	ln.Close()
	serveAt(t, path, statusHandler(testStatus), nil)
	if _, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); err != nil {
		t.Fatalf("server on a stale path: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	sub := filepath.Join(dir, "dir")
	os.Mkdir(sub, 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	for _, path := range []string{file, sub, link} {
		s, err := Listen(path, zaptest.NewLogger(t))
		if !errors.Is(err, ErrNotSocket) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%s): %v, want ErrNotSocket", path, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("regular file now %q, %v", b, err)
	}
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Errorf("directory gone: %v", err)
	}
	if _, err := os.Lstat(link); err != nil {
		t.Errorf("symlink gone: %v", err)
	}
}

func TestListenPathTooLong(t *testing.T) {
	path := "/tmp/" + strings.Repeat("x", 120) + ".sock"
	if s, err := Listen(path, nil); err == nil {
		s.Close()
		t.Fatal("Listen took a path longer than sun_path")
	}
}

func TestCloseRemovesSocketAndCancelsHandler(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	s, path := serve(t, h, nil)
	called := make(chan error, 1)
	go func() {
		_, err := Call(context.Background(), path, Request{Cmd: CmdReload})
		called <- err
	}()
	recv(t, h.entered, "reload call")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, h.exited, "end of Do"); !errors.Is(err, context.Canceled) {
		t.Errorf("Do's ctx ended with %v, want context.Canceled", err)
	}
	recv(t, called, "end of Call") // answered or closed: either way, it returns
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Serve(h, nil); err == nil {
		t.Error("Serve after Serve succeeded")
	}
}

func TestCloseLeavesAnotherServersSocket(t *testing.T) {
	checkLeaks(t)
	s, path := serve(t, statusHandler(testStatus), nil)
	os.Remove(path) // an operator removed it, and another supervisor took the path
	serveAt(t, path, statusHandler(testStatus), nil)
	s.Close()
	if _, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); err != nil {
		t.Fatalf("the new server's socket went with the old server: %v", err)
	}
}

func TestClientHangUpCancelsHandler(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	_, path := serve(t, h, nil)
	ctx, cancel := context.WithCancel(t.Context())
	called := make(chan error, 1)
	go func() {
		_, err := Call(ctx, path, Request{Cmd: CmdScale, N: 3})
		called <- err
	}()
	if req := recv(t, h.entered, "scale call"); req != (Request{Cmd: CmdScale, N: 3}) {
		t.Errorf("Do got %+v", req)
	}
	cancel()
	if err := recv(t, called, "end of Call"); !errors.Is(err, context.Canceled) {
		t.Errorf("Call: %v, want context.Canceled", err)
	}
	if err := recv(t, h.exited, "end of Do"); !errors.Is(err, context.Canceled) {
		t.Errorf("Do's ctx ended with %v, want context.Canceled", err)
	}
}

// A client that shuts down its write side after the request, as socat does,
// still waits for the answer: that is not a hang-up.
func TestHalfCloseIsNotAHangUp(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	eof := make(chan bool, 1)
	_, path := serve(t, h, nil, func(s *Server) { s.testHookPeerEOF = func(hup bool) { eof <- hup } })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"cmd":"reload"}`)) // no "\n": the EOF ends it
	c.(*net.UnixConn).CloseWrite()
	recv(t, h.entered, "reload call")
	if hup := recv(t, eof, "EOF seen by the server"); hup {
		t.Fatal("half-close taken for a hang-up")
	}
	close(h.release)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if r := decodeResponse(t, readAll(t, c)); !r.OK || r.Message != "released" {
		t.Errorf("answer %+v", r)
	}
}

func TestBadRequestsDoNotDisturbOthers(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	var statuses atomic.Int32
	handler := HandlerFunc(func(ctx context.Context, req Request) Response {
		if req.Cmd == CmdStatus {
			statuses.Add(1)
			return Response{OK: true, Status: testStatus}
		}
		return h.Do(ctx, req)
	})
	_, path := serve(t, handler, nil, func(s *Server) { s.requestTimeout = time.Minute })

	// A client that connects and sends nothing, and one whose reload is in progress.
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	reloaded := make(chan error, 1)
	go func() {
		_, err := Call(t.Context(), path, Request{Cmd: CmdReload})
		reloaded <- err
	}()
	recv(t, h.entered, "reload call")

	for _, tc := range []struct{ name, send, want string }{
		{"garbage", "hello\n", "malformed request"},
		{"empty line", "\n", "malformed request"},
		{"trailing junk", `{"cmd":"status"} x` + "\n", "malformed request"},
		{"wrong type", `{"cmd":"scale","n":"4"}` + "\n", "malformed request"},
		{"oversized", strings.Repeat("a", 3*MaxRequestLine) + "\n", "longer than 4096 bytes"},
		{"unknown cmd", `{"cmd":"frob"}` + "\n", `unknown command "frob"`},
		{"no cmd", `{}` + "\n", `no "cmd"`},
		{"scale without n", `{"cmd":"scale"}` + "\n", "scale needs n >= 1, got 0"},
		{"scale to -1", `{"cmd":"scale","n":-1}` + "\n", "scale needs n >= 1, got -1"},
	} {
		line := rawRequest(t, path, tc.send)
		r := decodeResponse(t, line)
		if r.OK || !strings.Contains(r.Error, tc.want) {
			t.Errorf("%s: answer %q, want an error with %q", tc.name, line, tc.want)
		}
	}
	if len(h.entered) != 0 {
		t.Errorf("a bad request reached the Handler: %+v", <-h.entered)
	}
	// A client that connects and leaves at once is closed quietly.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
	}
	// Meanwhile a good client is served.
	r, err := Call(t.Context(), path, Request{Cmd: CmdStatus})
	if err != nil || !r.OK || statuses.Load() != 1 {
		t.Fatalf("good client: %+v, %v", r, err)
	}
	close(h.release)
	if err := recv(t, reloaded, "reload answer"); err != nil {
		t.Errorf("reload: %v", err)
	}
	// The silent client is still waited for; Close ends it.
}

func TestSilentClientTimesOut(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil, func(s *Server) { s.requestTimeout = 50 * time.Millisecond })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := decodeResponse(t, readAll(t, c))
	if r.OK || !strings.Contains(r.Error, "no request line within 50ms") {
		t.Errorf("answer %+v", r)
	}
}

func TestBusyBeyondMaxConns(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	_, path := serve(t, h, nil, func(s *Server) { s.maxConns = 2 })
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := Call(t.Context(), path, Request{Cmd: CmdReload})
			done <- err
		}()
		recv(t, h.entered, "reload call")
	}
	r, err := Call(t.Context(), path, Request{Cmd: CmdStatus})
	if err != nil || r.OK || !strings.Contains(r.Error, "busy") {
		t.Errorf("third client: %+v, %v; want busy", r, err)
	}
	close(h.release)
	for range 2 {
		if err := recv(t, done, "reload answer"); err != nil {
			t.Error(err)
		}
	}
	if r, err := Call(t.Context(), path, Request{Cmd: CmdReload}); err != nil || !r.OK {
		t.Errorf("after the others finished: %+v, %v", r, err)
	}
}

func TestHandlerPanicIsAnswered(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, HandlerFunc(func(ctx context.Context, req Request) Response {
		if req.Cmd == CmdStop {
			panic("boom")
		}
		return Response{OK: true}
	}), nil)
	r, err := Call(t.Context(), path, Request{Cmd: CmdStop})
	if err != nil || r.OK || r.Error != "control: stop: internal error" {
		t.Errorf("answer %+v, %v", r, err)
	}
	if r, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); err != nil || !r.OK {
		t.Errorf("after the panic: %+v, %v", r, err)
	}
}

func TestEventsStream(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	s, path := serve(t, statusHandler(testStatus), &bus)
	got := make(chan Event, 1000)
	ended := make(chan error, 1)
	go func() {
		ended <- Events(t.Context(), path, func(e Event) error { got <- e; return nil })
	}()
	if e := recv(t, got, "subscribed event"); e.Kind != EventSubscribed {
		t.Fatalf("first event %v", e)
	}
	const n = SubscriberBuffer // all fit, however slowly the stream goes
	for i := range n {
		bus.Publish(Event{Kind: EventFork, Slot: i % 4, PID: i})
	}
	for i := range n {
		e := recv(t, got, "event")
		if e.Kind != EventFork || e.PID != i || e.Time == "" {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	s.Close()
	if err := recv(t, ended, "end of Events"); err != nil {
		t.Errorf("Events after the server closed: %v, want nil", err)
	}
	waitNoSubscribers(t, &bus)
}

func TestEventsClientLeaves(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	ctx, cancel := context.WithCancel(t.Context())
	err := Events(ctx, path, func(e Event) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Events: %v, want context.Canceled", err)
	}
	errStop := errors.New("enough")
	if err := Events(t.Context(), path, func(Event) error { return errStop }); err != errStop {
		t.Errorf("Events: %v, want fn's error", err)
	}
	// The server notices both clients left and unsubscribes them.
	waitNoSubscribers(t, &bus)
}

func waitNoSubscribers(t *testing.T, b *Broadcaster) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.subscribers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions left", b.subscribers())
		}
		time.Sleep(time.Millisecond) // poll, with a deadline
	}
}

func TestEventsWithoutBroadcaster(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	err := Events(t.Context(), path, func(Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "publishes no events") {
		t.Errorf("Events: %v", err)
	}
}

func TestCallUnreachable(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := Call(t.Context(), path, Request{Cmd: CmdStatus})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Call: %v, want ENOENT naming the path", err)
	}
}

// TestPeerCred runs a client as uid 65534 against a socket opened to
// everyone: the server must still refuse it, by its SO_PEERCRED.
func TestPeerCred(t *testing.T) {
	checkLeaks(t)
	t.Run("other uid refused", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("skipped: starting a client as uid 65534 takes root, and this test runs as uid", os.Geteuid())
		}
		var calls atomic.Int32
		h := HandlerFunc(func(context.Context, Request) Response { calls.Add(1); return Response{OK: true} })
		// A directory, socket and test binary that uid 65534 can reach.
		dir, exe := nobodyDir(t)
		_, path := serveAt(t, filepath.Join(dir, "ctl.sock"), h, nil)
		if err := os.Chmod(path, 0o666); err != nil { // this test only
			t.Fatal(err)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper: %v; stderr: %s", err, stderr.String())
		}
		r := decodeResponse(t, string(out))
		if want := "control: permission denied: peer uid 65534"; r.OK || r.Error != want {
			t.Errorf("answer %+v, want error %q", r, want)
		}
		if calls.Load() != 0 {
			t.Error("the refused request reached the Handler")
		}
	})
	t.Run("same uid served", func(t *testing.T) {
		_, path := serve(t, statusHandler(testStatus), nil)
		if r, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); err != nil || !r.OK {
			t.Errorf("%+v, %v", r, err)
		}
	})
}

// copyFile copies the running test binary to dst, mode 0755.
func copyFile(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
