package reaper

import (
	"os/exec"
	"sync"
)

// Owned is the set of child pids this process waits for itself; its Has
// method is an isOwn for Reap and Run. The zero value is an empty set.
//
// A plain set filled after cmd.Start returns has a hole: a worker that exits
// at once is a zombie before its pid is recorded, and a concurrent Reap would
// steal its exit status from cmd.Wait. Start closes the hole by holding the
// set's lock from before the fork until the pid is recorded; Has waits for
// that lock.
type Owned struct {
	mu   sync.Mutex
	pids map[int]struct{}
}

// Start starts cmd (see exec.Cmd.Start) and records its pid. Call it from the
// goroutine that must be the child's parent thread when that matters
// (SysProcAttr.Pdeathsig).
func (o *Owned) Start(cmd *exec.Cmd) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	o.add(cmd.Process.Pid)
	return nil
}

// Add records pid, for children started by other means while holding no
// lock Reap could race with (for example before Run is started).
func (o *Owned) Add(pid int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.add(pid)
}

func (o *Owned) add(pid int) {
	if o.pids == nil {
		o.pids = make(map[int]struct{})
	}
	o.pids[pid] = struct{}{}
}

// Forget removes pid once cmd.Wait (or os.Process.Wait) has returned for it.
// Forgetting earlier would let Reap collect the worker's exit status.
func (o *Owned) Forget(pid int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.pids, pid)
}

// Has reports whether pid is recorded, waiting for any Start in progress.
func (o *Owned) Has(pid int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.pids[pid]
	return ok
}
