package e2e

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

// TestSpawnOutOfDescriptors: a supervisor that runs out of descriptors while
// it starts workers (EMFILE) fails those starts cleanly. It keeps serving
// with the workers it had, a worker that dies afterwards is replaced, and it
// stops cleanly: no panic, no worker left with half its descriptors.
func TestSpawnOutOfDescriptors(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit (util-linux) is needed: ", err)
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := startUnder(t, []string{prlimit, "--nofile=64:64", "--"}, "-workers", "2", "-mode", mode)
			s.waitReady(10 * time.Second)
			// 100 workers need more descriptors than the supervisor may
			// have: a start in the middle of the scale-up fails, and the
			// scale-up is undone as a whole.
			out, code := s.ctl("scale", "100")
			if code != 1 || !strings.Contains(out, "too many open files") || !strings.Contains(out, "staying at 2") {
				t.Fatalf("scale 100 under a 64-descriptor limit: exit %d: %q; want a failure for want of descriptors", code, out)
			}
			const have = 2
			// Every worker left serves, and one that dies is replaced.
			victim := s.status().Workers[0].PID
			from := s.events.Count()
			syscall.Kill(victim, syscall.SIGKILL)
			s.waitEvent(5*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Pos >= from })
			proctest.Eventually(t, 5*time.Second, "the workers serve", func() bool {
				st := s.status()
				return len(st.pids(string(control.StateReady))) == have
			})
			for range 10 {
				if _, err := s.pid(); err != nil {
					t.Fatal(err)
				}
			}
			s.Signal(syscall.SIGTERM)
			if code := s.WaitExit(10 * time.Second); code != 0 {
				t.Fatalf("exit %d after a clean stop, want 0", code)
			}
			if out := s.Out.String(); strings.Contains(out, "panic") {
				t.Fatalf("the supervisor panicked:\n%s", out)
			}
		})
	}
}
