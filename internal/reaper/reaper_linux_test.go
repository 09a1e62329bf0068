package reaper

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/procfs"
)

// The test binary doubles as the helper programs, chosen by this variable.
const helperEnv = "PREFORK_REAPER_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "orphan-parent":
		orphanParent()
	case "hold":
		hold()
	case "exit":
		code, _ := strconv.Atoi(os.Getenv("PREFORK_REAPER_EXIT"))
		os.Exit(code)
	}
	os.Exit(100)
}

// orphanParent starts a "hold" grandchild on the pipe it got as fd 3, prints
// the grandchild's pid and exits without waiting for it, orphaning it.
func orphanParent() {
	cmd := helper("hold")
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "hold")}
	if err := cmd.Start(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(101)
	}
	os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
	os.Exit(0)
}

// hold lives until every write end of the pipe on fd 3 is closed: by the
// test on purpose, or by the kernel when the test process dies, so a failed
// run leaves nothing behind.
func hold() {
	io.Copy(io.Discard, os.NewFile(3, "hold"))
	os.Exit(0)
}

func helper(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// Race-enabled binaries otherwise linger a second in exit.
	env = append(env, "GORACE=atexit_sleep_ms=0", helperEnv+"="+role)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

const deadline = 10 * time.Second

// poll waits until cond holds, failing the test at the deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	timeout := time.After(deadline)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
	}
}

// children lists every process whose parent is this one, in any state.
func children() []int {
	all, _ := procfs.PIDs()
	var pids []int
	for _, pid := range all {
		if isChild(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// noLeakedChildren fails t if any child outlives the test. Register it
// first so that it runs after every other cleanup.
func noLeakedChildren(t *testing.T) {
	t.Cleanup(func() {
		poll(t, "no children left", func() bool { return len(children()) == 0 })
	})
}

func isChild(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && st.PPID == os.Getpid()
}

// waitable reports whether pid is a child that a wait would collect now,
// without collecting it (WNOWAIT). This is stricter than state Z in /proc:
// the leader of a multithreaded process such as a Go program shows Z as
// soon as its own thread exits, but cannot be waited for until every other
// thread is gone too.
func waitable(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo == int32(unix.SIGCHLD)
}

// orphan makes a process that is this one's child without having been
// started by it: a helper starts a grandchild and exits at once. The
// grandchild lives until release is called.
func orphan(t *testing.T, owned *Owned) (pid int, release func()) {
	t.Helper()
	if err := SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe() // both ends O_CLOEXEC: only ExtraFiles passes r on
	if err != nil {
		t.Fatal(err)
	}
	release = func() { w.Close() }
	parent := helper("orphan-parent")
	parent.ExtraFiles = []*os.File{r}
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := owned.Start(parent); err != nil {
		t.Fatal(err)
	}
	r.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	if werr := parent.Wait(); werr != nil {
		t.Fatalf("orphan parent: %v", werr)
	}
	owned.Forget(parent.Process.Pid)
	if err != nil {
		t.Fatalf("read grandchild pid: %v", err)
	}
	pid, err = strconv.Atoi(line[:len(line)-1])
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", line, err)
	}
	t.Cleanup(func() {
		release()
		// Only if the test failed before reaping it: still our child, so
		// the pid cannot have been reused.
		if isChild(pid) {
			unix.Wait4(pid, nil, 0, nil)
		}
	})
	// We are a subreaper, so the kernel re-parented the grandchild to us
	// before its parent became a zombie, i.e. before parent.Wait returned.
	if !isChild(pid) {
		t.Fatalf("grandchild %d was not re-parented to the test process", pid)
	}
	return pid, release
}

func TestReapCollectsOrphan(t *testing.T) {
	noLeakedChildren(t)
	var owned Owned
	pid, release := orphan(t, &owned)

	if have := Reap(owned.Has); len(have) != 0 {
		t.Fatalf("reaped %v while the orphan is still running", have)
	}
	release()
	poll(t, "the orphan to exit", func() bool { return waitable(pid) })

	if want, have := []int{pid}, Reap(owned.Has); !slices.Equal(want, have) {
		t.Fatalf("Reap: want %v, have %v", want, have)
	}
	if isChild(pid) {
		t.Errorf("orphan %d is still our child after Reap", pid)
	}
	if have := Reap(owned.Has); len(have) != 0 {
		t.Errorf("second Reap: want nothing, have %v", have)
	}
}

func TestReapSkipsOwnChildren(t *testing.T) {
	noLeakedChildren(t)
	var owned Owned
	orphanPID, release := orphan(t, &owned)

	own := helper("exit", "PREFORK_REAPER_EXIT=7")
	if err := owned.Start(own); err != nil {
		t.Fatal(err)
	}
	release()
	poll(t, "both children to exit", func() bool {
		return waitable(own.Process.Pid) && waitable(orphanPID)
	})

	if want, have := []int{orphanPID}, Reap(owned.Has); !slices.Equal(want, have) {
		t.Fatalf("Reap: want %v, have %v", want, have)
	}
	if !waitable(own.Process.Pid) {
		t.Fatal("Reap collected a child that isOwn claimed")
	}
	err := own.Wait()
	owned.Forget(own.Process.Pid)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Fatalf("cmd.Wait of own child: want exit status 7, have %v", err)
	}
}

func TestRunReapsOnSIGCHLD(t *testing.T) {
	noLeakedChildren(t)
	var owned Owned
	ctx, cancel := context.WithCancel(context.Background())
	reaped := make(chan int, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, owned.Has, func(pid int) { reaped <- pid })
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Own children that exit at once, started while Run reaps: every exit
	// status must still reach cmd.Wait.
	for i := 0; i < 10; i++ {
		own := helper("exit", "PREFORK_REAPER_EXIT="+strconv.Itoa(i+1))
		if err := owned.Start(own); err != nil {
			t.Fatal(err)
		}
		err := own.Wait()
		owned.Forget(own.Process.Pid)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != i+1 {
			t.Fatalf("own child %d: want exit status %d, have %v", i, i+1, err)
		}
	}

	pid, release := orphan(t, &owned)
	release()
	select {
	case have := <-reaped:
		if have != pid {
			t.Fatalf("Run reaped %d, want the orphan %d", have, pid)
		}
	case <-time.After(deadline):
		t.Fatalf("Run did not reap orphan %d within %v", pid, deadline)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("Run did not return after cancel")
	}
	select {
	case extra := <-reaped:
		t.Errorf("Run reaped unexpected pid %d", extra)
	default:
	}
}
