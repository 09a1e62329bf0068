package chaos

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/procfs"
	"github.com/prefork/prefork/internal/proctest"
)

// The kill loop with the fasthttp worker (examples/fasthttp) under prefork,
// and against the same binary under fasthttp's own prefork package (what
// Fiber's EnablePrefork runs), the reference the README compares with.

// buildFastHTTPWorker builds examples/fasthttp, its own module, without
// -race like the suite's other binaries (or finds it in proctest's cache).
func buildFastHTTPWorker(t *testing.T) string {
	t.Helper()
	bin, err := proctest.Build("./examples/fasthttp")
	if err != nil {
		t.Fatal(err)
	}
	return bin
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
	*proctest.Proc
	t    *testing.T
	addr string
	seen map[int]time.Time // when each child was first seen
}

// startOwnPrefork starts it with children children and a recover threshold
// the kill loop cannot reach (by default the second crash ends it), and
// waits until they serve.
func startOwnPrefork(t *testing.T, bin string, children int) *ownPrefork {
	t.Helper()
	p := &ownPrefork{t: t, addr: proctest.FreeAddr(t), seen: map[int]time.Time{}}
	cmd := exec.Command(bin, "-fasthttp-prefork", "-recover-threshold", "1000", "-listen", p.addr)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(children))
	// Children the master leaves behind hold the output pipe: Wait would
	// wait for them.
	cmd.WaitDelay = time.Second
	p.Proc = proctest.Start(t, cmd)
	t.Cleanup(p.cleanup)
	p.waitChildren(children, 15*time.Second)
	return p
}

// children lists the master's live children and notes new ones.
func (p *ownPrefork) children() []int {
	kids := p.Proc.Children()
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
	if !proctest.Poll(d, func() bool {
		if len(p.children()) != n {
			return false
		}
		_, err := get(p.addr, "/pid", time.Second)
		return err == nil
	}) {
		p.t.Fatalf("fasthttp's prefork: not %d children serving within %s (children %v)\n%s", n, d, p.children(), p.Out.Tail(20))
	}
}

// pickOld returns a random child first seen more than minUptime ago, as
// the supervisor's kill loop does, waiting up to d for one.
func (p *ownPrefork) pickOld(d time.Duration) int {
	p.t.Helper()
	var old []int
	if !proctest.Poll(d, func() bool {
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
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
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
	proctest.Poll(2*time.Second, func() bool { return left() == 0 })
	figure(p.t, "stop-fasthttp", "fasthttp-prefork", "children", len(kids), "children_left_2s_after_master_exit", left())
}

// cleanup kills the master and every child it had, by pid.
func (p *ownPrefork) cleanup() {
	p.Kill() // the master and its children
	// Children the master left (re-parented to init) are not among them:
	// kill every child ever seen that still runs this binary (a pid
	// reused since is someone else's).
	for pid := range p.seen {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil && exe == p.Cmd.Path {
			syscall.Kill(pid, syscall.SIGKILL)
			proctest.WaitGone(p.t, pid, 5*time.Second)
		}
	}
}
