package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/internal/execsignal"
	"github.com/prefork/prefork/internal/reaper"
)

// spawner starts worker processes from one OS thread that never exits.
//
// SysProcAttr.Pdeathsig is delivered when the *thread* that forked the child
// exits, not the process (golang/go#27505). Go may retire an idle thread at
// any time, and a goroutine that returns while locked takes its thread with
// it, so the forking goroutine locks itself to its thread and never returns:
// the workers then get their death signal exactly when the supervisor dies.
type spawner struct {
	reqs  chan spawnReq
	owned *reaper.Owned
	batch bool // workers run under SCHED_BATCH
	err   chan error
}

type spawnReq struct {
	cmd  *exec.Cmd
	exec *execReq // instead of cmd: replace the process image
	done chan error
}

type execReq struct {
	path  string
	argv  []string
	holds bool // path holds the signals from its start: see execsignal.Hold
	env   func() ([]string, error)
}

// newSpawner starts the spawning thread. Every pid it starts is recorded in
// owned before any reaper can see the child exit, so that the reaper of
// orphaned grandchildren never takes a worker's exit status.
//
// With batch, the spawning thread switches itself to SCHED_BATCH before the
// first fork, so every worker (each of its threads, since new threads
// inherit the policy of the thread that creates them) starts under it and
// nothing needs changing after exec; the supervisor's other threads keep the
// normal policy and still preempt workers to accept and hand off.
// An error means only that batch could not be set; the spawner works.
func newSpawner(owned *reaper.Owned, batch bool) (*spawner, error) {
	s := &spawner{reqs: make(chan spawnReq), owned: owned, batch: batch, err: make(chan error, 1)}
	go s.loop()
	return s, <-s.err
}

func (s *spawner) loop() {
	runtime.LockOSThread() // never unlocked, and the loop never ends
	s.serve(nil)
	select {} // unreachable: serve returns only when quit is closed
}

// serve runs the spawner on the calling goroutine, which is locked to its
// thread, until quit is closed (nil: never).
func (s *spawner) serve(quit <-chan struct{}) {
	var err error
	if s.batch {
		err = schedBatch(0)
	}
	s.err <- err
	s.serveUntil(quit)
}

// serveUntil serves requests until quit is closed: the restored image's
// main goroutine serves in turns (see Start and Engine.Wait).
func (s *spawner) serveUntil(quit <-chan struct{}) {
	// Children inherit the mask of the thread that forks them: in the
	// archive build every thread starts with the supervisor's signals
	// blocked (see internal/execsignal), and so does, after an upgrade,
	// the thread that called execve, this one.
	execsignal.Unblock()
	for {
		select {
		case r := <-s.reqs:
			if r.exec != nil {
				r.done <- execve(r.exec)
				continue
			}
			r.done <- s.owned.Start(r.cmd)
		case <-quit:
			return
		}
	}
}

// execve replaces the process image, on the spawner's thread: the workers'
// Pdeathsig fires when the thread that forked them exits, and execve from
// a multi-threaded process ends every thread but the calling one, which
// becomes the new image's main thread. Called from any other thread, it
// would kill every worker. It returns only on failure.
//
// The supervisor's signals are held first (execsignal.Hold): blocked, and
// ignored unless the new image holds them itself, so that one arriving
// while the new image starts is neither fatal (SIGHUP, SIGTERM and SIGUSR2
// end a process that has no handler) nor, for most, lost: it stays
// pending for the new image.
func execve(r *execReq) error {
	release, err := execsignal.Hold(!r.holds)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	env, err := r.env()
	if err == nil {
		sendAtExec()
		err = unix.Exec(r.path, r.argv, append(env, execsignal.HeldEnv()))
		err = fmt.Errorf("upgrade: exec %s: %w", r.path, err)
	}
	release()
	return err
}

// sendAtExec sends this process the signals signalsAtExec lists, from
// the first image only (a test build's).
func sendAtExec() {
	if signalsAtExec == "" || !execsignal.Exec().IsZero() {
		return
	}
	for _, f := range strings.Split(signalsAtExec, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			unix.Kill(unix.Getpid(), syscall.Signal(n))
		}
	}
}

// exec replaces the process image by path from the spawner's thread (see
// execve); it returns only on failure.
func (s *spawner) exec(path string, argv []string, holds bool, env func() ([]string, error)) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{exec: &execReq{path: path, argv: argv, holds: holds, env: env}, done: done}
	return <-done
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// schedBatch puts thread tid (0: the calling thread) under SCHED_BATCH.
func schedBatch(tid int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return fmt.Errorf("-sched batch: %w", err)
	}
	return nil
}

// schedBatchProcess puts every thread of this process under SCHED_BATCH;
// threads created later inherit it from the thread that creates them. With
// every process of the group under the same policy, the supervisor does not
// preempt a worker at each new connection but takes connections in larger
// batches when the worker yields: measured +12% in rr mode under
// Connection: close on one shared core, with a lower p99.
func schedBatchProcess() error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("-sched batch: %w", err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := schedBatch(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
