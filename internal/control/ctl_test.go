package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// ctlRun runs `supervisor ctl args...` and returns its exit status and output.
func ctlRun(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runCtl(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCtlStatusTable(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	code, out, errOut := ctlRun(t, t.Context(), "-control", path, "status")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := `supervisor pid=4242 listen=:3000 mode=rr generation=3 uptime=1h2m3s workers=2
SLOT  PID   GEN  STATE     UPTIME  RESTARTS  CONNS  REQUESTS  REQ/S  P50     P99     RSS      CPU%  BEAT
0     4243  3    ready     1h2m3s  0         12     34567     812.4  0.42ms  12.3ms  12.3MiB  1.5   0.4s ago
1     4250  3    starting  4.2s    2         0      0         0.0    -       -       -        0.0   -
`
	if out != want {
		t.Errorf("have\n%s\nwant\n%s", out, want)
	}
}

func TestCtlStatusJSON(t *testing.T) {
	checkLeaks(t)
	_, path := serve(t, statusHandler(testStatus), nil)
	code, out, _ := ctlRun(t, t.Context(), "status", "-json", "-control", path) // flags after the command too
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var have Status
	if err := json.Unmarshal([]byte(out), &have); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if !reflect.DeepEqual(&have, testStatus) {
		t.Errorf("have %+v\nwant %+v", have, testStatus)
	}
	if !strings.Contains(out, "\n  \"pid\": 4242,") {
		t.Errorf("not indented: %s", out)
	}
}

func TestCtlActions(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var got []Request
	_, path := serve(t, HandlerFunc(func(_ context.Context, req Request) Response {
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		switch req.Cmd {
		case CmdReload:
			return Response{Error: "reload: workers are still starting"}
		case CmdScale:
			return Response{OK: true, Message: "scaled from 2 to 4 workers in 310ms"}
		}
		return Response{OK: true}
	}), nil)

	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"reload"}, 1, "", "ctl: reload: workers are still starting\n"},
		{[]string{"scale", "4"}, 0, "scaled from 2 to 4 workers in 310ms\n", ""},
		{[]string{"stop"}, 0, "stop: done\n", ""},
		{[]string{"-json", "reload"}, 1, "{\n  \"ok\": false,\n  \"error\": \"reload: workers are still starting\"\n}\n", "ctl: reload: workers are still starting\n"},
		{[]string{"-json", "scale", "4"}, 0, "{\n  \"ok\": true,\n  \"message\": \"scaled from 2 to 4 workers in 310ms\"\n}\n", ""},
	} {
		code, out, errOut := ctlRun(t, t.Context(), append([]string{"-control", path}, tc.args...)...)
		if code != tc.code || out != tc.stdout || errOut != tc.stderr {
			t.Errorf("ctl %v: exit %d, stdout %q, stderr %q; want %d, %q, %q",
				tc.args, code, out, errOut, tc.code, tc.stdout, tc.stderr)
		}
	}
	want := []Request{{Cmd: CmdReload}, {Cmd: CmdScale, N: 4}, {Cmd: CmdStop}, {Cmd: CmdReload}, {Cmd: CmdScale, N: 4}}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("handler got %+v, want %+v", got, want)
	}
}

func TestCtlUsageErrors(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		args []string
		want string // the bad argument, named in the message
	}{
		{nil, "missing command"},
		{[]string{"-json"}, "missing command"},
		{[]string{"frob"}, `"frob"`},
		{[]string{"scale"}, "scale needs a worker count"},
		{[]string{"scale", "x"}, `"x"`},
		{[]string{"scale", "0"}, `"0"`},
		{[]string{"scale", "-1"}, `"-1"`},
		{[]string{"scale", "2.5"}, `"2.5"`},
		{[]string{"scale", "4", "5"}, `"5"`},
		{[]string{"status", "now"}, `"now"`},
		{[]string{"-bogus", "status"}, "-bogus"},
		{[]string{"status", "--verbose"}, "-verbose"},
		{[]string{"-timeout", "soon", "reload"}, `"soon"`},
		{[]string{"-timeout", "0s", "reload"}, "-timeout"},
		{[]string{"-control"}, "-control"},
	} {
		code, out, errOut := ctlRun(t, t.Context(), tc.args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "ctl: ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("ctl %q: exit %d, stdout %q, stderr %q; want 2 and a message with %s", tc.args, code, out, errOut, tc.want)
		}
	}
	code, _, errOut := ctlRun(t, t.Context(), "-h")
	if code != 0 || !strings.Contains(errOut, "usage: supervisor ctl") {
		t.Errorf("-h: exit %d, stderr %q", code, errOut)
	}
}

func TestCtlUnreachable(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for _, tc := range []struct{ path, want string }{
		{missing, "connect: no such file or directory"},
		{stale, "connect: connection refused"},
	} {
		for _, cmd := range [][]string{{"status"}, {"reload"}, {"events"}} {
			code, out, errOut := ctlRun(t, t.Context(), append([]string{"-control", tc.path}, cmd...)...)
			if code != 1 || out != "" || !strings.Contains(errOut, tc.path) || !strings.Contains(errOut, tc.want) {
				t.Errorf("ctl %s at %s: exit %d, stdout %q, stderr %q; want 1 naming the path and %q",
					cmd, tc.path, code, out, errOut, tc.want)
			}
		}
	}
}

func TestCtlTimeoutCancelsRequest(t *testing.T) {
	checkLeaks(t)
	h := newBlockingHandler()
	_, path := serve(t, h, nil)
	code, _, errOut := ctlRun(t, t.Context(), "-control", path, "-timeout", "50ms", "reload")
	if code != 1 || !strings.Contains(errOut, "no answer from the supervisor within 50ms") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	recv(t, h.entered, "reload call")
	if err := recv(t, h.exited, "end of Do"); !errors.Is(err, context.Canceled) {
		t.Errorf("Do's ctx ended with %v, want context.Canceled", err)
	}
}

// lineWriter passes each line written to it on a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // incomplete: keep it
			return len(p), nil
		}
		w.lines <- line
	}
}

func TestCtlEvents(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	ctx, interrupt := context.WithCancel(t.Context()) // as SIGINT does
	out := &lineWriter{lines: make(chan string, 100)}
	var errOut bytes.Buffer
	exited := make(chan int, 1)
	go func() { exited <- runCtl(ctx, []string{"-control", path, "events"}, out, &errOut) }()

	if line := recv(t, out.lines, "subscribed line"); !strings.HasPrefix(line, `{"event":"subscribed","time":"`) {
		t.Fatalf("first line %q", line)
	}
	bus.Publish(Event{Kind: EventFork, Time: "T1", Slot: 1, PID: 4243, Generation: 1, Cause: CauseStart})
	bus.Publish(Event{Kind: EventExit, Time: "T2", Slot: 1, PID: 4243, Generation: 1, Reason: CauseCrash, Code: 2})
	for _, want := range []string{
		`{"event":"fork","time":"T1","cause":"start","generation":1,"pid":4243,"slot":1}` + "\n",
		`{"event":"exit","time":"T2","code":2,"generation":1,"pid":4243,"reason":"crash","slot":1}` + "\n",
	} {
		if line := recv(t, out.lines, "event line"); line != want {
			t.Errorf("have %q\nwant %q", line, want)
		}
	}
	interrupt()
	if code := recv(t, exited, "ctl events to exit"); code != 0 || errOut.Len() != 0 {
		t.Errorf("exit %d, stderr %q; want 0", code, errOut.String())
	}
}

func TestCtlEventsLostEventsAddUp(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	const n = 10000
	subscribed := make(chan struct{})
	published := make(chan struct{})
	total, drops := 0, 0
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err := Events(ctx, path, func(e Event) error {
		switch e.Kind {
		case EventSubscribed:
			close(subscribed)
			go func() { // while this client does not read
				defer close(published)
				for i := range n {
					bus.Publish(Event{Kind: EventFork, PID: i})
				}
			}()
			recv(t, published, "end of Publish calls while the client does not read")
		case EventFork:
			total++
		case EventDropped:
			total += e.Count
			drops++
		}
		if total == n {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Events: %v, with %d of %d events accounted for", err, total, n)
	}
	if drops == 0 {
		t.Error("no event was dropped: the test did not overrun the buffers")
	}
	t.Logf("%d dropped notices", drops)
}

func TestCtlEventsEndsWithSupervisor(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	s, path := serve(t, statusHandler(testStatus), &bus)
	out := &lineWriter{lines: make(chan string, 100)}
	var errOut bytes.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- runCtl(context.Background(), []string{"-control", path, "-json", "events"}, out, &errOut)
	}()
	recv(t, out.lines, "subscribed line")
	s.Close()
	if code := recv(t, exited, "ctl events to exit"); code != 0 || !strings.Contains(errOut.String(), "ended the stream") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestCtlEventsTimeout(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	start := time.Now()
	code, out, errOut := ctlRun(t, t.Context(), "-control", path, "-timeout", "100ms", "events")
	if code != 0 || !strings.Contains(out, `"subscribed"`) || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("returned after %v", d)
	}
}

func TestDefaultPath(t *testing.T) {
	tmp := fmt.Sprintf("/tmp/prefork-%d/", os.Geteuid())
	for _, tc := range []struct{ xdg, addr, want string }{
		{"", ":3000", tmp + "3000.sock"},
		{"", "0.0.0.0:3000", tmp + "3000.sock"},
		{"", "[::]:3000", tmp + "3000.sock"},
		{"", "127.0.0.1:3000", tmp + "127.0.0.1-3000.sock"},
		{"", "[::1]:8080", tmp + "::1-8080.sock"},
		{"", "[fe80::1%eth0]:80", tmp + "fe80::1_eth0-80.sock"},
		{"", "localhost:3000", tmp + "localhost-3000.sock"},
		{"/run/user/1000", ":3000", "/run/user/1000/prefork/3000.sock"},
		{"/run/user/1000", "10.0.0.5:443", "/run/user/1000/prefork/10.0.0.5-443.sock"},
	} {
		t.Setenv("XDG_RUNTIME_DIR", tc.xdg)
		if have := DefaultPath(tc.addr); have != tc.want {
			t.Errorf("XDG_RUNTIME_DIR=%q DefaultPath(%q) = %q, want %q", tc.xdg, tc.addr, have, tc.want)
		}
	}
}

func TestCtlDefaultPathFromListen(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	serveAt(t, DefaultPath("127.0.0.1:4100"), statusHandler(testStatus), nil)
	if code, _, errOut := ctlRun(t, t.Context(), "-listen", "127.0.0.1:4100", "status"); code != 0 {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	code, _, errOut := ctlRun(t, t.Context(), "status") // :3000
	if want := filepath.Join(dir, "prefork", "3000.sock"); code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 naming %s", code, errOut, want)
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct {
		s    float64
		want string
	}{{-1, "-"}, {0, "0.0s"}, {4.24, "4.2s"}, {59.94, "59.9s"}, {60, "1m0s"}, {3723.9, "1h2m3s"}, {1e12, "1000000000000s"}} {
		if have := seconds(tc.s); have != tc.want {
			t.Errorf("seconds(%v) = %q, want %q", tc.s, have, tc.want)
		}
	}
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "-"}, {512, "512B"}, {1536, "1.5KiB"}, {12897485, "12.3MiB"}, {3 << 30, "3.0GiB"}} {
		if have := bytesIEC(tc.n); have != tc.want {
			t.Errorf("bytesIEC(%d) = %q, want %q", tc.n, have, tc.want)
		}
	}
}

// TestCtlEventsInterrupt runs `ctl events` as a process and interrupts it
// as an operator's Ctrl-C does.
func TestCtlEventsInterrupt(t *testing.T) {
	checkLeaks(t)
	var bus Broadcaster
	_, path := serve(t, statusHandler(testStatus), &bus)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-control", path, "events")
	cmd.Env = append(os.Environ(), ctlEnv+"=1")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"subscribed"`) {
		t.Fatalf("first line %q, %v; stderr %q", lines.Text(), lines.Err(), errOut.String())
	}
	bus.Publish(Event{Kind: EventRespawn, Slot: 2})
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), `{"event":"respawn","time":"`) {
		t.Fatalf("second line %q, %v", lines.Text(), lines.Err())
	}
	cmd.Process.Signal(os.Interrupt)
	if lines.Scan() {
		t.Errorf("unexpected line %q", lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("ctl events after SIGINT: %v, want exit 0; stderr %q", err, errOut.String())
	}
}

func TestTrustServer(t *testing.T) {
	for _, tc := range []struct {
		uid, self int
		ok        bool
	}{{1000, 1000, true}, {0, 1000, true}, {0, 0, true}, {1001, 1000, false}, {1000, 0, false}} {
		err := trustServer(tc.uid, tc.self)
		if (err == nil) != tc.ok || !tc.ok && (!errors.Is(err, ErrUntrustedServer) || !strings.Contains(err.Error(), fmt.Sprintf("uid %d,", tc.uid))) {
			t.Errorf("trustServer(%d, %d) = %v, want ok=%v and an error naming uid %d", tc.uid, tc.self, err, tc.ok, tc.uid)
		}
	}
}

// TestCtlRefusesServerOfAnotherUser runs a server as uid 65534 on a path
// ctl is told to use: ctl must not send it a request nor print its answer.
func TestCtlRefusesServerOfAnotherUser(t *testing.T) {
	checkLeaks(t)
	if os.Geteuid() != 0 {
		t.Skip("skipped: starting a server as uid 65534 takes root, and this test runs as uid", os.Geteuid())
	}
	dir, exe := nobodyDir(t)
	path := filepath.Join(dir, "ctl.sock")
	var errOut bytes.Buffer
	h := startHelper(t, exe, serveEnv+"="+path, nobody, &errOut)
	defer h.stop(t, "served: <nil>")
	h.expect(t, "ready")

	code, out, stderr := ctlRun(t, t.Context(), "-control", path, "status")
	if code != 1 || out != "" || !strings.Contains(stderr, "uid 65534") || !strings.Contains(stderr, "runs as another user") {
		t.Errorf("ctl status: exit %d, stdout %q, stderr %q; want 1 and an error naming uid 65534", code, out, stderr)
	}
	if _, err := Call(t.Context(), path, Request{Cmd: CmdStatus}); !errors.Is(err, ErrUntrustedServer) {
		t.Errorf("Call: %v, want ErrUntrustedServer", err)
	}
	if err := Events(t.Context(), path, func(Event) error { return nil }); !errors.Is(err, ErrUntrustedServer) {
		t.Errorf("Events: %v, want ErrUntrustedServer", err)
	}
}

// A hostile supervisor, or a worker's message relayed by it, must not reach
// the terminal with its control characters.
func TestCtlEscapesWhatTheServerSays(t *testing.T) {
	checkLeaks(t)
	const evil = "\x1b]0;pwned\x07\x1b[2J\u009b31m\x7f\xc2\nctl: fake line\t"
	st := &Status{Mode: evil, Listen: evil, Workers: []WorkerStatus{{State: State(evil)}}}
	var bus Broadcaster
	_, path := serve(t, HandlerFunc(func(_ context.Context, req Request) Response {
		switch req.Cmd {
		case CmdStatus:
			return Response{OK: true, Status: st}
		case CmdReload:
			return Response{Error: evil}
		}
		return Response{OK: true, Message: evil}
	}), &bus)
	for _, args := range [][]string{{"status"}, {"-json", "status"}, {"reload"}, {"-json", "reload"}, {"stop"}, {"-json", "stop"}} {
		_, out, errOut := ctlRun(t, t.Context(), append([]string{"-control", path}, args...)...)
		if out+errOut == "" || !strings.Contains(out+errOut, `\x1b]0;pwned\a\x1b[2J\u009b31m\x7f`) && !strings.Contains(out+errOut, `\u001b]0;pwned\u0007`) {
			t.Errorf("ctl %v: stdout %q, stderr %q; want the message, escaped", args, out, errOut)
		}
		checkPrintable(t, fmt.Sprint("ctl ", args), out)
		checkPrintable(t, fmt.Sprint("ctl ", args), errOut)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	lines := &lineWriter{lines: make(chan string, 100)}
	exited := make(chan int, 1)
	go func() { exited <- runCtl(ctx, []string{"-control", path, "events"}, lines, io.Discard) }()
	recv(t, lines.lines, "subscribed line")
	bus.Publish(Event{Kind: EventMessage, Msg: evil, Why: evil})
	line := recv(t, lines.lines, "event line")
	checkPrintable(t, "ctl events", line)
	if !strings.Contains(line, `\u001b]0;pwned\u0007\u001b[2J\u009b31m\u007f`+"\ufffd"+`\nctl: fake line\t`) {
		t.Errorf("event line %q lacks the escaped message", line)
	}
	cancel()
	recv(t, exited, "ctl events to exit")
}

// checkPrintable fails t if out has a control character other than the
// newline that ends each line, or invalid UTF-8.
func checkPrintable(t *testing.T, what, out string) {
	t.Helper()
	for i, line := range strings.SplitAfter(out, "\n") {
		line = strings.TrimSuffix(line, "\n")
		if !utf8.ValidString(line) || strings.ContainsFunc(line, unicode.IsControl) {
			t.Errorf("%s: line %d has a control character or invalid UTF-8: %q", what, i+1, line)
		}
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain ünïcode ✓", "plain ünïcode ✓"},
		{"a\x1b[31mb", `a\x1b[31mb`},
		{"line\nfake", `line\nfake`},
		{"tab\there", `tab\there`},
		{"del\x7f", `del\x7f`},
		{"csi\u009b", `csi\u009b`},
		{"raw c1 \x9b byte", `raw c1 \x9b byte`},
		{"cut \xe2\x9c", `cut \xe2\x9c`},
	} {
		if have := printable(tc.in); have != tc.want {
			t.Errorf("printable(%q) = %q, want %q", tc.in, have, tc.want)
		}
	}
	if have, want := string(printableJSON([]byte(`{"a":"x`+"\x7f\u0085\u009f"+`y","ü":1}`))), `{"a":"x\u007f\u0085\u009fy","ü":1}`; have != want {
		t.Errorf("printableJSON = %s, want %s", have, want)
	}
}
