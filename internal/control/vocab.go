package control

// The vocabulary the supervisor, its metrics and its operators share: what
// a control request asks, what state a worker is in, why a worker was
// started or stopped, and what an event reports. Each word is defined here
// once; the supervisor, the metrics and `ctl` use these constants, and the
// README's tables list the same words.

// Command is what a Request asks for.
type Command string

// Commands a Request carries.
const (
	CmdStatus Command = "status" // answer with a Status
	CmdReload Command = "reload" // rolling reload of every slot; answered when it is over
	CmdScale  Command = "scale"  // change the number of slots to N; answered when it is over
	CmdStop   Command = "stop"   // graceful stop; answered once the stop has begun
	CmdEvents Command = "events" // no Response: Event lines until the client closes
	// CmdUpgrade re-executes the supervisor in place from Request.Path
	// (default: its own binary); answered by the new image once it serves.
	CmdUpgrade Command = "upgrade"
)

// State is where a worker process is in its life:
// starting → ready → draining → exited.
type State string

// Worker states, in WorkerStatus.State and the metrics' state label.
const (
	StateStarting State = "starting" // started, not yet ready
	StateReady    State = "ready"    // serving: the only state that gets connections
	StateDraining State = "draining" // asked to finish its connections and exit
	StateExited   State = "exited"   // waited for; never listed in a Status
)

// States are the states a live worker can be in, for metrics.
var States = []State{StateStarting, StateReady, StateDraining}

// Cause says why a worker was started, why it was asked to leave, or why it
// exited. The same words label the spawn and exit counters.
type Cause string

// Causes.
const (
	CauseStart        Cause = "start"         // spawn: the first workers
	CauseCrash        Cause = "crash"         // spawn: replacing a worker that exited unasked; exit: unasked
	CauseHang         Cause = "hang"          // no healthy heartbeat for -hang-timeout
	CauseRecycle      Cause = "recycle"       // -max-requests or -max-rss
	CauseReload       Cause = "reload"        // a rolling reload
	CauseScale        Cause = "scale"         // scaled up (spawn) or down (exit)
	CauseStop         Cause = "stop"          // exit: the supervisor is stopping
	CauseReadyTimeout Cause = "ready-timeout" // exit: not ready within -ready-timeout
	CauseProtocol     Cause = "protocol"      // exit: kept breaking the worker protocol
	CauseDisconnect   Cause = "disconnect"    // the primary or the worker itself disconnected it (worker.disconnect)
	CauseKill         Cause = "kill"          // the primary signalled it (worker.kill)
	CauseFork         Cause = "fork"          // spawn: a program's Fork
	CauseRollback     Cause = "rollback"      // a canary's slots get the kept release back
)

// SpawnCauses and ExitCauses are every cause each counter can see.
var (
	SpawnCauses = []Cause{CauseStart, CauseCrash, CauseHang, CauseRecycle, CauseReload, CauseScale, CauseProtocol, CauseDisconnect, CauseKill, CauseFork, CauseRollback}
	ExitCauses  = []Cause{CauseCrash, CauseHang, CauseRecycle, CauseReload, CauseScale, CauseStop, CauseReadyTimeout, CauseProtocol, CauseDisconnect, CauseKill, CauseRollback}
)

// EventKind is the "event" field of an Event.
type EventKind string

// Event kinds. Node's cluster events keep Node's names where they mean the
// same thing (fork, exit, message).
const (
	EventFork     EventKind = "fork"     // a worker process started: slot, pid, generation, cause
	EventReady    EventKind = "ready"    // a worker is ready: boot_ms
	EventRunning  EventKind = "running"  // every slot has a ready worker after start-up: workers, startup_ms
	EventDrain    EventKind = "drain"    // a worker was asked to drain: reason (a Cause)
	EventExit     EventKind = "exit"     // a worker exited: reason (a Cause), and signal or code
	EventRespawn  EventKind = "respawn"  // a slot will get a new worker: slot, delay_ms, cause
	EventHang     EventKind = "hang"     // a worker had no healthy heartbeat: silent_s
	EventRecycle  EventKind = "recycle"  // a worker is replaced: why; then step as for reload
	EventReload   EventKind = "reload"   // a rolling reload: step (a Step), generation
	EventScale    EventKind = "scale"    // a scale: from, to; then step done or failed
	EventCanary   EventKind = "canary"   // a canary reload: step start (canary, bake_s), then bake once its slots are ready
	EventVerdict  EventKind = "verdict"  // a canary's verdict: verdict, decision, why, and the numbers of both generations
	EventRollback EventKind = "rollback" // the canary's slots go back to the kept release: step start, then done or failed
	EventStop     EventKind = "stop"     // the supervisor began to stop
	EventMessage  EventKind = "message"  // a worker sent an application message: msg
	EventProtocol EventKind = "protocol" // a worker broke the worker protocol: error, count
	EventFreeze   EventKind = "freeze"   // the supervisor itself did not run for a while: gap_s
	EventReap     EventKind = "reap"     // an orphaned grandchild was reaped: pid
	EventDeferred EventKind = "deferred" // a signal arrived at a moment it cannot act: signal, until
	EventDropped  EventKind = "dropped"  // this subscriber missed count events
	// EventSubscribed is the first line of a subscription: the events
	// published from then on follow.
	EventSubscribed EventKind = "subscribed"
)

// Step is the "step" field of reload, recycle and scale events.
type Step string

// Steps.
const (
	StepStart  Step = "start"  // the rollout began
	StepFork   Step = "fork"   // a new worker was started for a slot
	StepDone   Step = "done"   // it ended well
	StepFailed Step = "failed" // it ended early: error says why
	StepBake   Step = "bake"   // canary: its slots serve, judged at the end of the bake
)
