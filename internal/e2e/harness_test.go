package e2e

import (
	"fmt"
	"io"
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
	"github.com/prefork/prefork/internal/proctest"
)

var (
	supervisorBin string // the supervisor, built with -race
	workerBin     string // the demo worker beside it, its default command
)

func TestMain(m *testing.M) {
	if role := os.Getenv("PREFORK_E2E_ROLE"); role != "" {
		os.Exit(runRole(role))
	}
	// Every race-built process the tests start (the supervisor, its
	// workers, ctl, the roles) inherits this: it exits at once instead of
	// sleeping a second at exit (GORACE atexit_sleep_ms, 1000 by default),
	// which made each graceful stop, reload, recycle and ctl call a second
	// or two longer, over a minute of the suite. A race is still reported
	// when it happens; the supervisor's halt_on_error (adopt) exits 66 at
	// once, ctl with 66 at its exit.
	os.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")))
	// -race: a data race in a real run fails the test through the exit
	// status (66).
	supervisorBin = proctest.MustBuild("./cmd/supervisor", "-race")
	workerBin = proctest.MustBuild("./cmd/worker", "-race")
	os.Exit(proctest.Run(m))
}

// sup is one supervisor process under test.
type sup struct {
	*proctest.Proc
	t       testing.TB
	addr    string
	events  *proctest.Events // its event stream
	client  *http.Client
	ctlPath string
}

// start runs the supervisor with args (a free -listen address and JSON logs
// are added) and does not wait for it.
func start(t testing.TB, args ...string) *sup { return startUnder(t, nil, args...) }

// startUnder is start with the supervisor run by wrapper (a command that
// execs its arguments, such as taskset), so its pid is the supervisor's.
func startUnder(t testing.TB, wrapper []string, args ...string) *sup {
	t.Helper()
	addr := proctest.FreeAddr(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	argv := append(append(wrapper, supervisorBin, "-listen", addr, "-log-format", "json", "-control", ctl), args...)
	return adopt(t, exec.Command(argv[0], argv[1:]...), addr, ctl)
}

// ctl runs `supervisor ctl -control <this supervisor's socket> args...`.
func (s *sup) ctl(args ...string) (string, int) {
	s.t.Helper()
	cmd := exec.Command(supervisorBin, append([]string{"ctl", "-control", s.ctlPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), exitCode(err)
}

// adopt starts cmd, a supervisor listening on addr with its control socket
// at ctl ("" for none), watches it and records its events.
func adopt(t testing.TB, cmd *exec.Cmd, addr, ctl string) *sup {
	t.Helper()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	// Keeps the GORACE options TestMain set (atexit_sleep_ms=0).
	cmd.Env = append(cmd.Env, strings.TrimSpace("GORACE=halt_on_error=1 "+os.Getenv("GORACE")))
	s := &sup{Proc: proctest.Start(t, cmd), t: t, addr: addr, ctlPath: ctl}
	s.events = proctest.Follow(ctl, s.Done())
	s.client = &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	t.Cleanup(s.cleanup)
	return s
}

// startReady starts the supervisor and waits until all its workers are ready.
func startReady(t testing.TB, args ...string) *sup {
	t.Helper()
	s := start(t, args...)
	s.waitReady(10 * time.Second)
	return s
}

// cleanup kills the supervisor and every worker it left, and checks that
// no worker it forked survives and that it left no control socket.
func (s *sup) cleanup() {
	s.Kill()
	s.events.Stop()
	for _, e := range s.events.All(control.EventFork) {
		proctest.WaitGone(s.t, e.Int("pid"), 3*time.Second)
	}
	// A test that leaves -control out gets the default path, which a
	// killed supervisor cannot remove.
	if p := control.DefaultPath(s.addr); fileExists(p) {
		os.Remove(p)
		s.t.Errorf("control socket %s left behind: give the supervisor -control in the test's temp dir", p)
	}
	if s.t.Failed() {
		s.t.Logf("events:\n%s", s.events)
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func (s *sup) url(path string) string { return "http://" + s.addr + path }

// get does one request on a new connection.
func (s *sup) get(path string) (int, string, error) {
	resp, err := s.client.Get(s.url(path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// pid asks /pid on a new connection.
func (s *sup) pid() (int, error) {
	code, body, err := s.get("/pid")
	if err != nil {
		return 0, err
	}
	if code != 200 {
		return 0, fmt.Errorf("/pid: status %d", code)
	}
	return strconv.Atoi(body)
}

// waitPIDs polls /pid until n distinct pids have answered (within 5s) and
// returns them.
func (s *sup) waitPIDs(n int) map[int]bool {
	s.t.Helper()
	seen := map[int]bool{}
	proctest.Eventually(s.t, 5*time.Second, fmt.Sprintf("%d workers answer /pid", n), func() bool {
		pid, err := s.pid()
		if err != nil {
			s.t.Fatal(err)
		}
		seen[pid] = true
		return len(seen) == n
	})
	return seen
}

// execAs prepares a command that runs as uid (and the same gid).
func execAs(uid uint32, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	return cmd
}

// clients runs request loops on goroutines, each bounded in count and
// time, until finished, and counts the requests that succeeded.
type clients struct {
	ok   atomic.Int64
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newClients() clients { return clients{stop: make(chan struct{})} }

// run starts one loop calling one (true: success) up to max times for d.
func (c *clients) run(max int, d time.Duration, one func() bool) {
	deadline := time.Now().Add(d)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for i := 0; i < max && time.Now().Before(deadline); i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			if one() {
				c.ok.Add(1)
			}
		}
	}()
}

// finish stops the loops and waits for them.
func (c *clients) finish() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// waitOK waits until n more requests than now have succeeded.
func (c *clients) waitOK(t testing.TB, n int64, d time.Duration) {
	t.Helper()
	want := c.ok.Load() + n
	proctest.Eventually(t, d, fmt.Sprintf("%d more successful requests", n), func() bool { return c.ok.Load() >= want })
}

// fetch GETs url and reads the whole answer; a status other than 200 is an
// error.
func fetch(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
