package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// The public cluster API, end to end: examples/singlebinary and
// examples/primary, each one binary that is its own primary
// (primary.ListenAndServe, primary.Start), run as real processes.

// singlebinary built with version v1 and v2, and examples/primary, each
// built (or found in proctest's cache) by the first test that needs it.
var appV1, appV2, counterBin string

// buildExamples builds the example binaries.
func buildExamples(t *testing.T) {
	t.Helper()
	for _, b := range []struct {
		path  *string
		pkg   string
		flags []string
	}{
		{&appV1, "./examples/singlebinary", []string{"-race"}},
		{&appV2, "./examples/singlebinary", []string{"-race", "-ldflags=-X main.version=v2"}},
		{&counterBin, "./examples/primary", []string{"-race"}},
	} {
		path, err := proctest.Build(b.pkg, b.flags...)
		if err != nil {
			t.Fatal(err)
		}
		*b.path = path
	}
}

// startApp runs bin, a program that is its own primary, with a free
// -listen address, JSON logs and a control socket in the test's temp dir,
// and waits until its workers are ready.
func startApp(t *testing.T, bin string, args ...string) *sup {
	t.Helper()
	addr := proctest.FreeAddr(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	argv := append([]string{"-listen", addr, "-log-format", "json", "-control", ctl}, args...)
	s := adopt(t, exec.Command(bin, argv...), addr, ctl)
	s.waitReady(10 * time.Second)
	return s
}

// TestAPISingleBinary: in every mode, the single binary forks its
// workers, replaces one killed with SIGKILL, and on SIGTERM finishes the
// request in flight, exits 0 and leaves no worker.
func TestAPISingleBinary(t *testing.T) {
	buildExamples(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startApp(t, appV1, "-workers", "2", "-mode", mode)
			pids := s.waitPIDs(2)
			for pid := range pids {
				if !s.isChild(pid) {
					t.Fatalf("pid %d answered /pid but is not the primary's child", pid)
				}
			}
			var victim int
			for pid := range pids {
				victim = pid
				break
			}
			syscall.Kill(victim, syscall.SIGKILL)
			fork := s.waitEvent(10*time.Second, control.EventFork, func(e proctest.Event) bool { return e.Str("cause") == string(control.CauseCrash) })
			respawned := fork.Int("pid")
			proctest.Eventually(t, 5*time.Second, "the respawned worker serves", func() bool {
				pid, err := s.pid()
				if err != nil {
					t.Fatal(err)
				}
				return pid == respawned
			})

			s.stopDuringRequest(500)
		})
	}
}

// isChild reports whether pid is a child of the supervisor.
func (s *sup) isChild(pid int) bool {
	for _, c := range s.Children() {
		if c == pid {
			return true
		}
	}
	return false
}

// TestAPIReloadNewBinary: a deploy of the single binary is a new build
// moved into its path and SIGHUP; the reloaded workers run the new build,
// and no request fails meanwhile.
func TestAPIReloadNewBinary(t *testing.T) {
	buildExamples(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	copyExecutable(t, appV1, app)
	s := startApp(t, app, "-workers", "2", "-grace", "10s")
	if _, body, err := s.get("/"); err != nil || !strings.HasPrefix(body, "hello from v1") {
		t.Fatalf("before the deploy: %q, %v", body, err)
	}
	load := startMixedLoad(t, s.url("/"), 4, 4)
	load.waitOK(t, 300, 10*time.Second)
	// Linux refuses to write to a running executable (ETXTBSY): a deploy
	// writes beside it and renames over.
	copyExecutable(t, appV2, app+".new")
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGHUP)
	s.waitEvent(15*time.Second, control.EventReload, func(e proctest.Event) bool { return e.Str("step") == string(control.StepDone) })
	load.waitOK(t, 300, 10*time.Second)
	load.check(t)
	for range 4 {
		if _, body, err := s.get("/"); err != nil || !strings.HasPrefix(body, "hello from v2") {
			t.Fatalf("after the reload: %q, %v", body, err)
		}
	}
}

// copyExecutable copies the binary src to dst, mode 0755.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAPIMessages: examples/primary's workers report their request counts
// with cluster.Send, its primary adds them up and sends the total to every
// worker with Worker.Send, which each receives on cluster.Messages.
func TestAPIMessages(t *testing.T) {
	buildExamples(t)
	s := startApp(t, counterBin, "-workers", "2")
	s.waitPIDs(2)
	const n = 20
	for range n {
		if code, _, err := s.get("/count"); err != nil || code != 200 {
			t.Fatalf("/count: %d %v", code, err)
		}
	}
	s.waitEvent(5*time.Second, control.EventMessage, nil) // worker → primary
	// rr hands new connections to the workers in turn: a run of answers
	// that all say n is both workers having heard the total.
	run := 0
	proctest.Eventually(t, 5*time.Second, fmt.Sprintf("every worker hears the total %d", n), func() bool {
		_, body, err := s.get("/total")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(body) == fmt.Sprint(n) {
			run++
		} else {
			run = 0
		}
		return run >= 6
	})
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}
