package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/prefork/prefork/internal/procfs"
)

// serverSpec says how to start one kind of server under test.
type serverSpec struct {
	name    string
	procs   int  // worker processes that serve: 1 for the single Go process
	logged  bool // prints "all workers ready" on its output when serving
	command func(port int) []string
	env     []string
	script  string // a wrk Lua script for its loads; "" for none
	// twoPorts: the server gets a second TCP listener (-listen b=...),
	// and wrk's threads go half to each port (twoPortsScript).
	twoPorts bool
	// proxy: every connection must start with a PROXY header, as behind
	// a load balancer (-proxy-protocol); script is bench/proxy.lua, and
	// each run is checked against the supervisor's counters (proxy.go).
	proxy bool
}

// specs returns the servers compared, in the order each rep runs them.
func specs(root string, workers int) []serverSpec {
	sup := filepath.Join(root, "bin", "supervisor")
	worker := filepath.Join(root, "bin", "worker")
	single := filepath.Join(root, "bin", "singlebinary")
	fast := filepath.Join(root, "bin", "fasthttp-worker")
	script := filepath.Join(root, "bench", "node", "cluster.js")
	n := itoa(workers)
	prefork := func(mode string) serverSpec {
		return serverSpec{
			name: mode, procs: workers, logged: true,
			command: func(port int) []string {
				return []string{sup, "-listen", addr(port), "-workers", n, "-mode", mode,
					"-grace", "2s", "-log-format", "json"}
			},
		}
	}
	// rr with more flags: the sticky and PROXY rows.
	rrWith := func(name, script string, flags ...string) serverSpec {
		sp := prefork("rr")
		sp.name, sp.script = name, script
		sp.command = func(port int) []string {
			return append([]string{sup, "-listen", addr(port), "-workers", n, "-mode", "rr",
				"-grace", "2s", "-log-format", "json"}, flags...)
		}
		return sp
	}
	behindLB := func(sp serverSpec) serverSpec {
		sp.proxy = true
		return sp
	}
	proxyFlags := []string{"-proxy-protocol", "-proxy-from", "127.0.0.1/32"}
	proxyLua := filepath.Join(root, "bench", "proxy.lua")
	node := func(policy string) serverSpec {
		return serverSpec{
			name: "node-" + policy, procs: workers, logged: true,
			command: func(port int) []string { return []string{"node", script, itoa(port), n} },
			env:     []string{"NODE_CLUSTER_SCHED_POLICY=" + policy},
		}
	}
	// Node's cluster app itself as prefork's workers: under the supervisor
	// cluster.isWorker is true, so cluster.js runs its worker branch, whose
	// listen(port) gets the supervisor's socket (the port must be -listen's),
	// or in rr mode the supervisor's connections, one newconn message each.
	// BENCH_MODE only labels /health, like the Node primary's fork env.
	preforkNode := func(mode string) serverSpec {
		sp := prefork(mode)
		sp.name = "prefork-node-" + mode
		sp.command = func(port int) []string {
			return []string{sup, "-listen", addr(port), "-workers", n, "-mode", mode,
				"-grace", "2s", "-log-format", "json", "-worker-protocol", "node",
				"--", "node", script, itoa(port)}
		}
		sp.env = []string{"BENCH_MODE=" + mode}
		return sp
	}
	// The demo's routes on fasthttp (examples/fasthttp) as the workers,
	// through package fastcluster: against fasthttp-prefork, the same
	// binary and handler under fasthttp's own prefork, whose sockets have
	// TCP_DEFER_ACCEPT; -defer-accept gives prefork's the same.
	preforkFast := func(mode string) serverSpec {
		sp := prefork(mode)
		sp.name = "fasthttp-" + mode
		sp.command = func(port int) []string {
			return []string{sup, "-listen", addr(port), "-workers", n, "-mode", mode,
				"-grace", "2s", "-log-format", "json", "-defer-accept", "--", fast}
		}
		return sp
	}
	return []serverSpec{
		{
			name: "go-single", procs: 1,
			command: func(port int) []string { return []string{worker, "-listen", addr(port)} },
		},
		prefork("rr"), prefork("shared"), prefork("reuseport"),
		// rr with -sticky cookie: each connection's first bytes peeked
		// for a cookie (512 cookies in turn, bench/sticky.lua).
		rrWith("rr-sticky-cookie", filepath.Join(root, "bench", "sticky.lua"), "-sticky", "cookie:sid"),
		// rr behind a load balancer that speaks PROXY protocol: every
		// connection starts with a header naming one of 512 clients
		// (bench/proxy.lua), without and with -sticky ip. Every wrk
		// connection comes from 127.0.0.1, so without the header -sticky
		// ip would have one key and send every connection to one worker.
		behindLB(rrWith("rr-proxy", proxyLua, proxyFlags...)),
		behindLB(rrWith("rr-sticky-ip", proxyLua, slices.Concat(proxyFlags, []string{"-sticky", "ip"})...)),
		// rr on two TCP listeners, loaded at once: one accept loop per
		// listener in the supervisor, against the rr row's one.
		twoPorts(prefork("rr")),
		// The same handler in one binary that is its own primary
		// (primary.ListenAndServe), in rr mode: against the rr row.
		{
			name: "singlebinary", procs: workers, logged: true,
			command: func(port int) []string {
				return []string{single, "-listen", addr(port), "-workers", n, "-grace", "2s", "-log-format", "json"}
			},
		},
		node("rr"), node("none"),
		preforkNode("rr"), preforkNode("shared"), preforkNode("reuseport"),
		// fasthttp's prefork (Fiber's EnablePrefork): GOMAXPROCS
		// children, each with its own SO_REUSEPORT socket and GOMAXPROCS
		// 1, serving the fasthttp worker's handler.
		{
			name: "fasthttp-prefork", procs: workers,
			command: func(port int) []string { return []string{fast, "-fasthttp-prefork", "-listen", addr(port)} },
			env:     []string{"GOMAXPROCS=" + n},
		},
		preforkFast("rr"), preforkFast("shared"), preforkFast("reuseport"),
	}
}

// twoPorts makes sp the same server with a second TCP listener.
func twoPorts(sp serverSpec) serverSpec {
	sp.name += "-2ports"
	sp.twoPorts = true
	return sp
}

func addr(port int) string { return "127.0.0.1:" + itoa(port) }

// freePort asks the kernel for a free port on 127.0.0.1 and releases it.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// server is one running server under test: the launched process (which
// leads its own process group) and every descendant seen so far.
type server struct {
	spec    serverSpec
	port    int
	port2   int // the second listener's (spec.twoPorts); 0 none
	pinned  bool
	cmd     *exec.Cmd
	started time.Time // just before fork
	log     *logWatch
	done    chan struct{} // closed when cmd.Wait has returned
	waitErr error

	mu    sync.Mutex
	known map[int]procfs.Stat // descendants ever seen, by pid

	stopOnce sync.Once
	stopErr  error
}

// live holds the servers not yet stopped, for the interrupt path.
var live struct {
	sync.Mutex
	m map[*server]bool
}

// launch starts spec on a free port; pinned puts it on CPU 0 with taskset,
// whose affinity every process it forks inherits.
//
// The process gets its own process group (so a terminal's Ctrl-C reaches
// the harness only, which then stops servers in order) and Pdeathsig, so it
// dies with the harness even on SIGKILL. Pdeathsig fires when the forking
// *thread* exits: the harness starts processes only from the main
// goroutine, locked to the main thread in init.
func launch(spec serverSpec, pinned bool) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	argv := spec.command(port)
	var port2 int
	if spec.twoPorts {
		if port2, err = freePort(); err != nil {
			return nil, err
		}
		argv = append(argv, "-listen", "b="+addr(port2))
	}
	if pinned {
		argv = append([]string{"taskset", "-c", serverCore}, argv...)
	}
	s := &server{spec: spec, port: port, port2: port2, pinned: pinned, log: newLogWatch(),
		done: make(chan struct{}), known: map[int]procfs.Stat{}}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = append(os.Environ(), spec.env...)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	// Workers inherit the output pipe; if one outlived the launched process,
	// Wait would block on the pipe forever without this bound.
	s.cmd.WaitDelay = 2 * time.Second
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.started = time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", spec.name, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	live.Lock()
	if live.m == nil {
		live.m = map[*server]bool{}
	}
	live.m[s] = true
	live.Unlock()
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// ready waits until the server serves: its "all workers ready" line when it
// prints one, then a 200 from GET /health.
func (s *server) ready(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if s.spec.logged {
		_, _, err := s.log.wait(ctx, 0, s.done, func(e logEvent) bool { return e.msg() == "all workers ready" })
		if err != nil {
			return fmt.Errorf("bench: %s not ready: %w", s.spec.name, err)
		}
	}
	preface := ""
	if s.spec.proxy {
		preface = "PROXY TCP4 10.0.0.1 127.0.0.1 30000 " + itoa(s.port) + "\r\n"
	}
	for {
		code, _, err := httpGetAfter(ctx, s.port, "/health", time.Second, preface)
		if err == nil && code == 200 {
			s.track()
			return nil
		}
		if s.exited() {
			return fmt.Errorf("bench: %s exited before serving (%v)", s.spec.name, s.waitErr)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("bench: %s not serving /health within %v (last: %d %v)", s.spec.name, timeout, code, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// track records the server's current descendants so that stop can reach
// them even after their parent is gone, and returns them.
func (s *server) track() []procfs.Stat {
	ds := descendants(s.pid())
	s.mu.Lock()
	for _, p := range ds {
		s.known[p.PID] = p
	}
	s.mu.Unlock()
	return ds
}

// workers returns the pids of the live direct children of the launched
// process, sorted; for a single process, that process itself.
func (s *server) workers() []int {
	var pids []int
	for _, p := range s.track() {
		if p.PPID == s.pid() {
			pids = append(pids, p.PID)
		}
	}
	if s.spec.procs == 1 && len(pids) == 0 {
		pids = []int{s.pid()}
	}
	sort.Ints(pids)
	return pids
}

// rss is one memory sample: the launched process and each worker, in KiB.
type rss struct {
	root    int
	workers []int
}

func (r rss) maxWorker() int {
	m := 0
	for _, w := range r.workers {
		m = max(m, w)
	}
	return m
}

func (r rss) total() int {
	t := r.root
	for _, w := range r.workers {
		t += w
	}
	return t
}

// sampleRSS reads VmRSS of the launched process and of its workers. For the
// single Go process, root is the process and workers is empty.
func (s *server) sampleRSS() rss {
	var r rss
	r.root, _ = rssKB(s.pid())
	if s.spec.procs == 1 {
		return r
	}
	for _, pid := range s.workers() {
		if kb, err := rssKB(pid); err == nil {
			r.workers = append(r.workers, kb)
		}
	}
	return r
}

// Stop timing: the supervisor gets -grace 2s, Node's primary gives its
// workers 2s; a server still up after stopWait is killed.
const stopWait = 5 * time.Second

// errStray reports processes that outlived an orderly stop.
var errStray = errors.New("bench: processes outlived the stop")

// stop ends the server and everything it started: SIGTERM to its process
// group, a bounded wait, then SIGKILL to the group and, by pid, to every
// descendant ever seen (the supervisor puts each worker in a group of its
// own, so the group signal does not reach them). It returns errStray (with
// the pids) when something had to be killed that should have exited by
// itself, or survived SIGKILL. Stop twice is harmless.
func (s *server) stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.doStop() })
	return s.stopErr
}

func (s *server) doStop() error {
	defer func() {
		live.Lock()
		delete(live.m, s)
		live.Unlock()
	}()
	s.track()
	pgid := s.pid()
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopWait):
		syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-s.done:
		case <-time.After(stopWait):
			return fmt.Errorf("bench: %s (pid %d) survived SIGKILL", s.spec.name, pgid)
		}
	}
	s.mu.Lock()
	var known []procfs.Stat
	for _, p := range s.known {
		known = append(known, p)
	}
	s.mu.Unlock()
	// Workers exit once drained or on IPC EOF; give them a moment.
	left := waitGone(known, 2*time.Second)
	if len(left) == 0 {
		return nil
	}
	var pids []int
	for _, p := range left {
		pids = append(pids, p.PID)
		killProc(p)
	}
	if still := waitGone(left, 2*time.Second); len(still) > 0 {
		return fmt.Errorf("%w: %s: pids %v survived SIGKILL", errStray, s.spec.name, pids)
	}
	return fmt.Errorf("%w: %s: killed pids %v", errStray, s.spec.name, pids)
}

// kill is the interrupt path: SIGKILL at once to the group and every
// descendant, without waiting for a drain.
func (s *server) kill() {
	s.track()
	syscall.Kill(-s.pid(), syscall.SIGKILL)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.known {
		killProc(p)
	}
}

// stopAll stops every server still running, in parallel: the cleanup path
// on failure or interrupt. hard skips the orderly SIGTERM.
func stopAll(hard bool) {
	live.Lock()
	var ss []*server
	for s := range live.m {
		ss = append(ss, s)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		if hard {
			s.kill()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	wg.Wait()
}
