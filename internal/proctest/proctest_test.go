package proctest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/procfs"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestProcExitCodeAndOutput(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `echo '{"msg":"hello","n":1}'; echo plain; exit 3`))
	if have, want := p.WaitExit(10*time.Second), 3; have != want {
		t.Fatalf("exit status %d, want %d", have, want)
	}
	m, ok := p.Out.WaitJSON(time.Second, func(m map[string]any) bool { return m["msg"] == "hello" })
	if !ok || m["n"] != 1.0 {
		t.Fatalf("WaitJSON: %v %v; output %q", m, ok, p.Out)
	}
	if have, want := p.Out.String(), "{\"msg\":\"hello\",\"n\":1}\nplain\n"; have != want {
		t.Fatalf("output %q, want %q", have, want)
	}
	if _, ok := p.Out.WaitJSON(50*time.Millisecond, func(m map[string]any) bool { return m["msg"] == "plain" }); ok {
		t.Fatal("WaitJSON matched a line that is not JSON")
	}
}

// Kill takes the children a process leaves with it, even a stopped one.
func TestProcKillTakesChildren(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `sleep 60 & sleep 60 & kill -STOP $!; echo started; wait`))
	Eventually(t, 10*time.Second, "two children", func() bool { return len(p.Children()) == 2 })
	kids := p.Children()
	if p.FDs() < 3 {
		t.Fatalf("%d descriptors, want stdin, stdout and stderr at least", p.FDs())
	}
	// The children hold the output pipe: Kill must not wait on it first.
	killed := make(chan struct{})
	go func() { p.Kill(); close(killed) }()
	select {
	case <-killed:
	case <-time.After(5 * time.Second):
		t.Fatal("Kill still waiting after 5s")
	}
	if p.Running() {
		t.Fatal("running after Kill")
	}
	for _, pid := range kids {
		if procfs.Alive(pid) {
			t.Errorf("child %d alive after Kill", pid)
		}
	}
}

func TestProcSignal(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `trap 'exit 7' TERM; echo ready; while :; do sleep 0.01; done`))
	Eventually(t, 10*time.Second, "ready", func() bool { return strings.Contains(p.Out.String(), "ready") })
	p.Signal(syscall.SIGTERM)
	if have, want := p.WaitExit(10*time.Second), 7; have != want {
		t.Fatalf("exit status %d, want %d", have, want)
	}
}

func TestTail(t *testing.T) {
	var o Output
	o.Write([]byte("a\n"))
	for i := range 5 {
		o.Write([]byte(`{"msg":"flood","i":` + strconv.Itoa(i) + "}\n"))
	}
	o.Write([]byte("z\n"))
	have := o.Tail(3)
	want := "{\"msg\":\"flood\",\"i\":0}\n\t... 4 more lines like the one above\nz"
	if have != want {
		t.Fatalf("Tail(3) = %q, want %q", have, want)
	}
}

func TestBuildCached(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	first, err := Build("./cmd/worker")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	// A new process's Build (the map of this one reset) finds the file.
	builds.mu.Lock()
	builds.once = nil
	builds.mu.Unlock()
	again, err := Build("./cmd/worker")
	if err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(again)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || !os.SameFile(fi, fi2) || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("second Build gave %s (%v), want the cached %s (%v)", again, fi2.ModTime(), first, fi.ModTime())
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("%s: mode %v, want 0755 (workers of another user run it)", first, fi.Mode())
	}
}

func TestFreeAddr(t *testing.T) {
	a, b := FreeAddr(t), FreeAddr(t)
	if !strings.HasPrefix(a, "127.0.0.1:") || a == b {
		t.Fatalf("FreeAddr: %s then %s", a, b)
	}
}
