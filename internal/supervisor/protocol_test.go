package supervisor

import (
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/ipc"
)

func withProtocol(proto string) func(*Config) {
	return func(c *Config) { c.WorkerProtocol, c.HangTimeout, c.Grace = proto, 3*time.Second, 10*time.Second }
}

// A plain worker is ready once started, gets the socket at fd 3 and no
// control channel, and is drained by SIGTERM, then SIGKILL after -grace.
func TestPlainReadyAtStartDrainBySignal(t *testing.T) {
	h := newHarness(t, withProtocol(ProtocolPlain))
	h.start(false)
	if h.s.phase != phaseRunning || h.readyCount() != 2 {
		t.Fatalf("phase %s with %d ready, want running with 2 ready right after the spawns", h.s.phase, h.readyCount())
	}
	p := h.cur(1)
	cmd := h.fake(p).cmd
	if len(cmd.ExtraFiles) != 1 || h.fake(p).env(ipc.EnvControlFD) != "" || h.fake(p).env("NOTIFY_SOCKET") != "" {
		t.Fatalf("plain worker got %d extra files and env %v, want fd 3 only and no control or notify socket", len(cmd.ExtraFiles), cmd.Env)
	}
	if p.ctl != nil {
		t.Fatal("a plain worker has a control channel")
	}
	h.signal(syscall.SIGTERM)
	for _, p := range h.s.live {
		if !h.fake(p).got(syscall.SIGTERM) {
			t.Fatalf("worker %d got no SIGTERM on stop", p.pid)
		}
	}
	if h.fake(p).got(syscall.SIGKILL) {
		t.Fatal("killed at once, not drained")
	}
	h.exit(h.cur(2), 0)
	h.advance(10 * time.Second) // -grace
	if done, err := h.stopped(); !h.fake(p).got(syscall.SIGKILL) || !done || err != nil {
		t.Fatalf("stopped %v err %v, want the worker that outlived -grace killed and a clean stop", done, err)
	}
}

// A worker without heartbeats is not taken for hung; a systemd worker is
// watched from its first WATCHDOG=1 on.
func TestHangArmsAtFirstBeat(t *testing.T) {
	for _, proto := range []string{ProtocolPlain, ProtocolSystemd} {
		t.Run(proto, func(t *testing.T) {
			h := newHarness(t, withProtocol(proto))
			h.start(false)
			for _, sl := range h.s.slots {
				if sl.cur.state == control.StateStarting {
					h.ready(sl.cur)
				}
			}
			silent, beating := h.cur(1), h.cur(2)
			h.beat(beating, ipc.Heartbeat{})
			for range 5 {
				h.advance(time.Second)
				h.tick()
			}
			if h.fake(silent).got(syscall.SIGQUIT) || h.cur(1) != silent {
				t.Fatal("a worker that never sent a heartbeat was taken for hung")
			}
			if !h.fake(beating).got(syscall.SIGQUIT) {
				t.Fatal("a worker silent for -hang-timeout after a heartbeat was not taken for hung")
			}
		})
	}
}

// A systemd worker runs through the exec shim with the socket at fd 3 and
// LISTEN_FDS, and is ready when its notify socket says READY=1.
func TestSystemdNotify(t *testing.T) {
	h := newHarness(t, func(c *Config) { withProtocol(ProtocolSystemd)(c); c.Workers, c.Command = 1, []string{"true", "-x"} })
	// The fake worker has the test's pid, so that datagrams the test sends
	// carry the worker's credentials.
	h.sys.nextPID = os.Getpid() - 1
	h.start(false)
	p := h.cur(1)
	fp := h.fake(p)
	if fp.cmd.Path != "/proc/self/exe" || !slices.Equal(fp.cmd.Args[1:], []string{ShimCommand, "--", fp.cmd.Args[3], "true", "-x"}) || !strings.HasSuffix(fp.cmd.Args[3], "/true") {
		t.Fatalf("command %q %q, want the exec shim running the worker", fp.cmd.Path, fp.cmd.Args)
	}
	if fp.env("LISTEN_FDS") != "1" || fp.env("LISTEN_FDNAMES") != "http" || fp.env("WATCHDOG_USEC") != "3000000" || len(fp.cmd.ExtraFiles) != 1 {
		t.Fatalf("env %v with %d extra files, want the socket at fd 3 and LISTEN_FDS=1", fp.cmd.Env, len(fp.cmd.ExtraFiles))
	}
	addr := fp.env("NOTIFY_SOCKET")
	if !strings.HasPrefix(addr, "@prefork-") {
		t.Fatalf("NOTIFY_SOCKET=%q, want an abstract address", addr)
	}
	if p.state != control.StateStarting {
		t.Fatal("ready before READY=1")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(msg string) {
		t.Helper()
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send("STATUS=booting\nREADY=1")
	h.await("ready", func(ev any) bool { _, ok := ev.(evReady); return ok })
	if p.state != control.StateReady {
		t.Fatalf("state %s after READY=1, want ready", p.state)
	}
	if e := h.events(control.EventMessage); len(e) != 1 || e[0].Msg != "STATUS=booting" {
		t.Fatalf("message events %v, want STATUS=booting", e)
	}
	send("WATCHDOG=1")
	h.await("heartbeat", func(ev any) bool { _, ok := ev.(evBeat); return ok })
	if !p.watched {
		t.Fatal("WATCHDOG=1 did not arm hang detection")
	}
	// Protocol errors reach the owner at powers of two: the 1st, 2nd and
	// 4th of these.
	isProtocol := func(ev any) bool { _, ok := ev.(evProtocol); return ok }
	send("no assignment")
	h.await("protocol error 1", isProtocol)
	send("\xff=1")
	h.await("protocol error 2", isProtocol)
	send(strings.Repeat("x", maxNotify+1))
	send("=1")
	h.await("protocol error 4", isProtocol)
	if h.s.counts.protocol != 3 {
		t.Errorf("protocol errors reported %d times, want 3", h.s.counts.protocol)
	}
	h.signal(syscall.SIGTERM)
	if !fp.got(syscall.SIGTERM) {
		t.Fatal("stop sent no SIGTERM to a systemd worker")
	}
	h.exit(p, 0)
	if done, err := h.stopped(); !done || err != nil {
		t.Fatalf("stopped %v err %v, want a clean stop", done, err)
	}
	if _, err := conn.Write([]byte("READY=1")); err == nil {
		t.Error("the exited worker's notify socket still takes datagrams")
	}
}
