package e2e

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// Workers in any language (-worker-protocol systemd and plain): servers
// that are not Go programs linking the cluster package, run from
// testdata. They need Debian's python3, gunicorn and python3-uvicorn,
// which make test-deps installs.

// need returns the path of a program a test needs, failing with what to
// install if it is missing.
func need(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("%s is missing: apt-get install -y %s (make test-deps installs it): %v", path, pkg, err)
	}
	return path
}

// pythonNeeds fails unless Debian's python3 can import module.
func pythonNeeds(t *testing.T, python, module, pkg string) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import "+module).CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import %s: apt-get install -y %s (make test-deps installs it): %v\n%s", python, module, pkg, err, out)
	}
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestForeignWorkerLifecycle runs the standard-library Python server under
// -worker-protocol systemd and plain, in shared and reuseport mode: every
// worker serves, a killed one is respawned in its slot, a reload under
// load fails no request, and a stop exits 0. Under systemd the server
// itself checks LISTEN_PID and LISTEN_FDS, and is ready at its READY=1.
func TestForeignWorkerLifecycle(t *testing.T) {
	python := need(t, "/usr/bin/python3", "python3")
	server := testdata(t, "inherit_server.py")
	for _, proto := range []string{"systemd", "plain"} {
		for _, mode := range []string{"shared", "reuseport"} {
			t.Run(proto+"/"+mode, func(t *testing.T) {
				s := startReady(t, "-workers", "2", "-mode", mode, "-worker-protocol", proto, "-grace", "10s", "--", python, server)
				if proto == "systemd" {
					s.waitEvent(5*time.Second, control.EventMessage, func(e proctest.Event) bool { return e.Str("msg") == "STATUS=serving" })
				}
				checkForeignLifecycle(t, s, 2, 2, 2)
			})
		}
	}
}

// checkForeignLifecycle checks that n workers answer /pid, that a kill -9
// is respawned, that a reload under load fails nothing, and that a stop
// exits 0. /pid answers with the pid of the process that serves, which
// for a pre-forking server such as gunicorn is the server's own child.
// The load during the reload runs keepAlive clients that reuse connections
// and fresh ones that do not: keep-alive only for a server that closes a
// connection after a response as it drains (the Python test server does).
func checkForeignLifecycle(t *testing.T, s *sup, n, keepAlive, fresh int) {
	t.Helper()
	workers := s.Children()
	if len(workers) != n {
		t.Fatalf("%d workers, want %d", len(workers), n)
	}
	pids := s.waitPIDs(n)
	direct := true
	for pid := range pids {
		direct = direct && slices.Contains(workers, pid)
	}

	victim := s.status().Workers[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := s.waitEvent(10*time.Second, control.EventReady, func(e proctest.Event) bool {
		return e.Int("slot") == victim.Slot && e.Int("pid") != victim.PID
	})
	if direct {
		proctest.Eventually(t, 10*time.Second, "the respawned worker serves /pid", func() bool {
			pid, err := s.pid()
			return err == nil && pid == e.Int("pid")
		})
	} else {
		s.waitPIDs(n)
	}

	before := s.Children()
	var load *mixedLoad
	if keepAlive+fresh > 0 {
		load = startMixedLoad(t, s.url("/pid"), keepAlive, fresh)
		load.waitOK(t, 100, 10*time.Second)
	}
	s.Signal(syscall.SIGHUP)
	s.waitEvent(30*time.Second, control.EventReload, func(e proctest.Event) bool { return e.Str("step") == string(control.StepDone) })
	for _, pid := range before {
		proctest.WaitGone(t, pid, 15*time.Second)
	}
	if load != nil {
		load.waitOK(t, 100, 10*time.Second)
		load.check(t)
	}
	s.waitPIDs(n)

	workers = s.Children()
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after a graceful stop, want 0; stderr:\n%s", code, s.Out)
	}
	// Each worker exited on its own after SIGTERM, not killed at -grace.
	for _, pid := range workers {
		if _, ok := s.Out.WaitJSON(5*time.Second, func(l map[string]any) bool {
			return l["msg"] == "worker exited" && l["pid"] == float64(pid) && l["reason"] == "stop" && l["code"] == float64(0)
		}); !ok {
			t.Errorf("no log line of worker %d exiting with code 0 on stop; stderr:\n%s", pid, s.Out)
		}
	}
}

// TestGunicornSocketActivation runs Debian's gunicorn, which takes a
// systemd socket when LISTEN_PID is its own pid and says READY=1, under
// -worker-protocol systemd in both modes that suit it.
func TestGunicornSocketActivation(t *testing.T) {
	gunicorn := need(t, "/usr/bin/gunicorn", "gunicorn")
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-worker-protocol", "systemd", "-grace", "10s", "--",
				gunicorn, "--workers", "1", "--chdir", testdata(t, "."), "pid_app:app")
			// gunicorn binds nothing itself: it must have used fd 3.
			s.waitEvent(5*time.Second, control.EventMessage, func(e proctest.Event) bool { return strings.HasPrefix(e.Str("msg"), "STATUS=Gunicorn") })
			checkForeignLifecycle(t, s, 2, 0, 4)
		})
	}
}

// TestUvicornInheritedSocket runs Debian's uvicorn with --fd 3 under
// -worker-protocol plain in both modes that suit it.
func TestUvicornInheritedSocket(t *testing.T) {
	python := need(t, "/usr/bin/python3", "python3")
	pythonNeeds(t, python, "uvicorn", "python3-uvicorn")
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			s := startReady(t, "-workers", "2", "-mode", mode, "-worker-protocol", "plain", "-grace", "10s", "--",
				python, "-m", "uvicorn", "--fd", "3", "--no-access-log", "--app-dir", testdata(t, "."), "pid_app:asgi")
			// No load across the reload: uvicorn's graceful shutdown closes
			// a connection it has accepted but not yet read a request from
			// (H11Protocol.shutdown), so a request sent at that instant
			// fails whoever supervises it.
			checkForeignLifecycle(t, s, 2, 0, 0)
		})
	}
}

// TestForeignWorkerFlags: rr cannot serve a worker without prefork's
// control channel, and the command line says so, naming both flags.
func TestForeignWorkerFlags(t *testing.T) {
	for _, proto := range []string{"systemd", "plain"} {
		cmd := exec.Command(supervisorBin, "-listen", "127.0.0.1:0", "-mode", "rr", "-worker-protocol", proto, "--", "/bin/true")
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), "-mode rr") || !strings.Contains(string(out), "-worker-protocol "+proto) {
			t.Errorf("-mode rr -worker-protocol %s: exit %d, %q; want 2 naming both flags", proto, code, out)
		}
	}
	if out, err := exec.Command(supervisorBin, "-mode", "shared", "-worker-protocol", "fastcgi").CombinedOutput(); exitCode(err) != 2 || !strings.Contains(string(out), "-worker-protocol") {
		t.Errorf("-worker-protocol fastcgi: exit %d, %q; want 2 naming the flag", exitCode(err), out)
	}
}
