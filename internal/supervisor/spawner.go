package supervisor

import (
	"os/exec"
	"runtime"
)

// spawner starts worker processes from one OS thread that never exits.
//
// SysProcAttr.Pdeathsig is delivered when the *thread* that forked the child
// exits, not the process (golang/go#27505). Go may retire an idle thread at
// any time, and a goroutine that returns while locked takes its thread with
// it, so the forking goroutine locks itself to its thread and never returns:
// the workers then get their death signal exactly when the supervisor dies.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	runtime.LockOSThread() // never unlocked, and the loop never ends
	for r := range s.reqs {
		r.done <- r.cmd.Start()
	}
	select {} // unreachable: reqs is never closed
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
