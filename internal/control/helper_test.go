package control

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// nobody is the uid (and gid) tests run helpers as to be another user.
const nobody = 65534

// nobodyDir returns a new directory in /tmp owned by nobody, and a copy of
// the test binary in it that nobody can run; cleanup removes both.
func nobodyDir(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "prefork-control-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe = filepath.Join(dir, "control.test")
	copyFile(t, exe)
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return dir, exe
}

// helper is the test binary re-executed as a helper program, spoken to
// through its stdin and stdout.
type helper struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// startHelper runs exe with env added, as uid if uid >= 0, its stderr to
// stderr. It is killed if it runs for more than 30s.
func startHelper(t *testing.T, exe, env string, uid int, stderr io.Writer) *helper {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), env)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err == nil {
		var stdout io.ReadCloser
		if stdout, err = cmd.StdoutPipe(); err == nil {
			if err = cmd.Start(); err == nil {
				return &helper{cmd: cmd, cancel: cancel, stdin: stdin, stdout: bufio.NewReader(stdout)}
			}
		}
	}
	cancel()
	t.Fatal(err)
	return nil
}

// expect fails t unless the helper's next line is want.
func (h *helper) expect(t *testing.T, want string) {
	t.Helper()
	if line, err := h.stdout.ReadString('\n'); line != want+"\n" {
		t.Fatalf("helper said %q, %v; want %q", line, err, want)
	}
}

// stop closes the helper's stdin, checks that its last line is last, and
// waits for it to exit 0. It does not stop t, so that the helper is always
// waited for: call it deferred.
func (h *helper) stop(t *testing.T, last string) {
	t.Helper()
	defer h.cancel()
	h.stdin.Close()
	if line, err := h.stdout.ReadString('\n'); line != last+"\n" {
		t.Errorf("helper said %q, %v; want %q", line, err, last)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("helper: %v", err)
	}
}
