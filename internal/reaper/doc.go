// Package reaper collects zombie processes that are not the supervisor's own
// workers.
//
// When the supervisor is PID 1 of a container, or a child subreaper
// (SetSubreaper), every process orphaned below it — a worker's helper whose
// parent crashed, a double-forked daemon — is re-parented to it. Nobody else
// will ever wait for those, so without a reaper they stay zombies and exhaust
// the pid space. The classic init loop, wait4(-1), cannot be used here: it
// would also collect workers whose exit status os/exec's cmd.Wait is waiting
// for in another goroutine, and that Wait would then fail with ECHILD.
//
// Reap therefore finds zombies through /proc and waits for each one by pid,
// skipping every pid the caller claims through isOwn. isOwn must report true
// for a worker from the moment it is forked until its cmd.Wait has returned;
// Owned is a ready-made set with that guarantee.
//
//	var owned reaper.Owned
//	if err := reaper.SetSubreaper(); err != nil { ... } // harmless as PID 1
//	go reaper.Run(ctx, owned.Has, func(pid int) { log.Info("reaped orphan", "pid", pid) })
//	if err := owned.Start(cmd); err != nil { ... }       // instead of cmd.Start()
//	go func() { err := cmd.Wait(); owned.Forget(cmd.Process.Pid); ... }()
//
// Linux only.
package reaper

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
