package supervisor

import (
	"os/exec"
	"runtime"

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
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// newSpawner starts the spawning thread. Every pid it starts is recorded in
// owned before any reaper can see the child exit, so that the reaper of
// orphaned grandchildren never takes a worker's exit status.
func newSpawner(owned *reaper.Owned) *spawner {
	s := &spawner{reqs: make(chan spawnReq), owned: owned}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	runtime.LockOSThread() // never unlocked, and the loop never ends
	for r := range s.reqs {
		r.done <- s.owned.Start(r.cmd)
	}
	select {} // unreachable: reqs is never closed
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
