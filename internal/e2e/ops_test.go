package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// mixedLoad runs keep-alive and new-connection clients until stopped,
// counting failures the way real clients see them: Go's http.Transport
// retries an idempotent request once on a fresh connection when a reused
// one turns out to be closed, as browsers do; anything else counts.
type mixedLoad struct {
	clients
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
}

func startMixedLoad(t testing.TB, url string, keepAlive, fresh int) *mixedLoad {
	m := &mixedLoad{clients: newClients()}
	for range keepAlive {
		m.loop(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}, url, "keep-alive")
	}
	for range fresh {
		m.loop(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, url, "new-connection")
	}
	t.Cleanup(m.finish)
	return m
}

// loop starts one client requesting url until stopped; kind names it in
// the errors kept.
func (m *mixedLoad) loop(client *http.Client, url, kind string) {
	m.run(100000, 60*time.Second, func() bool {
		err := fetch(client, url)
		if err != nil {
			m.failed.Add(1)
			m.mu.Lock()
			if len(m.errs) < 20 {
				m.errs = append(m.errs, kind+": "+err.Error())
			}
			m.mu.Unlock()
		}
		return err == nil
	})
}

func (m *mixedLoad) check(t testing.TB) {
	t.Helper()
	m.finish()
	t.Logf("%d requests ok, %d failed", m.ok.Load(), m.failed.Load())
	if m.failed.Load() > 0 {
		t.Fatalf("%d failed requests: %v", m.failed.Load(), m.errs)
	}
}

// status asks ctl status -json.
func (s *sup) status() statusJSON {
	s.t.Helper()
	out, code := s.ctl("-json", "status")
	if code != 0 {
		s.t.Fatalf("ctl status: exit %d: %s", code, out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("ctl status -json: %v: %s", err, out)
	}
	return st
}

type statusJSON struct {
	PID        int    `json:"pid"`
	Listen     string `json:"listen"`
	Generation int    `json:"generation"`
	Workers    []struct {
		Slot       int     `json:"slot"`
		PID        int     `json:"pid"`
		Generation int     `json:"generation"`
		State      string  `json:"state"`
		OpenConns  int64   `json:"open_conns"`
		Features   string  `json:"features"`
		Requests   uint64  `json:"requests"`
		P50S       float64 `json:"p50_s"`
		// StatusClasses: "2xx", "4xx", ... since the worker started.
		StatusClasses map[string]uint64 `json:"status_classes"`
	} `json:"workers"`
}

func (st statusJSON) pids(state string) []int {
	var out []int
	for _, w := range st.Workers {
		if w.State == state {
			out = append(out, w.PID)
		}
	}
	return sorted(out)
}

// TestReloadUnderLoad: SIGHUP replaces every worker while keep-alive and
// new-connection clients keep going, with no failed request, in every mode.
func TestReloadUnderLoad(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			checkReloadUnderLoad(t, startReady(t, "-workers", "2", "-mode", mode, "-grace", "10s"))
		})
	}
}

// checkReloadUnderLoad: SIGHUP replaces both of s's workers while
// keep-alive and new-connection clients keep going, with no failed request.
func checkReloadUnderLoad(t *testing.T, s *sup) {
	t.Helper()
	before := s.Children()
	load := startMixedLoad(t, s.url("/pid"), 4, 4)
	load.waitOK(t, 300, 10*time.Second)
	s.Signal(syscall.SIGHUP)
	s.waitEvent(15*time.Second, control.EventReload, func(e proctest.Event) bool { return e.Str("step") == string(control.StepDone) })
	for _, pid := range before {
		proctest.WaitGone(t, pid, 15*time.Second)
	}
	load.waitOK(t, 300, 10*time.Second)
	load.check(t)
	after := s.Children()
	if len(after) != 2 {
		t.Fatalf("want 2 workers after reload, have %v", after)
	}
	for _, pid := range after {
		if slices.Contains(before, pid) {
			t.Fatalf("worker %d survived the reload", pid)
		}
	}
	if st := s.status(); st.Generation != 2 {
		t.Fatalf("generation %d after one reload, want 2", st.Generation)
	}
}

// TestReloadToBrokenBinary: a reload whose new worker exits at once fails,
// ctl reload says why with a non-zero exit, and the old workers serve on.
func TestReloadToBrokenBinary(t *testing.T) {
	dir := t.TempDir()
	worker := filepath.Join(dir, "worker")
	b, err := os.ReadFile(workerBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(worker, b, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startReady(t, "-workers", "2", "--", worker)
	before := s.Children()
	// Deploy a broken build: write it beside and rename over, as deploys do.
	broken := filepath.Join(dir, "worker.new")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho broken build >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, worker); err != nil {
		t.Fatal(err)
	}
	out, code := s.ctl("reload")
	if code == 0 {
		t.Fatalf("ctl reload exit 0 for a broken build: %s", out)
	}
	if !strings.Contains(out, "exited before it was ready") {
		t.Fatalf("ctl reload does not say why: %s", out)
	}
	for range 10 {
		pid, err := s.pid()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(before, pid) {
			t.Fatalf("pid %d is not one of the old workers %v", pid, before)
		}
	}
	if got := s.Children(); !slices.Equal(sorted(got), sorted(before)) {
		t.Fatalf("workers changed: before %v after %v", before, got)
	}
}

func sorted(a []int) []int {
	b := slices.Clone(a)
	slices.Sort(b)
	return b
}

// TestScale: TTIN and TTOU add and remove a worker, and ctl scale sets the
// count, with no failed request under load, in every mode.
func TestScale(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-grace", "10s")
			load := startMixedLoad(t, s.url("/pid"), 4, 4)
			load.waitOK(t, 200, 10*time.Second)
			count := func() int { return len(s.status().pids("ready")) }

			s.Signal(syscall.SIGTTIN)
			proctest.Eventually(t, 10*time.Second, "3 ready workers after TTIN", func() bool { return count() == 3 })
			s.Signal(syscall.SIGTTOU)
			proctest.Eventually(t, 10*time.Second, "2 workers after TTOU", func() bool { return len(s.status().Workers) == 2 })
			if out, code := s.ctl("scale", "3"); code != 0 {
				t.Fatalf("ctl scale 3: %d %s", code, out)
			}
			if n := count(); n != 3 {
				t.Fatalf("ctl scale 3 returned with %d ready workers", n)
			}
			load.waitOK(t, 200, 10*time.Second)
			if out, code := s.ctl("scale", "1"); code != 0 {
				t.Fatalf("ctl scale 1: %d %s", code, out)
			}
			if st := s.status(); len(st.Workers) != 1 {
				t.Fatalf("ctl scale 1 returned with workers %+v", st.Workers)
			}
			load.waitOK(t, 200, 10*time.Second)
			load.check(t)
			if n := len(s.Children()); n != 1 {
				t.Fatalf("%d worker processes after scale 1", n)
			}
		})
	}
}

// TestHangDetection: a stopped worker stops sending heartbeats; with
// -hang-timeout 2s it is replaced within about 3s and its goroutine dump is
// in the log.
func TestHangDetection(t *testing.T) {
	checkHangDump(t, startReady(t, "-workers", "2", "-hang-timeout", "2s", "-worker-output", "capture"))
}

// checkHangDump: one of s's workers (run with -hang-timeout 2s and
// -worker-output capture), stopped, is replaced within about 3s and its
// goroutine dump is in the log.
func checkHangDump(t *testing.T, s *sup) {
	t.Helper()
	victim := s.status().Workers[0]
	pid, slot := victim.PID, victim.Slot
	stoppedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	s.waitEvent(5*time.Second, control.EventHang, func(e proctest.Event) bool { return e.Int("pid") == pid })
	s.waitEvent(5*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Int("slot") == slot && e.Int("pid") != pid })
	if d := time.Since(stoppedAt); d > 4*time.Second {
		t.Errorf("replaced after %s, want about 3s", d)
	}
	proctest.WaitGone(t, pid, 5*time.Second)
	proctest.Eventually(t, 5*time.Second, "goroutine dump of the hung worker in the log", func() bool {
		out := s.Out.String()
		return strings.Contains(out, "SIGQUIT") && strings.Contains(out, "goroutine ") && strings.Contains(out, `"pid":`+strconv.Itoa(pid))
	})
}

// TestMaxRequestsRecycles: with -max-requests 100 workers are recycled
// under load with no failed request.
func TestMaxRequestsRecycles(t *testing.T) {
	checkRecycles(t, startReady(t, "-workers", "2", "-max-requests", "100", "-max-requests-jitter", "20", "-grace", "10s"))
}

// checkRecycles: s's two workers, run with -max-requests, are recycled
// under load with no failed request.
func checkRecycles(t *testing.T, s *sup) {
	t.Helper()
	first := s.Children()
	load := startMixedLoad(t, s.url("/pid"), 4, 4)
	s.waitEvent(20*time.Second, control.EventRecycle, func(e proctest.Event) bool { return e.Str("step") == string(control.StepDone) })
	proctest.Eventually(t, 20*time.Second, "both first workers recycled", func() bool {
		return !procfs.Alive(first[0]) && !procfs.Alive(first[1])
	})
	load.waitOK(t, 100, 10*time.Second)
	load.check(t)
}

// TestControlSocket: status lists every worker, garbage gets an error reply
// and the supervisor keeps serving, and another user cannot connect.
func TestControlSocket(t *testing.T) {
	s := startReady(t, "-workers", "2")
	out, code := s.ctl("status")
	if code != 0 {
		t.Fatalf("ctl status: %d %s", code, out)
	}
	for _, pid := range s.Children() {
		if !strings.Contains(out, strconv.Itoa(pid)) {
			t.Fatalf("status lacks worker %d:\n%s", pid, out)
		}
	}
	st, err := os.Stat(s.ctlPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, want 0600", st.Mode())
	}
	for _, garbage := range []string{"not json\n", `{"cmd":"explode"}` + "\n", `{"cmd":"scale","n":-4}` + "\n", strings.Repeat("x", 10000) + "\n"} {
		c, err := net.Dial("unix", s.ctlPath)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, garbage)
		reply, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(reply), `"error"`) {
			t.Fatalf("garbage %.20q: reply %q has no error", garbage, reply)
		}
	}
	if _, err := s.pid(); err != nil {
		t.Fatalf("supervisor stopped serving after garbage: %v", err)
	}
	if os.Getuid() != 0 {
		t.Log("not root: cannot run ctl as another user; skipping that part")
		return
	}
	// Another user: the socket's directory is the test's temp dir; open it
	// up so that only the socket's own mode stands in the way.
	for dir := filepath.Dir(s.ctlPath); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		os.Chmod(dir, 0o755)
	}
	cmd := execAs(65534, supervisorBin, "ctl", "-control", s.ctlPath, "status")
	out2, err := cmd.CombinedOutput()
	if exitCode(err) == 0 {
		t.Fatalf("another user's ctl status succeeded: %s", out2)
	}
	if !strings.Contains(string(out2), "permission denied") {
		t.Fatalf("want permission denied, have %s", out2)
	}
}

// TestUserDrop: the supervisor runs as root and binds; workers run as
// -user nobody.
func TestUserDrop(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start workers as another user")
	}
	s := startReady(t, "-workers", "2", "-user", "nobody")
	for _, pid := range s.Children() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] != "65534" {
				t.Fatalf("worker %d: %s, want uid 65534", pid, line)
			}
		}
	}
	if _, err := s.pid(); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerOutputCapture: with -worker-output capture, worker lines come
// back through the supervisor's logger with slot and pid.
func TestWorkerOutputCapture(t *testing.T) {
	s := startReady(t, "-workers", "1", "-worker-output", "capture", "--", "/bin/sh", "-c",
		`echo hello from the worker; exec env PREFORK_E2E_ROLE=serve "$0"`, os.Args[0])
	pid := s.status().Workers[0].PID
	e, ok := s.Out.WaitJSON(5*time.Second, func(m map[string]any) bool {
		return m["logger"] == "supervisor.worker" && m["msg"] == "hello from the worker"
	})
	if !ok {
		t.Fatalf("worker line not re-emitted:\n%s", s.Out.String())
	}
	if int(e["pid"].(float64)) != pid || int(e["slot"].(float64)) != 1 || e["stream"] != "stdout" {
		t.Fatalf("captured line lacks slot/pid/stream: %v", e)
	}
}
