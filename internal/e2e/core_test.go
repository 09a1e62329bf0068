package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/probe"
	"github.com/prefork/prefork/internal/proctest"
)

var modes = []string{"rr", "shared", "reuseport"}

// TestAlternation: with round-robin, sequential new connections alternate
// between the two workers exactly, and never reach the supervisor itself.
func TestAlternation(t *testing.T) {
	s := startReady(t, "-workers", "2")
	pids := checkAlternation(t, s)
	kids := s.Children()
	for _, p := range pids[:2] {
		if p == s.PID() {
			t.Fatal("/pid answered with the supervisor's pid")
		}
		if !slices.Contains(kids, p) {
			t.Fatalf("pid %d is not a child of the supervisor (children %v)", p, kids)
		}
	}
}

// checkAlternation asks /pid 20 times, each on a new connection, and
// checks that the answers alternate between two pids, which it returns.
func checkAlternation(t *testing.T, s *sup) []int {
	t.Helper()
	var pids []int
	for range 20 {
		pid, err := s.pid()
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	for i := 2; i < len(pids); i++ {
		if pids[i] != pids[i-2] || pids[i] == pids[i-1] {
			t.Fatalf("pids do not alternate: %v", pids)
		}
	}
	return pids
}

// TestConcurrentEven: with round-robin, 16 concurrent clients opening a new
// connection per request spread within 5% of even, measured with the probe.
func TestConcurrentEven(t *testing.T) {
	for _, workers := range []int{2, 4} {
		t.Run(strconv.Itoa(workers), func(t *testing.T) {
			s := startReady(t, "-workers", strconv.Itoa(workers))
			res, err := probe.Run(context.Background(), probe.Options{URL: s.url("/pid"), Requests: 800 * workers, Concurrency: 16, Duration: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed > 0 || len(res.Counts) != workers {
				t.Fatalf("%d failed, %d pids: %v %v", res.Failed, len(res.Counts), res.Counts, res.Failures)
			}
			if r := res.MaxMinRatio(); r > 1.05 {
				t.Fatalf("max/min %.3f > 1.05: %v", r, res.Counts)
			}
		})
	}
}

// TestOneCPUEven: a supervisor confined to one CPU (as under taskset or a
// one-CPU cpuset) gives each burst of connections accepted together to one
// worker; over many bursts the spread stays within 10% of even, and every
// request is served.
func TestOneCPUEven(t *testing.T) {
	taskset, err := osexec.LookPath("taskset")
	if err != nil {
		t.Fatal("taskset (util-linux) is needed to confine the supervisor to one CPU")
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !set.IsSet(cpu) {
		cpu++
	}
	s := startUnder(t, []string{taskset, "-c", strconv.Itoa(cpu)}, "-workers", "2")
	s.waitReady(10 * time.Second)
	for _, pid := range s.Children() {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if want := "Cpus_allowed_list:\t" + strconv.Itoa(cpu) + "\n"; !strings.Contains(string(status), want) {
			t.Fatalf("worker %d is not confined to CPU %d", pid, cpu)
		}
	}
	res, err := probe.Run(context.Background(), probe.Options{URL: s.url("/pid"), Requests: 3200, Concurrency: 16, Duration: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed > 0 || len(res.Counts) != 2 {
		t.Fatalf("%d failed, %d pids: %v %v", res.Failed, len(res.Counts), res.Counts, res.Failures)
	}
	r := res.MaxMinRatio()
	if r > 1.10 {
		t.Fatalf("max/min %.3f > 1.10: %v", r, res.Counts)
	}
	t.Logf("max/min %.3f: %v", r, res.Counts)
}

// TestClientAddress: handlers see the client's own address in every mode.
// In rr mode it comes with the connection in the handoff frame (the
// supervisor offers the feature, the worker takes it in its ready frame;
// hand-back is offered in rr only),
// and a connection read back from a dead worker still gets it from the
// kernel; that path is unit-tested in cluster.
func TestClientAddress(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode)
			// Each worker takes every feature the supervisor offers: all
			// of them in rr, all but hand-back in the other modes, where
			// the worker has no channel of its own for connections to go
			// back on (the kernel hands it its connections). Listener
			// indexes are offered only when there are several listeners.
			want := ipc.Supported &^ ipc.FeatureListeners
			if mode != "rr" {
				want &^= ipc.FeatureHandBack
			}
			st := s.status()
			if len(st.Workers) != 2 {
				t.Fatalf("%d workers, want 2", len(st.Workers))
			}
			for _, w := range st.Workers {
				if want, have := want.String(), w.Features; want != have {
					t.Fatalf("worker %d: features %q, want %q", w.PID, have, want)
				}
			}
			for range 4 { // both workers, twice
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(c, "GET /ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					c.Close()
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want, have := c.LocalAddr().String(), string(body); resp.StatusCode != 200 || want != have {
					t.Fatalf("/ip: want 200 %q, have %d %q", want, resp.StatusCode, have)
				}
			}
		})
	}
}

// TestHealthAndRoutes checks the demo worker's routes through the
// supervisor, in every mode.
func TestHealthAndRoutes(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode)
			code, body, err := s.get("/health")
			if err != nil || code != 200 {
				t.Fatalf("/health: %d %v", code, err)
			}
			var h struct {
				Status  string   `json:"status"`
				PID     int      `json:"pid"`
				Worker  int      `json:"worker"`
				Mode    string   `json:"mode"`
				UptimeS *float64 `json:"uptime_s"`
			}
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				t.Fatalf("/health body %q: %v", body, err)
			}
			if h.Status != "ok" || h.PID == 0 || h.Worker < 1 || h.Worker > 2 || h.Mode != mode || h.UptimeS == nil {
				t.Fatalf("/health fields wrong: %s", body)
			}
			for pid := range s.waitPIDs(2) {
				if pid == s.PID() {
					t.Fatal("/pid answered with the supervisor's pid")
				}
			}
			if code, _, _ := s.get("/heavy?n=abc"); code != 400 {
				t.Fatalf("/heavy?n=abc: want 400, have %d", code)
			}
			if code, body, _ := s.get("/heavy?n=100"); code != 200 || !strings.Contains(body, `"primes":25`) {
				t.Fatalf("/heavy?n=100: %d %s", code, body)
			}
		})
	}
}

// TestKillRespawn: kill -9 of a worker gets a replacement in the same slot
// within a second, and requests sent meanwhile are all served but the one
// inside the killed worker, if the kill caught one there: a client sends
// sequential requests, each on a new connection, across the kill.
func TestKillRespawn(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode)
			_, portStr, _ := net.SplitHostPort(s.addr)
			serverPort, _ := strconv.Atoi(portStr)
			victim := s.status().Workers[0]
			slot, pid := victim.Slot, victim.PID

			l := startLoad(t, s.url("/pid"), 1, 5000, 20*time.Second)
			// Kill once the client is in its loop, not while its first
			// request may be the one inside the victim.
			l.waitOK(t, 1, 5*time.Second)
			// Stopped first, so that what it holds can be read before
			// it dies: a request it had taken is lost with it.
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			proctest.Eventually(t, 2*time.Second, "victim stopped", func() bool { return stopped(pid) })
			inside := clientPortsInside(pid, serverPort)
			killed := time.Now()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			e := s.waitEvent(2*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Int("slot") == slot && e.Int("pid") != pid })
			if d := e.At.Sub(killed); d > time.Second {
				t.Errorf("replacement ready after %s, want within 1s", d)
			}
			newPID := e.Int("pid")
			proctest.Eventually(t, 2*time.Second, "replacement serves /pid", func() bool {
				p, err := s.pid()
				return err == nil && p == newPID
			})
			l.finish()
			if l.ok.Load() == 0 {
				t.Fatal("client served nothing")
			}
			for _, f := range l.failures {
				if !inside[f.port] {
					t.Errorf("request from port %d failed during the respawn and was not inside the killed worker: %v", f.port, f.err)
				}
			}
			t.Logf("%d ok, %d failed inside the killed worker", l.ok.Load(), len(l.failures))
			if code, _, _ := s.get("/health"); code != 200 {
				t.Fatalf("/health after respawn: %d", code)
			}
		})
	}
}

// TestGracefulStop: SIGTERM during a slow request lets it finish with 200;
// the supervisor exits 0 after its workers, and the port is closed.
func TestGracefulStop(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mostly waits for its slow request
			s := startReady(t, "-workers", "2", "-mode", mode)
			s.stopDuringRequest(1500)
		})
	}
}

// TestStopRefusesNewConnections: once a stop begins, the port refuses new
// connections while the in-flight request finishes.
func TestStopRefusesNewConnections(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mostly waits for its slow request
			testStopRefuses(t, mode)
		})
	}
}

func testStopRefuses(t *testing.T, mode string) {
	s := startReady(t, "-workers", "1", "-mode", mode)
	conn, _ := s.slowRequest(s.Children(), 2000)
	s.Signal(syscall.SIGTERM)
	s.waitEvent(2*time.Second, control.EventDrain, func(e proctest.Event) bool { return e.Str("reason") == string(control.CauseStop) })
	proctest.Eventually(t, 2*time.Second, "port refuses", func() bool {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSecondSignalStopsAtOnce: a second SIGINT kills the workers without
// waiting for the grace period.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	s := startReady(t, "-workers", "1", "-grace", "60s")
	s.slowRequest(s.Children(), 30000)
	s.Signal(syscall.SIGINT)
	s.waitEvent(2*time.Second, control.EventDrain, func(e proctest.Event) bool { return e.Str("reason") == string(control.CauseStop) })
	s.Signal(syscall.SIGINT)
	start := time.Now()
	code := s.WaitExit(5 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("second SIGINT took %s", d)
	}
	if code == 0 {
		t.Fatal("forced stop exited 0; want non-zero")
	}
}

// TestSupervisorKilledNoOrphans: SIGKILL of the supervisor takes its workers
// with it within a second.
func TestSupervisorKilledNoOrphans(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode)
			workers := s.Children()
			if len(workers) != 2 {
				t.Fatalf("want 2 workers, have %v", workers)
			}
			s.Signal(syscall.SIGKILL)
			s.WaitExit(5 * time.Second)
			for _, pid := range workers {
				proctest.WaitGone(t, pid, time.Second)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-workers", "abc"}, "-workers"},
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-workers", "1025"}, "-workers"},
		{[]string{"-mode", "roundrobin"}, "-mode"},
		{[]string{"-listen", "nonsense"}, "-listen"},
		{[]string{"-listen", ":99999"}, "-listen"},
		{[]string{"-grace", "soon"}, "-grace"},
		{[]string{"-balance", "random"}, "-balance"},
		{[]string{"-no-such-flag"}, "-no-such-flag"},
		{[]string{"-hang-timeout", "500ms"}, "-hang-timeout"},
		{[]string{"-max-requests", "100", "-max-requests-jitter", "9223372036854775807"}, "-max-requests-jitter"},
		{[]string{"-max-rss", "20000000000G"}, "-max-rss"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := osexec.Command(supervisorBin, tc.args...)
			out, err := cmd.CombinedOutput()
			if code := exitCode(err); code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.flag) {
				t.Fatalf("want one line naming %s, have %q", tc.flag, out)
			}
		})
	}
}

func TestPortInUse(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { testPortInUse(t, mode) })
	}
}

func testPortInUse(t *testing.T, mode string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err := osexec.Command(supervisorBin, "-listen", ln.Addr().String(), "-workers", "1", "-mode", mode).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, out)
	}
	if !strings.Contains(string(out), "address already in use") {
		t.Fatalf("message lacks 'address already in use': %s", out)
	}
}

func TestMissingWorkerBinary(t *testing.T) {
	missing := t.TempDir() + "/no-such-worker"
	out, err := osexec.Command(supervisorBin, "-listen", proctest.FreeAddr(t), "-workers", "2", "--", missing).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, out)
	}
	if !strings.Contains(string(out), missing) {
		t.Fatalf("message does not name %s: %s", missing, out)
	}
}

// TestWorkerExitsAtBoot: a worker that exits before it is ready makes the
// supervisor exit 1 promptly, having spawned no more than one per slot.
func TestWorkerExitsAtBoot(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { testWorkerExitsAtBoot(t, mode) })
	}
}

func testWorkerExitsAtBoot(t *testing.T, mode string) {
	// Slot 2's worker is held until the supervisor has reacted to slot 1's,
	// so that the supervisor still runs (and streams events) meanwhile.
	hold := filepath.Join(t.TempDir(), "hold")
	s := startRole(t, "exit-at-boot", []string{"PREFORK_E2E_HOLD=" + hold}, "-workers", "2", "-mode", mode)
	start := time.Now()
	s.waitEvent(3*time.Second, control.EventExit, func(e proctest.Event) bool {
		return e.Int("slot") == 1 && e.Str("reason") == string(control.CauseCrash)
	})
	stop := s.waitEvent(3*time.Second, control.EventStop, nil)
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := s.WaitExit(5 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if d := stop.At.Sub(start); d > 3*time.Second {
		t.Fatalf("took %s to give up", d)
	}
	// The stream is ordered: whatever the supervisor did between slot 1's
	// exit and its stop was recorded.
	if n := len(s.events.All(control.EventRespawn)); n > 0 {
		t.Fatalf("%d respawns before the first workers were ready: a respawn storm", n)
	}
	for _, e := range s.events.All(control.EventFork) {
		if e.Str("cause") != string(control.CauseStart) {
			t.Fatalf("a spawn for 2 slots that is not a first start: %v", e.Event)
		}
	}
	out := s.Out.String()
	if !strings.Contains(out, "exited before it was ready") || !strings.Contains(out, "boot failure") {
		t.Fatalf("output lacks the worker's error:\n%s", out)
	}
}

// TestCrashBudget: a worker that dies right after becoming ready is
// respawned with growing delays until the crash budget is spent, then the
// supervisor exits 1 saying why.
func TestCrashBudget(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mostly waits out its respawn delays
			testCrashBudget(t, mode)
		})
	}
}

func testCrashBudget(t *testing.T, mode string) {
	s := startRole(t, "crash-after-ready", nil, "-workers", "1", "-mode", mode, "-max-crashes", "4")
	if code := s.WaitExit(20 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	// The first spawn may precede the subscription; the respawns follow
	// the first worker's exit, which waited for it.
	forks := s.events.All(control.EventFork)
	spawns := map[string]int{}
	for _, e := range forks {
		spawns[e.Str("cause")]++
	}
	crash, first := spawns[string(control.CauseCrash)], spawns[string(control.CauseStart)]
	if crash != 4 || first > 1 || crash+first != len(forks) {
		t.Fatalf("spawns by cause %v, want the first + 4 respawns", spawns)
	}
	var delays []int
	for _, e := range s.events.All(control.EventRespawn) {
		delays = append(delays, e.Int("delay_ms"))
	}
	if want := []int{0, 100, 200, 400}; !slices.Equal(delays, want) {
		t.Fatalf("respawn delays %v, want %v", delays, want)
	}
	if !strings.Contains(s.Out.String(), "giving up") {
		t.Fatalf("no reason given:\n%s", s.Out.String())
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestNoDescriptorLeak: respawns, a reload and a scale cycle leave the
// supervisor with the descriptors it started with.
func TestNoDescriptorLeak(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode)
			if _, err := s.pid(); err != nil {
				t.Fatal(err)
			}
			sup := s.PID()
			before, err := fdtest.Count(sup)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				victim, from := s.Children()[0], s.events.Count()
				syscall.Kill(victim, syscall.SIGKILL)
				s.waitEvent(3*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Pos >= from })
			}
			if out, code := s.ctl("reload"); code != 0 {
				t.Fatalf("reload: %s", out)
			}
			if out, code := s.ctl("scale", "3"); code != 0 {
				t.Fatalf("scale 3: %s", out)
			}
			if out, code := s.ctl("scale", "2"); code != 0 {
				t.Fatalf("scale 2: %s", out)
			}
			for range 20 {
				if _, err := s.pid(); err != nil {
					t.Fatal(err)
				}
			}
			// reuseport keeps a retired slot's socket open (see README), and
			// the exited workers' reader goroutines close their ends
			// asynchronously: poll.
			extra := 0
			if mode == "reuseport" {
				extra = 2 // the retired socket and its accept loop's duplicate
			}
			deadline := time.Now().Add(3 * time.Second)
			for {
				n, err := fdtest.Count(sup)
				if err != nil {
					t.Fatal(err)
				}
				if n <= before+extra {
					break
				}
				if time.Now().After(deadline) {
					now, _ := fdtest.List(sup)
					t.Fatalf("%d descriptors, started with %d (+%d allowed): %v", n, before, extra, now)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestMalformedFrames: a worker that writes garbage on its control channel
// gets it logged; the supervisor keeps serving through it.
func TestMalformedFrames(t *testing.T) {
	s := startRole(t, "garbage", nil, "-workers", "1")
	s.waitReady(10 * time.Second)
	s.waitEvent(3*time.Second, control.EventProtocol, func(e proctest.Event) bool { return e.Str("error") != "" && e.Int("count") >= 1 })
	if _, err := s.pid(); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
