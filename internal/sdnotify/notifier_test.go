package sdnotify_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/sdnotify"
)

const deadline = 5 * time.Second

// unsetenv clears k for the rest of the test and restores it afterwards.
func unsetenv(t *testing.T, k string) {
	t.Helper()
	t.Setenv(k, "")
	os.Unsetenv(k)
}

// clearEnv gives each test the environment of a process not started by
// systemd, even when the test binary itself runs under a unit.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		unsetenv(t, k)
	}
}

// listenPath plays systemd: a unixgram socket in a temporary directory.
// t.TempDir removes the socket file with the directory.
func listenPath(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	return listen(t, path), path
}

var abstractSeq atomic.Int64

// listenAbstract plays systemd on an abstract socket, which has no file to
// clean up and vanishes when closed.
func listenAbstract(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	name := fmt.Sprintf("@prefork-sdnotify-test-%d-%d", os.Getpid(), abstractSeq.Add(1))
	return listen(t, name), name
}

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv returns the next datagram, failing the test if none arrives in time.
func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("receive notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsOneDatagram(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(*testing.T) (*net.UnixConn, string)
	}{
		{"path", listenPath},
		{"abstract", listenAbstract},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			c, addr := tc.listen(t)
			t.Setenv("NOTIFY_SOCKET", addr)
			n := sdnotify.New()
			if !n.Enabled() {
				t.Fatalf("Enabled() = false with NOTIFY_SOCKET=%q", addr)
			}
			for _, step := range []struct {
				call func() error
				want string
			}{
				{func() error { return n.Ready("4 workers ready") }, "READY=1\nSTATUS=4 workers ready"},
				{func() error { return n.Ready("") }, "READY=1"},
				{func() error { return n.Status("draining generation 3") }, "STATUS=draining generation 3"},
				{func() error { return n.Stopping() }, "STOPPING=1"},
				{func() error { return n.Notify("READY=1", "STATUS=a", "MAINPID=1") }, "READY=1\nSTATUS=a\nMAINPID=1"},
			} {
				if err := step.call(); err != nil {
					t.Fatalf("notify %q: %v", step.want, err)
				}
				if have := recv(t, c); have != step.want {
					t.Errorf("want %q, have %q", step.want, have)
				}
			}
		})
	}
}

func monotonicUsec(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	clearEnv(t)
	c, addr := listenPath(t)
	t.Setenv("NOTIFY_SOCKET", addr)
	n := sdnotify.New()

	before := monotonicUsec(t)
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)

	have := recv(t, c)
	lines := strings.Split(have, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("want RELOADING=1\\nMONOTONIC_USEC=<n>, have %q", have)
	}
	usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC: %v", err)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d outside CLOCK_MONOTONIC window [%d, %d]", usec, before, after)
	}
}

func TestDisabledIsNoop(t *testing.T) {
	clearEnv(t)
	// A watchdog without a socket to report to is no watchdog.
	t.Setenv("WATCHDOG_USEC", "1000")

	for name, n := range map[string]*sdnotify.Notifier{
		"New":  sdnotify.New(),
		"zero": {},
		"nil":  nil,
	} {
		t.Run(name, func(t *testing.T) {
			if n.Enabled() {
				t.Error("Enabled() = true without NOTIFY_SOCKET")
			}
			for what, err := range map[string]error{
				"Notify":    n.Notify("READY=1"),
				"Ready":     n.Ready("x"),
				"Reloading": n.Reloading(),
				"Stopping":  n.Stopping(),
				"Status":    n.Status("x"),
			} {
				if err != nil {
					t.Errorf("%s: want nil, have %v", what, err)
				}
			}
			if have := n.WatchdogInterval(); have != 0 {
				t.Errorf("WatchdogInterval: want 0, have %v", have)
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	clearEnv(t)

	t.Setenv("NOTIFY_SOCKET", "vsock:2:4242")
	err := sdnotify.New().Ready("")
	if !errors.Is(err, sdnotify.ErrUnsupportedSocket) {
		t.Errorf("vsock address: want ErrUnsupportedSocket, have %v", err)
	}

	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens.sock"))
	err = sdnotify.New().Ready("")
	if err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") {
		t.Errorf("missing socket: want an sdnotify: error, have %v", err)
	}
}

// TestNotifyNeverWaits: a receiver that does not read (systemd busy, or a
// test that reads only at the end) fills its queue; Notify must then drop
// and count, not wait, as the supervisor's owner loop calls it.
func TestNotifyNeverWaits(t *testing.T) {
	clearEnv(t)
	c, addr := listenPath(t)
	t.Setenv("NOTIFY_SOCKET", addr)
	n := sdnotify.New()

	const tries = 10000 // far past any queue: the kernel's default holds tens
	done := make(chan error, 1)
	go func() {
		for i := 0; i < tries; i++ {
			if err := n.Notify("WATCHDOG=1"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if !errors.Is(err, sdnotify.ErrQueueFull) {
			t.Fatalf("%d notifications to a receiver that does not read: want ErrQueueFull, have %v", tries, err)
		}
	case <-time.After(deadline):
		t.Fatal("Notify waited on a receiver whose queue is full")
	}
	if d := n.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d, want 1", d)
	}
	// What was queued is intact, and once the receiver reads, room is
	// made and notifications pass again.
	if have := recv(t, c); have != "WATCHDOG=1" {
		t.Errorf("first queued datagram %q, want WATCHDOG=1", have)
	}
	if err := n.Notify("STATUS=again"); err != nil {
		t.Errorf("Notify after the receiver read: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getpid() + 1)
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"", self, 0},
		{"30000000", "", 15 * time.Second},
		{"30000000", self, 15 * time.Second},
		{"30000000", other, 0},
		{"30000000", "not-a-pid", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"30s", "", 0},
	} {
		clearEnv(t)
		t.Setenv("NOTIFY_SOCKET", "@prefork-sdnotify-test-unused")
		if tc.usec != "" {
			t.Setenv("WATCHDOG_USEC", tc.usec)
		}
		if tc.pid != "" {
			t.Setenv("WATCHDOG_PID", tc.pid)
		}
		if have := sdnotify.New().WatchdogInterval(); have != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: want %v, have %v", tc.usec, tc.pid, tc.want, have)
		}
	}
}

// A watchdog meant for another process (WATCHDOG_PID) does not apply.
func TestWatchdogForAnotherProcess(t *testing.T) {
	clearEnv(t)
	_, addr := listenAbstract(t)
	t.Setenv("NOTIFY_SOCKET", addr)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if have := sdnotify.New().WatchdogInterval(); have != 0 {
		t.Fatalf("WatchdogInterval: want 0, have %v", have)
	}
}

func TestUnsetenv(t *testing.T) {
	clearEnv(t)
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "1")
	t.Setenv("PREFORK_UNRELATED", "kept")

	n := sdnotify.New()
	sdnotify.Unsetenv()

	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set after Unsetenv", k, v)
		}
	}
	if os.Getenv("PREFORK_UNRELATED") != "kept" {
		t.Error("Unsetenv removed an unrelated variable")
	}
	if !n.Enabled() {
		t.Error("Unsetenv disabled a Notifier built before it")
	}
}
