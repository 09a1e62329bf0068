package e2e

import (
	"bufio"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// scrape fetches a Prometheus text page and sums the samples of name whose
// labels contain every given label pair.
func scrape(t testing.TB, url, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Fatalf("metric %s%v not found at %s", name, labels, url)
	}
	return sum
}

// TestMetrics scrapes the metrics listener: handoffs grow by exactly the
// requests sent over new connections in rr mode, and worker gauges come
// from heartbeats.
func TestMetrics(t *testing.T) {
	maddr := proctest.FreeAddr(t)
	s := startReady(t, "-workers", "2", "-metrics", maddr)
	url := "http://" + maddr + "/metrics"
	if got := scrape(t, url, "prefork_workers", `state="ready"`); got != 2 {
		t.Fatalf("prefork_workers{state=ready} = %v, want 2", got)
	}
	before := scrape(t, url, "prefork_handoffs_total")
	const n = 50
	for range n {
		if _, err := s.pid(); err != nil {
			t.Fatal(err)
		}
	}
	if want, have := before+n, scrape(t, url, "prefork_handoffs_total"); want != have {
		t.Fatalf("prefork_handoffs_total: want %v, have %v", want, have)
	}
	// Every accepted burst is timed: at least one observation, and no more
	// than one per connection.
	if got := scrape(t, url, "prefork_handoff_duration_seconds_count"); got < 1 || got > before+n {
		t.Fatalf("prefork_handoff_duration_seconds_count = %v, want 1..%v", got, before+n)
	}
	if got := scrape(t, url, "prefork_worker_spawns_total", `cause="start"`); got != 2 {
		t.Fatalf("spawns by start = %v, want 2", got)
	}
	proctest.Eventually(t, 5*time.Second, "heartbeats report requests", func() bool {
		return scrape(t, url, "prefork_worker_requests_total") >= n
	})
	if rss := scrape(t, url, "prefork_worker_resident_memory_bytes"); rss <= 0 {
		t.Fatalf("worker RSS %v", rss)
	}
	// The metrics listener is not the workers' port.
	if code, _, _ := s.get("/metrics"); code != 404 {
		t.Fatalf("/metrics on the service port: status %d, want 404", code)
	}
	victim, from := s.Children()[0], s.events.Count()
	syscall.Kill(victim, syscall.SIGKILL)
	s.waitEvent(3*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Pos >= from })
	proctest.Eventually(t, 3*time.Second, "crash counted", func() bool {
		return scrape(t, url, "prefork_worker_exits_total", `cause="crash"`) == 1 &&
			scrape(t, url, "prefork_worker_spawns_total", `cause="crash"`) == 1
	})
}

// TestSystemdNotify: with NOTIFY_SOCKET set, the supervisor tells systemd
// READY=1 once all workers serve, RELOADING=1 then READY=1 around a reload,
// and STOPPING=1 on stop; workers do not inherit NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", want)
				}
				if strings.HasPrefix(m, want) || strings.Contains(m, "\n"+want) {
					return m
				}
				if !strings.HasPrefix(m, "STATUS=") && !strings.HasPrefix(m, "WATCHDOG=") {
					t.Fatalf("got %q while waiting for %s", m, want)
				}
			case <-deadline:
				t.Fatalf("no %s", want)
			}
		}
	}
	addr := proctest.FreeAddr(t)
	cmd := exec.Command(supervisorBin, "-listen", addr, "-workers", "2", "-log-format", "json", "-control", "none")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	s := adopt(t, cmd, addr, "")
	next("READY=1")
	next("WATCHDOG=1")
	for _, pid := range s.Children() {
		env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if strings.Contains(string(env), "NOTIFY_SOCKET") || strings.Contains(string(env), "WATCHDOG_USEC") {
			t.Fatalf("worker %d inherited the systemd variables", pid)
		}
	}
	s.Signal(syscall.SIGHUP)
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	s.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestReapsOrphans: as a child subreaper (what PID 1 in a container is),
// the supervisor reaps a grandchild that a worker left behind, and still
// gets its own workers' exit statuses.
func TestReapsOrphans(t *testing.T) {
	s := startRole(t, "orphan", nil, "-workers", "1")
	s.waitReady(10 * time.Second)
	worker := s.status().Workers[0].PID
	e := s.waitEvent(5*time.Second, control.EventReap, nil)
	if pid := e.Int("pid"); pid == 0 || pid == worker {
		t.Fatalf("reaped %d", pid)
	}
	syscall.Kill(worker, syscall.SIGKILL)
	ex := s.waitEvent(3*time.Second, control.EventExit, func(e proctest.Event) bool { return e.Int("pid") == worker })
	if ex.Str("reason") != string(control.CauseCrash) || ex.Str("signal") != "SIGKILL" {
		t.Fatalf("worker exit status lost: %v", ex.Event)
	}
}

// TestDeployFlags runs the supervisor with the exact arguments of the
// systemd unit and the Kubernetes Deployment (ports and paths swapped for
// free ones, flags overriding the unit's -config file), so the deploy
// files cannot drift from the flags.
func TestDeployFlags(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/systemd/prefork.service")
	if err != nil {
		t.Fatal(err)
	}
	var execStart []string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			execStart = strings.Fields(v)[1:]
		}
	}
	// The unit's configuration file, where it installs it.
	for i, a := range execStart {
		if a == "/etc/prefork/prefork.toml" {
			execStart[i] = "../../deploy/systemd/prefork.toml"
		}
	}
	k8s, err := os.ReadFile("../../deploy/kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k8sArgs []string
	in := false
	for _, line := range strings.Split(string(k8s), "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case trim == "args:":
			in = true
		case in && strings.HasPrefix(trim, "- "):
			k8sArgs = append(k8sArgs, strings.Trim(strings.TrimPrefix(trim, "- "), `"`))
		case in:
			in = false
		}
	}
	for name, args := range map[string][]string{"systemd": execStart, "kubernetes": k8sArgs} {
		t.Run(name, func(t *testing.T) {
			if len(args) < 2 {
				t.Fatalf("no arguments found: %v", args)
			}
			addr, ctl := proctest.FreeAddr(t), filepath.Join(t.TempDir(), "ctl.sock")
			swapped := swapFlags(args, map[string]string{
				"-listen":  addr,
				"-metrics": proctest.FreeAddr(t),
				"-control": ctl,
				"-workers": "2",
			})
			s := adopt(t, exec.Command(supervisorBin, swapped...), addr, ctl)
			s.waitReady(10 * time.Second)
			if _, err := s.pid(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func swapFlags(args []string, repl map[string]string) []string {
	out := append([]string(nil), args...)
	seen := map[string]bool{}
	for i := 0; i+1 < len(out); i++ {
		if v, ok := repl[out[i]]; ok {
			out[i+1] = v
			seen[out[i]] = true
		}
	}
	// A flag the deployment leaves at its default is added in front (before
	// any "--" and worker command), so that the test still runs with the
	// values it needs (a free port, 2 workers).
	var missing []string
	for _, k := range slices.Sorted(maps.Keys(repl)) {
		if !seen[k] {
			missing = append(missing, k, repl[k])
		}
	}
	return append(missing, out...)
}
