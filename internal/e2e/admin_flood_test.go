package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// Dashboard event streams under a message flood (issue 20, defect 5): 300
// event stream clients that never read, and Node workers sending 600
// messages of 32 KiB. The supervisor encodes each event once for all of
// them and bounds what waits for each, so the clients add little to what
// the same flood costs without them: memory, CPU and the time `ctl
// status` takes. Before, each event was encoded once per client: the
// clients added about 90 MiB of RSS and 4 s of CPU, and status stalled
// for seconds.
//
// The flood runs on two supervisors, one with no stream client and one
// with 300, so that what the Node message path itself costs (the same in
// both) is not counted, nor the load of the machine.
//
// Both are built without -race: the race runtime multiplies the heap and
// CPU it instruments, and its per-goroutine state grows with the number of
// goroutines, so the 300 clients' goroutines alone made a race-built
// supervisor's RSS grow 122 MiB more (and use 1.5 s more CPU) where the
// binary as shipped grows 4 MiB more (0.26 s). The hub's code is run under
// the race detector by the admin package's tests and the other e2e tests.
func TestAdminEventFlood(t *testing.T) {
	bin, err := proctest.Build("./cmd/supervisor")
	if err != nil {
		t.Fatal(err)
	}
	alone := floodWith(t, bin, 0, nil)
	t.Logf("no stream client: %v", alone)
	// An idle supervisor, asked for its status at the same moments as the
	// flooded one, tells a stall of the machine (load from elsewhere:
	// every process waits) from one of the flooded supervisor.
	idle := startBin(t, bin, "-workers", "1", "--", workerBin)
	with := floodWith(t, bin, 300, idle)
	t.Logf("300 stream clients not reading: %v", with)
	if with.slow > 0 {
		t.Errorf("ctl status took over %v %d times of %d during the flood while an idle supervisor answered within %v: slowest %v",
			statusBound, with.slow, with.calls, machineStall, with.worstOwn)
	}
	if extra := (with.peak - with.rss) - (alone.peak - alone.rss); extra > 32<<20 {
		t.Errorf("the stream clients added %d MiB to the supervisor's RSS growth, want at most 32 MiB", extra>>20)
	}
	if extra := with.cpu - alone.cpu; extra > time.Second {
		t.Errorf("the stream clients cost the supervisor %v more CPU, want at most 1s", extra)
	}
}

// statusBound is how long `ctl status` may take during a flood (issue 20,
// defect 5); machineStall, how long the idle supervisor's may take for
// the flooded one's to count (above it, the machine stalled both).
const statusBound, machineStall = 100 * time.Millisecond, 50 * time.Millisecond

// floodWith starts bin, a supervisor of Node workers, with clients event
// stream clients that never read, and floods it.
func floodWith(t *testing.T, bin string, clients int, idle *sup) flooding {
	node := need(t, "node", "nodejs (Node.js 20 or later)")
	app, err := filepath.Abs(filepath.Join("testdata", "flood.js"))
	if err != nil {
		t.Fatal(err)
	}
	admin := proctest.FreeAddr(t)
	s := startBin(t, bin, "-workers", "2", "-mode", "shared", "-admin", admin, "--", node, app)
	defer s.cleanup()
	sup := s.PID()
	// Clients that send their request and never read: a receive buffer
	// of a few KiB fills at once.
	before := sockets(t, sup)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4 << 10)
		conns = append(conns, c)
		if _, err := io.WriteString(c, "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	proctest.Eventually(t, 10*time.Second, fmt.Sprintf("%d stream clients connected", clients), func() bool {
		return sockets(t, sup) >= before+clients
	})
	return flood(t, s, idle)
}

// flooding is what one flood cost the supervisor.
type flooding struct {
	messages int           // message events the harness recorded so far
	rss      int64         // RSS before
	peak     int64         // and at most during the flood
	cpu      time.Duration // CPU time the supervisor spent
	worst    time.Duration // the slowest ctl status
	// With an idle supervisor asked at the same moments: status calls,
	// those over statusBound while the idle one answered within
	// machineStall, and the slowest of those; stalls of the machine.
	calls, slow int
	worstOwn    time.Duration
	stalls      int
}

func (f flooding) String() string {
	return fmt.Sprintf("RSS %d MiB before, peak %d MiB; CPU %v; slowest ctl status %v (%d calls; over %v with the idle supervisor quick: %d; machine stalls: %d); %d messages recorded",
		f.rss>>20, f.peak>>20, f.cpu, f.worst, f.calls, statusBound, f.slow, f.stalls, f.messages)
}

// flood has the workers send 600 messages of 32 KiB, in 6 requests, and
// asks for the status every 20ms until they are all sent and nothing was
// published for a second; idle's too, at the same moments, unless nil.
func flood(t *testing.T, s *sup, idle *sup) flooding {
	t.Helper()
	const messages, kib = 600, 32
	sup := s.PID()
	f := flooding{rss: rss(t, sup)}
	f.peak = f.rss
	cpu0 := cpuTicks(t, sup)
	done := make(chan struct{})
	go func() {
		defer close(done)
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for range messages / 100 {
			resp, err := hc.Get(fmt.Sprintf("http://%s/flood?n=100&kib=%d", s.addr, kib))
			if err != nil {
				t.Errorf("flood: %v", err)
				return
			}
			resp.Body.Close()
		}
	}()
	defer func() { <-done }()
	// The flood is over once the workers have sent everything (their
	// answers) and the supervisor has published nothing for a second.
	published := func() int { return s.events.Count() }
	deadline := time.Now().Add(60 * time.Second)
	last, quiet := published(), time.Now()
	sent := false
	var idleAsked chan time.Duration
	for !sent || time.Since(quiet) < time.Second {
		if time.Now().After(deadline) {
			t.Fatal("the flood did not end within 60s")
		}
		if idle != nil {
			idleAsked = make(chan time.Duration, 1)
			go func() { idleAsked <- statusTook(t, idle) }()
		}
		took, idleTook := statusTook(t, s), time.Duration(0)
		if idle != nil {
			idleTook = <-idleAsked
		}
		f.worst = max(f.worst, took)
		if idle != nil {
			f.calls++
			switch {
			case idleTook > machineStall:
				f.stalls++
			case took > statusBound:
				f.slow++
				f.worstOwn = max(f.worstOwn, took)
			}
		}
		f.peak = max(f.peak, rss(t, sup))
		if n := published(); n != last {
			last, quiet = n, time.Now()
		}
		select {
		case <-done:
			sent = true
		default:
		}
		time.Sleep(20 * time.Millisecond) // a status every 20ms, not a busy loop
	}
	f.cpu = time.Duration(cpuTicks(t, sup)-cpu0) * time.Second / 100 // USER_HZ
	f.messages = len(s.events.All(control.EventMessage))
	return f
}

// statusTook is how long `ctl status` took s.
func statusTook(t *testing.T, s *sup) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begun := time.Now()
	resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdStatus})
	took := time.Since(begun)
	if err != nil || !resp.OK {
		t.Errorf("ctl status: %v %+v", err, resp)
	}
	return took
}

// rss is pid's resident set size in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.RSSPages * int64(os.Getpagesize())
}

// cpuTicks is the CPU time pid has used, in clock ticks.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.CPUTicks()
}

// sockets counts pid's descriptors that are sockets.
func sockets(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
