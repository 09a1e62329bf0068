package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/procfs"
)

// The kill loop with the fasthttp worker (examples/fasthttp) under prefork,
// and against the same binary under fasthttp's own prefork package (what
// Fiber's EnablePrefork runs), the reference the README compares with.

var (
	fastOnce sync.Once
	fastBin  string
	fastErr  error
)

// buildFastHTTPWorker builds examples/fasthttp, its own module, once per
// run, without -race like the suite's other binaries.
func buildFastHTTPWorker(t *testing.T) string {
	t.Helper()
	fastOnce.Do(func() {
		fastBin = filepath.Join(filepath.Dir(supervisorBin), "fasthttp-worker")
		cmd := exec.Command("go", "build", "-o", fastBin, ".")
		cmd.Dir = "../../examples/fasthttp"
		if out, err := cmd.CombinedOutput(); err != nil {
			fastErr = fmt.Errorf("go build in examples/fasthttp: %v\n%s", err, out)
		}
	})
	if fastErr != nil {
		t.Fatal(fastErr)
	}
	return fastBin
}

// TestKillLoopFastHTTP: the kill loop with fasthttp workers under the
// supervisor (rr in the short run, every mode in the long one): no request
// hangs and only requests in flight at a kill may fail. Then the same loop
// against fasthttp's own prefork, whose figures are the reference: its
// failures are reported, not judged.
func TestKillLoopFastHTTP(t *testing.T) {
	bin := buildFastHTTPWorker(t)
	for _, mode := range pick([]string{"rr"}, modes) {
		t.Run(mode, func(t *testing.T) { killLoopOf(t, "kill-fasthttp", mode, []string{bin}) })
	}
	t.Run("fasthttp-prefork", func(t *testing.T) {
		const children = 3
		p := startOwnPrefork(t, bin, children)
		k := killUnderLoad(t, p.addr, func() int { return p.pickOld(10 * time.Second) },
			func() { p.waitChildren(children, 15*time.Second) })
		k.report(t, "kill-fasthttp", "fasthttp-prefork")
		p.stop()
	})
}

// ownPrefork is bin run under fasthttp's prefork package: a master that
// starts GOMAXPROCS children, each on its own SO_REUSEPORT socket, and
// replaces one that exits.
type ownPrefork struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	out  *output
	done chan struct{}
	seen map[int]time.Time // when each child was first seen
}

// startOwnPrefork starts it with children children and a recover threshold
// the kill loop cannot reach (by default the second crash ends it), and
// waits until they serve.
func startOwnPrefork(t *testing.T, bin string, children int) *ownPrefork {
	t.Helper()
	p := &ownPrefork{t: t, addr: freeAddr(t), out: &output{}, done: make(chan struct{}), seen: map[int]time.Time{}}
	p.cmd = exec.Command(bin, "-fasthttp-prefork", "-recover-threshold", "1000", "-listen", p.addr)
	p.cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(children))
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Children the master leaves behind hold the output pipe: Wait would
	// wait for them forever.
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	p.waitChildren(children, 15*time.Second)
	return p
}

// children lists the master's live children and notes new ones.
func (p *ownPrefork) children() []int {
	kids := procfs.Children(p.cmd.Process.Pid)
	for _, pid := range kids {
		if _, ok := p.seen[pid]; !ok {
			p.seen[pid] = time.Now()
		}
	}
	return kids
}

// waitChildren fails the test unless the master has n children and /pid
// answers within d.
func (p *ownPrefork) waitChildren(n int, d time.Duration) {
	p.t.Helper()
	if !eventually(d, func() bool {
		if len(p.children()) != n {
			return false
		}
		_, err := get(p.addr, "/pid", time.Second)
		return err == nil
	}) {
		p.t.Fatalf("fasthttp's prefork: not %d children serving within %s (children %v)\n%s", n, d, p.children(), p.out.tail(20))
	}
}

// pickOld returns a random child first seen more than minUptime ago, as
// the supervisor's kill loop does, waiting up to d for one.
func (p *ownPrefork) pickOld(d time.Duration) int {
	p.t.Helper()
	var old []int
	if !eventually(d, func() bool {
		old = old[:0]
		for _, pid := range p.children() {
			if time.Since(p.seen[pid]) >= minUptime {
				old = append(old, pid)
			}
		}
		return len(old) > 0
	}) {
		p.t.Fatalf("fasthttp's prefork: no child older than %s within %s", minUptime, d)
	}
	return old[rand.IntN(len(old))]
}

// stop sends SIGTERM to the master and reports how many of its children
// still run 2s after it exited (cleanup kills them).
func (p *ownPrefork) stop() {
	p.t.Helper()
	kids := p.children()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("fasthttp's prefork: master still running 15s after SIGTERM")
		return
	}
	left := func() int {
		n := 0
		for _, pid := range kids {
			if procfs.Alive(pid) {
				n++
			}
		}
		return n
	}
	eventually(2*time.Second, func() bool { return left() == 0 })
	figure(p.t, "stop-fasthttp", "fasthttp-prefork", "children", len(kids), "children_left_2s_after_master_exit", left())
}

// cleanup kills the master and every child it had, by pid.
func (p *ownPrefork) cleanup() {
	kids := p.children()
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	// Children the master left (re-parented to init) are gone from kids:
	// kill every child ever seen that still runs this binary (a pid
	// reused since is someone else's).
	for pid := range p.seen {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil && exe == p.cmd.Path {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range append(kids, p.cmd.Process.Pid) {
		waitGone(p.t, pid, 5*time.Second)
	}
	if p.t.Failed() {
		p.t.Logf("fasthttp's prefork output (last 40 lines):\n%s", p.out.tail(40))
	}
}
