package e2e

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// load is a bounded stream of requests, each on a new connection, from c
// goroutines. It records the client port of every failed request.
type load struct {
	clients
	url      string
	mu       sync.Mutex
	failures []failure
}

type failure struct {
	port int
	err  error
}

func startLoad(t testing.TB, url string, c int, maxPerWorker int, d time.Duration) *load {
	l := &load{clients: newClients(), url: url}
	for range c {
		l.run(maxPerWorker, d, l.one)
	}
	t.Cleanup(l.finish)
	return l
}

// one sends a request on a new connection, remembering its client port.
func (l *load) one() bool {
	var port atomic.Int64
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				port.Store(int64(c.LocalAddr().(*net.TCPAddr).Port))
			}
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	if err := fetch(&http.Client{Transport: tr, Timeout: 5 * time.Second}, l.url); err != nil {
		l.mu.Lock()
		l.failures = append(l.failures, failure{port: int(port.Load()), err: err})
		l.mu.Unlock()
		return false
	}
	return true
}

// clientPortsInside returns the client ports of the connections whose server
// side is in pid's descriptor table.
func clientPortsInside(pid int, serverPort int) map[int]bool {
	inodes := map[string]bool{}
	targets, _ := fdtest.Targets(pid) // none once pid is gone
	for _, l := range targets {
		if strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ports
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || !inodes[fs[9]] {
			continue
		}
		lp := hexPort(fs[1])
		if lp != serverPort {
			continue
		}
		if rp := hexPort(fs[2]); rp > 0 {
			ports[rp] = true
		}
	}
	return ports
}

func hexPort(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// stopped reports whether every thread of pid is stopped.
func stopped(pid int) bool {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil || len(ents) == 0 {
		return false
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		st, err := procfs.ReadTaskStat(pid, tid)
		if err != nil || (st.State != 'T' && st.State != 't') {
			return false
		}
	}
	return true
}

// TestKillUnderLoadLosesNothing: under a continuous stream of new
// connections, kill -9 of a worker fails no request except those already
// inside the killed worker. The worker is stopped first so that "inside" can
// be read from its descriptor table before it dies.
func TestKillUnderLoadLosesNothing(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			checkKillUnderLoad(t, startReady(t, "-workers", "2", "-mode", mode))
		})
	}
}

// checkKillUnderLoad: under a stream of new connections to s's two
// workers, kill -9 of one fails no request but those inside it.
func checkKillUnderLoad(t *testing.T, s *sup) {
	t.Helper()
	_, portStr, _ := net.SplitHostPort(s.addr)
	serverPort, _ := strconv.Atoi(portStr)
	l := startLoad(t, s.url("/pid"), 8, 20000, 20*time.Second)
	l.waitOK(t, 200, 5*time.Second)

	victim := s.status().Workers[0]
	var inside map[int]bool
	s.killStopped(t, victim.PID, victim.Slot, func() { inside = clientPortsInside(victim.PID, serverPort) })
	l.waitOK(t, 500, 10*time.Second)
	l.finish()

	lost := 0
	for _, f := range l.failures {
		if !inside[f.port] {
			lost++
			t.Errorf("request from port %d failed and was not inside the killed worker: %v", f.port, f.err)
		}
	}
	t.Logf("%d ok, %d failed (all inside the killed worker: %d connections there)", l.ok.Load(), len(l.failures), len(inside))
	if lost > 0 {
		t.Fatalf("%d requests lost", lost)
	}
}

// killStopped stops pid (slot's worker), calls inside to read what it
// holds, kills it with SIGKILL and waits until slot's replacement is
// ready.
func (s *sup) killStopped(t *testing.T, pid, slot int, inside func()) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, 2*time.Second, "victim stopped", func() bool { return stopped(pid) })
	inside()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitEvent(10*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Int("slot") == slot && e.Int("pid") != pid })
}

// TestLeastConn: while one worker holds long requests, least-conn sends new
// connections to the other. Four long requests spread two and two; the
// client then abandons the two on one worker, which leaves it with none and
// the other with two: every new connection must go to the idle one (plain
// round-robin would alternate).
func TestLeastConn(t *testing.T) {
	s := startReady(t, "-workers", "2", "-balance", "least-conn")
	workers := s.Children()
	byOwner := map[int][]net.Conn{}
	for range 4 {
		c, owner := s.slowRequest(workers, 20000)
		byOwner[owner] = append(byOwner[owner], c)
	}
	if len(byOwner) != 2 || len(byOwner[workers[0]]) != 2 {
		t.Fatalf("least-conn did not spread 4 long requests 2 and 2: %v", byOwner)
	}
	idle, busy := workers[0], workers[1]
	for _, c := range byOwner[idle] {
		c.Close()
	}
	// The supervisor learns of the closes from the worker's load reports:
	// before each new connection, wait until its view says the idle worker
	// has nothing open (a report can lag a busy machine, and with two
	// unreported closes the idle worker would tie with the busy one).
	idleSeen := func() {
		proctest.Eventually(t, 5*time.Second, "supervisor sees the idle worker's connections closed", func() bool {
			for _, w := range s.status().Workers {
				if w.PID == idle {
					return w.OpenConns == 0
				}
			}
			return false
		})
	}
	for range 5 {
		idleSeen()
		pid, err := s.pid()
		if err != nil {
			t.Fatal(err)
		}
		if pid != idle {
			t.Fatalf("new connection went to worker %d holding 2 long requests, not to idle %d", pid, idle)
		}
	}
	_ = busy
}

// TestSocketActivation starts the supervisor the way systemd does, with the
// listening socket inherited as fd 3 and LISTEN_FDS/LISTEN_PID set. In
// reuseport mode the inherited socket cannot be grouped (systemd bound
// it): it is served as in shared mode, and the log says so.
func TestSocketActivation(t *testing.T) {
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.(*net.TCPListener).File()
			ln.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			addr := ln.Addr().String()
			// The wrapper sets LISTEN_PID to its own pid, then execs.
			ctl := filepath.Join(t.TempDir(), "ctl.sock")
			cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`,
				supervisorBin, "-listen", "127.0.0.1:1", "-workers", "2", "-mode", mode, "-log-format", "json", "-control", ctl)
			cmd.ExtraFiles = []*os.File{f}
			s := adopt(t, cmd, addr, ctl)
			s.waitReady(10 * time.Second)
			// Serving the inherited socket's address, not -listen's, is
			// what being socket-activated means.
			if have := s.status().Listen; have != addr {
				t.Fatalf("listening on %s, want the inherited socket's %s", have, addr)
			}
			s.waitPIDs(2) // both workers serve the inherited socket
			shared := strings.Contains(s.Out.String(), "serving the listener as in shared mode")
			if shared != (mode == "reuseport") {
				t.Errorf("log says the listener is served as in shared mode: %v, want %v:\n%s", shared, mode == "reuseport", s.Out.Tail(20))
			}
			s.Signal(syscall.SIGTERM)
			if code := s.WaitExit(10 * time.Second); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestNoWorkerReady: while the only worker is being replaced, new
// connections wait in the supervisor's queue and are served once the
// replacement is ready (rr mode).
func TestNoWorkerReady(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "slow")
	args := append([]string{"-workers", "1"}, "--", "/usr/bin/env", "PREFORK_E2E_ROLE=slow-respawn", "PREFORK_E2E_SLOW="+marker, os.Args[0])
	s := startReady(t, args...)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	victim := s.Children()[0]
	syscall.Kill(victim, syscall.SIGKILL)
	s.waitEvent(3*time.Second, control.EventFork, func(e proctest.Event) bool { return e.Int("pid") != victim })
	results := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := s.pid()
			results <- err
		}()
	}
	for range 5 {
		if err := <-results; err != nil {
			t.Fatalf("request while no worker was ready: %v", err)
		}
	}
	// They were served by the replacement, after it became ready.
	s.waitEvent(time.Second, control.EventReady, func(e proctest.Event) bool { return e.Int("pid") != victim })
}
