package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// long selects the full counts (make chaos); the default is the short run
// that make test includes.
var long = os.Getenv("PREFORK_CHAOS") == "long"

// build is the supervisor build under test: "plain" (PREFORK_CHAOS_BUILD)
// for the Go executable, which has a signal window in every upgrade
// (internal/execsignal); "shipped" for what scripts/build-supervisor
// makes, the archive build when a C compiler is there.
var build = func() string {
	if os.Getenv("PREFORK_CHAOS_BUILD") == "plain" {
		return "plain"
	}
	return "shipped"
}()

// pick returns the short or the long value of a count.
func pick[T any](short, full T) T {
	if long {
		return full
	}
	return short
}

// modes are the scheduling modes every scenario runs in.
var modes = []string{"rr", "shared", "reuseport"}

// eachMode runs scenario in every mode, one subtest each.
func eachMode(t *testing.T, scenario func(t *testing.T, mode string)) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { scenario(t, mode) })
	}
}

var (
	supervisorBin string
	hostileScript string
)

func TestMain(m *testing.M) {
	// Floods hold thousands of sockets in this process; the supervisor and
	// its workers inherit the raised limit unless a test lowers it.
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	// Built without -race: the figures (RSS, latency) are the product's,
	// not the race detector's; the e2e suite runs the binaries under -race.
	if build == "plain" {
		supervisorBin = proctest.MustBuild("./cmd/supervisor", proctest.Plain)
		proctest.MustBuild("./cmd/worker", proctest.Plain) // beside it, its default command
	} else {
		supervisorBin = proctest.MustBuild("./cmd/supervisor")
		proctest.MustBuild("./cmd/worker") // beside it, its default command
	}
	var err error
	if hostileScript, err = filepath.Abs("testdata/hostile_worker.py"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(proctest.Run(m))
}

// figure logs one line of figures in the fixed format the README table is
// filled from: FIGURE scenario=<s> mode=<m> k=v ...
func figure(t testing.TB, scenario, mode string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURE scenario=%s mode=%s", scenario, mode)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond)
		}
		fmt.Fprintf(&b, " %v=%v", kv[i], v)
	}
	t.Log(b.String())
}

// opts say how to start a supervisor.
type opts struct {
	mode    string
	workers int
	wrapper []string // a command that execs its arguments (prlimit ...)
	args    []string // more supervisor flags
	command []string // the worker command; nil for the demo worker
}

// sup is one supervisor process under test.
type sup struct {
	*proctest.Proc
	t       testing.TB
	addr    string
	ctlPath string
	metrics string
}

// start runs a supervisor on a free 127.0.0.1 port with its control socket
// and metrics listener private to the test, and waits until it has
// o.workers ready workers.
func start(t testing.TB, o opts) *sup {
	t.Helper()
	s := &sup{t: t, addr: proctest.FreeAddr(t), metrics: proctest.FreeAddr(t)}
	s.ctlPath = filepath.Join(t.TempDir(), "ctl.sock")
	argv := append([]string{}, o.wrapper...)
	argv = append(argv, supervisorBin, "-listen", s.addr, "-mode", o.mode, "-workers", strconv.Itoa(o.workers),
		"-control", s.ctlPath, "-metrics", s.metrics, "-log-format", "json", "-grace", "5s")
	argv = append(argv, o.args...)
	if o.command != nil {
		argv = append(append(argv, "--"), o.command...)
	}
	s.Proc = proctest.Start(t, exec.Command(argv[0], argv[1:]...))
	s.waitSettled(o.workers, 15*time.Second)
	return s
}

// stop asks the supervisor to stop (SIGTERM) and waits for exit status 0.
func (s *sup) stop() {
	s.t.Helper()
	if !s.Running() {
		s.t.Errorf("supervisor exited early with status %d", s.ExitCode())
		return
	}
	s.Signal(syscall.SIGTERM)
	select {
	case <-s.Done():
		if code := s.ExitCode(); code != 0 {
			s.t.Errorf("supervisor stopped with status %d, want 0", code)
		}
	case <-time.After(15 * time.Second):
		s.t.Errorf("supervisor still running 15s after SIGTERM")
	}
	if _, err := os.Lstat(s.ctlPath); err == nil {
		s.t.Errorf("control socket %s left behind after a clean stop", s.ctlPath)
	}
}

// status asks the control socket for the status (what `ctl status -json`
// prints), waiting at most d, and reports how long the answer took.
func (s *sup) status(d time.Duration) (*control.Status, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	t0 := time.Now()
	resp, err := control.Call(ctx, s.ctlPath, control.Request{Cmd: control.CmdStatus})
	took := time.Since(t0)
	if err == nil && !resp.OK {
		err = fmt.Errorf("status refused: %s", resp.Error)
	}
	if err != nil {
		return nil, took, err
	}
	return resp.Status, took, nil
}

// call sends a reload or scale request and waits up to d for its answer.
func (s *sup) call(req control.Request, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	resp, err := control.Call(ctx, s.ctlPath, req)
	if err == nil && !resp.OK {
		err = fmt.Errorf("%s refused: %s", req.Cmd, resp.Error)
	}
	return err
}

// settled reports whether the supervisor runs exactly n ready workers, all
// of its current generation, and has exactly n child processes; why says
// what is off otherwise.
func (s *sup) settled(n int) (ok bool, why string) {
	st, _, err := s.status(2 * time.Second)
	if err != nil {
		return false, err.Error()
	}
	ready, gens := 0, map[int]bool{}
	for _, w := range st.Workers {
		gens[w.Generation] = true
		if w.State == control.StateReady {
			ready++
		}
	}
	kids := s.Children()
	if len(st.Workers) != n || ready != n || len(gens) != 1 || !gens[st.Generation] || len(kids) != n {
		return false, fmt.Sprintf("%d workers (%d ready) of generations %v (current %d), %d children %v",
			len(st.Workers), ready, keys(gens), st.Generation, len(kids), kids)
	}
	return true, ""
}

// waitSettled fails the test unless the supervisor settles at n workers
// within d, and returns how long that took.
func (s *sup) waitSettled(n int, d time.Duration) time.Duration {
	s.t.Helper()
	t0 := time.Now()
	var why string
	for time.Since(t0) < d {
		if !s.Running() {
			s.t.Fatalf("supervisor exited with status %d while settling at %d workers", s.ExitCode(), n)
		}
		var ok bool
		if ok, why = s.settled(n); ok {
			return time.Since(t0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("supervisor not settled at %d ready workers of one generation within %s: %s", n, d, why)
	return 0
}

// workers returns the pids and uptimes of the ready workers.
func (s *sup) workers() map[int]float64 {
	s.t.Helper()
	st, _, err := s.status(2 * time.Second)
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	out := map[int]float64{}
	for _, w := range st.Workers {
		if w.State == control.StateReady {
			out[w.PID] = w.UptimeS
		}
	}
	return out
}

// restarts sums the slots' restarts.
func restarts(st *control.Status) int {
	n := 0
	for _, w := range st.Workers {
		n += w.Restarts
	}
	return n
}

// rssKiB reads the supervisor's resident set size.
func (s *sup) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		s.t.Fatalf("reading RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	s.t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// goroutines reads go_goroutines from the supervisor's /metrics.
func (s *sup) goroutines() int { return int(s.metric("go_goroutines")) }

// metric reads one unlabelled metric from the supervisor's /metrics.
func (s *sup) metric(name string) float64 {
	s.t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		s.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				s.t.Fatalf("metrics: %s %q: %v", name, v, err)
			}
			return n
		}
	}
	s.t.Fatalf("metrics: no %s", name)
	return 0
}

// count returns how many of the supervisor's log lines contain sub.
func (s *sup) count(sub string) int { return strings.Count(s.Out.String(), sub) }

// times returns when the supervisor logged each line with message msg.
func (s *sup) times(msg string) []time.Time {
	var out []time.Time
	for _, line := range strings.Split(s.Out.String(), "\n") {
		var e struct {
			Msg string    `json:"msg"`
			TS  time.Time `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == msg {
			out = append(out, e.TS)
		}
	}
	return out
}

// get does one GET on a new connection within d and returns the body.
func get(addr, path string, d time.Duration) (string, error) {
	c := http.Client{Timeout: d, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

func keys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
