package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
)

var (
	binDir        string // built binaries
	supervisorBin string
	workerBin     string
)

func TestMain(m *testing.M) {
	if role := os.Getenv("PREFORK_E2E_ROLE"); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "prefork-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Workers may run as another user (-user): let them reach the binaries.
	os.Chmod(dir, 0o755)
	binDir = dir
	supervisorBin = filepath.Join(dir, "supervisor")
	workerBin = filepath.Join(dir, "worker")
	for _, b := range []struct{ out, pkg string }{{supervisorBin, "../../cmd/supervisor"}, {workerBin, "../../cmd/worker"}} {
		// -race: a data race in a real run fails the test through the
		// exit status (66).
		cmd := exec.Command("go", "build", "-race", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", b.pkg, err)
			return 1
		}
	}
	return m.Run()
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// sup is one supervisor process under test.
type sup struct {
	t       testing.TB
	cmd     *exec.Cmd
	addr    string
	log     *logBook  // every JSON line of its output, workers' included
	events  *recorder // its event stream
	done    chan struct{}
	exit    int
	stderr  *lockedBuffer
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
	addr := freeAddr(t)
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
	s := &sup{t: t, addr: addr, log: newLogBook(), done: make(chan struct{}), stderr: &lockedBuffer{}, cmd: cmd, ctlPath: ctl}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	s.cmd.Stdout = pw
	if s.cmd.Env == nil {
		s.cmd.Env = os.Environ()
	}
	s.cmd.Env = append(s.cmd.Env, "GORACE=halt_on_error=1")
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go s.log.read(pr, s.stderr)
	s.events = record(ctl, s.done)
	go func() {
		s.cmd.Wait()
		s.exit = s.cmd.ProcessState.ExitCode()
		pw.Close()
		close(s.done)
	}()
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

// cleanup kills the supervisor and every worker it left, by PID, and checks
// that no worker survives.
func (s *sup) cleanup() {
	kids := s.children()
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	s.events.stop()
	for _, e := range s.events.all(control.EventFork) {
		kids = append(kids, e.int("pid"))
	}
	for _, pid := range kids {
		waitGone(s.t, pid, 3*time.Second)
	}
	// A test that leaves -control out gets the default path, which a
	// killed supervisor cannot remove.
	if p := control.DefaultPath(s.addr); fileExists(p) {
		os.Remove(p)
		s.t.Errorf("control socket %s left behind: give the supervisor -control in the test's temp dir", p)
	}
	if s.t.Failed() {
		s.t.Logf("supervisor output:\n%s\nevents:\n%s", s.stderr.String(), s.events)
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// waitGone fails the test unless pid is gone (or a zombie) within d.
func waitGone(t testing.TB, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for procfs.Alive(pid) {
		if time.Now().After(deadline) {
			t.Errorf("process %d still alive after %s", pid, d)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// children lists the live processes whose parent is the supervisor.
func (s *sup) children() []int { return procfs.Children(s.cmd.Process.Pid) }

// waitExit waits up to d for the supervisor to exit and returns its status.
func (s *sup) waitExit(d time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.exit
	case <-time.After(d):
		s.t.Fatalf("supervisor still running after %s", d)
		return -1
	}
}

func (s *sup) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
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
	eventually(s.t, 5*time.Second, fmt.Sprintf("%d workers answer /pid", n), func() bool {
		pid, err := s.pid()
		if err != nil {
			s.t.Fatal(err)
		}
		seen[pid] = true
		return len(seen) == n
	})
	return seen
}

// logBook collects the JSON lines of a supervisor's output: its log, and
// its workers' output when it captures that. Tests wait for events, not
// log lines; the log is for what is about logging itself.
type logBook struct {
	mu      sync.Mutex
	objects []map[string]any
}

// waitAny waits for any JSON line (the supervisor's or a worker's) that
// matches.
func (b *logBook) waitAny(d time.Duration, match func(map[string]any) bool) (map[string]any, bool) {
	deadline := time.Now().Add(d)
	for {
		b.mu.Lock()
		for _, m := range b.objects {
			if match(m) {
				b.mu.Unlock()
				return m, true
			}
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newLogBook() *logBook { return &logBook{} }

func (b *logBook) read(r io.Reader, raw *lockedBuffer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		raw.WriteString(line + "\n")
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		b.mu.Lock()
		b.objects = append(b.objects, m)
		b.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	l.b.WriteString(s)
	l.mu.Unlock()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventually polls cond every few milliseconds until it is true or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
	eventually(t, d, fmt.Sprintf("%d more successful requests", n), func() bool { return c.ok.Load() >= want })
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
