package execsignal

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary plays both images: TestMain's child roles run before the
// tests, in a process the test started.
const roleVar = "EXECSIGNAL_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleVar) {
	case "old":
		os.Exit(oldImage())
	case "new":
		os.Exit(newImage())
	}
	os.Exit(m.Run())
}

// oldImage holds the signals, makes each of them pending on its own
// thread (as one sent while it execs is), and execs the new image.
func oldImage() int {
	runtime.LockOSThread()
	if _, err := Hold(true); err != nil {
		fmt.Println(err)
		return 1
	}
	tid := syscall.Gettid()
	if os.Getenv("NOKILL") != "" {
		tid = -1
	}
	for _, sig := range sigNums {
		if tid < 0 {
			break
		}
		if err := syscall.Tgkill(os.Getpid(), tid, sig); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, roleVar+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, roleVar+"=new", Env+"=1")
	err := syscall.Exec(os.Args[0], os.Args[:1], env)
	fmt.Println("exec:", err)
	return 1
}

// newImage prints what init caught, then what Early gets later.
func newImage() int {
	ch, ok := Early()
	if !ok {
		fmt.Println("no early channel")
		return 1
	}
	var got []string
	for {
		select {
		case sig := <-ch:
			got = append(got, sig.(syscall.Signal).String())
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	fmt.Println("caught:", strings.Join(got, ","))
	// Sent now, each reaches the channel.
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.After(5 * time.Second)
	for n := 0; n < 2; n++ {
		select {
		case sig := <-ch:
			fmt.Println("later:", sig.(syscall.Signal).String())
		case <-deadline:
			fmt.Println("later: nothing")
			return 1
		}
	}
	return 0
}

// TestCarried: the signals pending at execve are neither fatal to the new
// image nor stop it; those Go's runtime keeps blocked (SIGUSR2, SIGTTIN,
// SIGTTOU) reach Early's channel; those it unblocks before any package's
// init (SIGTERM, SIGINT, SIGHUP) too in a cgo build, whose C constructor
// takes them before the runtime starts, and are lost in one without cgo;
// later ones all arrive.
func TestCarried(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleVar+"=old")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the new image did not exit (stopped by SIGTTIN?): %s", out)
	}
	if err != nil {
		t.Fatalf("the new image: %v (killed by a carried signal?): %s", err, out)
	}
	have := string(out)
	caught := "caught: user defined signal 2,stopped (tty input),stopped (tty output)"
	if cgoTakesPending {
		caught = "caught: hangup,interrupt,terminated,user defined signal 2,stopped (tty input),stopped (tty output)"
	}
	for _, want := range []string{caught, "later: terminated", "later: hangup"} {
		if !strings.Contains(have, want) {
			t.Errorf("want %q in:\n%s", want, have)
		}
	}
}
