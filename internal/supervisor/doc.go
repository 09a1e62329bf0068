// Package supervisor is prefork's primary process: it binds the listening
// sockets, runs N worker processes, spreads connections over them and
// keeps them alive through crashes, hangs, reloads, scaling and stop.
//
// # One owner
//
// All mutable state (slots, workers, generations, the rollout and scale in
// progress, counters) belongs to one goroutine, the owner, running loop.
// Everything else reaches it as an event: a worker's exit and frames,
// signals, timers, control requests and metrics scrapes; the questions
// someone waits on (ctl requests, scrapes, Engine calls) have a channel
// of their own, taken before the events queued. A handler that
// changes state another handler reacts to queues an event (enqueue); it
// never calls back into the dispatcher. The parts of that state with a
// name of their own (the upgrader, services, reloader, scaler, forks,
// messages and health) are fields of Supervisor, each a type in its file,
// owned by the same goroutine.
//
// # Where to read
//
//	supervisor.go   the Supervisor type and run, which wires the OS to it
//	engine.go       Start and Engine: a running supervisor, for the
//	                supervisor command and package cluster/primary
//	config.go       Config, the settings it runs (internal/settings)
//	log.go          the supervisor's logger
//	loop.go         the owner loop: events, signals, timers
//	system.go       the seam to the OS: start, signal, wait, /proc, clock
//	spawner.go      the thread that forks workers (Pdeathsig)
//	credentials.go  -user and -group
//	process.go      a worker process and its life: spawn, ready, exit, drain
//	output.go       -worker-output capture: a worker's lines through the log
//	frames.go       what a worker says on its control channel
//	messages.go     application messages, flow-controlled to an Engine
//	protocol.go     how workers are spoken to (-worker-protocol): prefork,
//	protocol_systemd.go, plain and systemd (notify socket, exec shim)
//	protocol_node.go  node: Node.js cluster apps over Node's own IPC channel
//	protocol_node_sticky.go  node workers' sticky claims, and -sticky socketio
//	                (workers that call @socket.io/sticky's setupWorker)
//	protocol_node_listen.go  node workers' listens: which listener each
//	                asks for; one no listener serves is a warning, or
//	                -strict-listen's failed start
//	slot.go         a slot and its crash budget (backoff, giving up)
//	rollout.go      the reloader: reload and recycle, slot by slot
//	canary.go       a rollout's canary policy: its slots first, the bake,
//	                the verdict, and the rollback to the kept release
//	verdict.go      judge: the canary's verdict, a pure function of the two
//	                generations' figures over the bake and the gates
//	release.go      what each generation runs, its binary kept in a memfd
//	reconfig.go     a reload's -config file, read again: what applies, what waits
//	scale.go        the scaler: scaling up and down
//	fork.go         forks: Engine.Fork and Ready, the respawn policy (auto,
//	                manual)
//	health.go       heartbeats, hang and freeze detection, recycling triggers
//	rebalance.go    rr: asking busy workers to give idle connections back after a scale-up
//	stop.go         graceful stop, grace, second signal
//	control.go      ctl requests and status
//	recent.go       a worker's last heartbeats: requests/s, p50, p99
//	metrics.go      the snapshot a metrics scrape reads
//	services.go     services: control socket, metrics, admin, reaper, watchdog
//	mode.go         a mode's sockets (-mode): the mode interface, the
//	                listeners (-listen, several: each a name and a socket,
//	                bound or taken from systemd in order), and
//	mode_rr.go, mode_shared.go, mode_reuseport.go, one type each; the
//	                connections themselves go through internal/handoff
//	mode_reuseport_retire.go  reuseport: a scaled-away slot's sockets
//	                leave their groups (steered away, emptied, closed)
//	mode_reuseport_upgrade.go  reuseport: its sockets kept and restored
//	listeners_env.go  what a worker learns of several listeners:
//	                PREFORK_LISTENERS, LISTEN_FDS and LISTEN_FDNAMES
//	sticky.go       rr: -sticky and -proxy-protocol, given to the handoff
//	upgrade.go      the upgrader: ctl upgrade and SIGUSR2, one at a time,
//	                save the state (upgrade_state.go: to a memfd),
//	upgrade_check.go  -check-upgrade: the new binary's side, and reading
//	                what it printed (version, format, listeners, signals)
//	upgrade_state.go  execve from the spawner thread;
//	upgrade_fds.go  the one registry of the listeners an upgrade keeps;
//	upgrade_restore.go  the new image: restore, re-adopt, roll back
//	upgrade_repair.go  descriptors missing in the new image: rebind or replace
//	upgrade_rehearsal.go  the new binary restores a copy as a child first,
//	                beside the owner, which serves on until it ends
//	upgrade_aside.go  the check and the rehearsal: bounded children
//
// A connection in rr mode: handoff.AcceptLoop (internal/handoff) accepts
// it, the policy picks a routed worker, the worker's transport sends it
// (Frames: a conns frame; Node: a newconn message) and the supervisor's
// copy is closed, once the worker has its own or has answered. The owner
// routes a worker when it is ready (onReady, process.go: route, mode.go)
// and unroutes it when it drains.
//
// A crash: the waiter goroutine started by system.Start posts evExit;
// onExit (process.go) has the handoff take back what the worker never took
// (Handoff.Recover) and calls crashed (slot.go), which charges the slot's
// crash budget and queues evRespawn, at once or after a backoff; respawn
// starts the slot's new worker, and onReady routes it.
//
// A Node.js worker in rr mode: its listen arrives on its link's reader as
// a queryServer (nodeLink.queryServer, protocol_node.go), answered as
// Node's primary answers under SCHED_RR; handoff.Node.Listen makes its
// target take connections for that key, each a newconn held by
// nodeipc.Worker until the worker answers (nodeLink.answered), and given
// back to the handoff if it refuses or exits first.
//
// A reload: SIGHUP or ctl reload reaches onSignal or onControl (loop.go,
// control.go), which call the reloader's requestReload (reconfig.go): it
// reads the -config file again, if any, applies what can change to s.cfg
// (a changed worker count scales), or refuses the reload for a bad file;
// then reload (rollout.go) starts the rollout; rollStep
// spawns the next slot's new worker, rollReady routes it once it is ready
// and drains the one it replaces (drain, process.go; the link sends the drain frame),
// and the next slot follows until none is left. A canary reload
// (canary.go) replaces its slots first, then bakes: at the end,
// verdictDue compares both generations over the window (judge,
// verdict.go) and either rolls the other slots or rolls the canary's back
// to the release that was serving (releases, release.go: the binary kept
// in a memfd, run from there once the file on disk is another).
//
// An upgrade: SIGUSR2 or ctl upgrade call requestUpgrade on the
// supervisor's upgrader (s.up, upgrade.go), which checks the new binary
// off the owner; onUpgrade has each part save itself into an upgradeState (the mode its sockets, mode.save; the
// control socket, metrics and admin their listeners, recorded by role and
// name in upgrade_fds.go; each slot its worker's channels and the
// handoff's counts) and starts the new binary's rehearsal on that copy
// (startRehearsal, upgrade_rehearsal.go). The owner serves on; when the
// rehearsal ends (evRehearsed) it saves the state afresh, writes it to a
// memfd and execs (execNow, execState, upgrade_state.go). The new image's Start finds the state (restore,
// upgrade_restore.go): restoreMode and the services take their listeners
// back from keptFDs, adopt takes the workers back and routes them.
//
// # Testing
//
// The OS sits behind the system interface, so the state machine is tested
// with fake processes and a fake clock (fake_test.go, loop_test.go):
// every event is handled on the test's goroutine, and time passes only
// when a test advances it. The end-to-end tests in internal/e2e run the
// real binaries.
//
// Linux only.
package supervisor
