// Package supervisor is prefork's primary process: it binds the listening
// sockets, runs N worker processes, spreads connections over them and
// keeps them alive through crashes, hangs, reloads, scaling and stop.
//
// # One owner
//
// All mutable state (slots, workers, generations, the rollout and scale in
// progress, counters) belongs to one goroutine, the owner, running loop.
// Everything else reaches it as an event: a worker's exit and frames,
// signals, timers, control requests and metrics scrapes. A handler that
// changes state another handler reacts to queues an event (enqueue); it
// never calls back into the dispatcher.
//
// # Where to read
//
//	supervisor.go   the Supervisor type; Run wires the OS to it
//	engine.go       Start and Engine: the same supervisor run from Go code,
//	                for the cluster package's primary (and cmd/supervisor)
//	loop.go         the owner loop: events, signals, timers
//	system.go       the seam to the OS: start, signal, wait, /proc, clock
//	spawner.go      the thread that forks workers (Pdeathsig)
//	worker.go       a worker's life: spawn, ready, exit, drain
//	frames.go       what a worker says on its control channel
//	messages.go     application messages, flow-controlled to an Engine
//	protocol.go     how workers are spoken to (-worker-protocol): prefork,
//	protocol_systemd.go, plain and systemd (notify socket, exec shim)
//	protocol_node.go  node: Node.js cluster apps over Node's own IPC channel
//	slot.go         a slot and its crash budget (backoff, giving up)
//	rollout.go      reload and recycle, slot by slot
//	scale.go        scaling up and down
//	health.go       heartbeats, hang and freeze detection, recycling triggers
//	stop.go         graceful stop, grace, second signal
//	control.go      ctl requests and status
//	recent.go       a worker's last heartbeats: requests/s, p50, p99
//	services.go     control socket, metrics, reaper, systemd watchdog
//	mode.go         how a mode gets connections to workers, and
//	mode_rr.go, mode_shared.go, mode_reuseport.go, one type each
//	handoff.go      rr's accept-and-hand-off path, and its pending queue
//	handoff_node.go   rr to Node.js workers: newconn messages, answered
//	upgrade.go      ctl upgrade and SIGUSR2: check the new binary, save the
//	state.go        state to a memfd, execve from the spawner thread;
//	upgrade_restore.go  the new image: restore, re-adopt, roll back
//
// A crash, for example: the waiter goroutine started by system.Start posts
// evExit; onExit (worker.go) asks the mode for the connections the worker
// never took and calls crashed (slot.go), which charges the slot's crash
// budget and queues evRespawn, at once or after a backoff; respawn starts
// the slot's new worker, and onReady routes it.
//
// # Testing
//
// The OS sits behind the system interface, so the state machine is tested
// with fake processes and a fake clock (fake_test.go, state_test.go):
// every event is handled on the test's goroutine, and time passes only
// when a test advances it. The end-to-end tests in internal/e2e run the
// real binaries.
//
// Linux only.
package supervisor
