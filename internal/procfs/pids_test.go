package procfs

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// A child this test starts is listed among its children and alive; once
// waited for, it is neither.
func TestChildrenAndAlive(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if !Alive(pid) || !slices.Contains(Children(os.Getpid()), pid) {
		t.Fatalf("running child %d: alive %v, children %v", pid, Alive(pid), Children(os.Getpid()))
	}
	cmd.Process.Kill()
	cmd.Wait()
	if Alive(pid) || slices.Contains(Children(os.Getpid()), pid) {
		t.Fatalf("reaped child %d still alive or listed", pid)
	}
}
