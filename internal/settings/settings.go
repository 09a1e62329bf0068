package settings

import (
	"os"
	"time"
)

// Settings is how a primary runs its workers: Node's cluster.settings,
// with every option of the supervisor's command line. Each field is the
// flag of the same name in kebab case (MaxRequests is -max-requests); the
// README's table gives their meaning. The zero Settings is not valid (it
// has no workers): start from [Parse]'s defaults.
type Settings struct {
	Listen       Listeners     // where to listen, repeatable: [NAME=]ADDRESS (default ":3000")
	ListenMode   os.FileMode   // a Unix listener's socket file permission bits (octal flag, e.g. 0660); 0: the umask's
	ListenOwner  string        // its owner, a user name or uid; "": the supervisor's
	ListenGroup  string        // its group, a group name or gid; "": the supervisor's
	Workers      int           // worker processes, 1..1024 (default: the number of CPUs)
	Mode         string        // scheduling mode: "rr" (default), "shared" or "reuseport"
	Balance      string        // rr mode: BalanceRoundRobin (default) or BalanceLeastConn
	Grace        time.Duration // how long a draining worker may take before SIGKILL (30s)
	ReadyTimeout time.Duration // how long a new worker may take to become ready (30s)
	LogFormat    string        // the primary's log: "console" (default) or "json", on stderr

	QueueMax     int           // connections held while no worker is ready (4096)
	QueueTimeout time.Duration // how long a held connection may wait (10s)
	Rebalance    bool          // rr: move idle keep-alive connections to workers with fewer (true)
	Handback     bool          // rr: draining Go workers hand idle keep-alive connections back, to move (true)

	// Crash budget: more than MaxCrashes exits nobody asked for of one
	// slot within CrashWindow stop the primary.
	MaxCrashes  int           // (10)
	CrashWindow time.Duration // (1m)

	HangTimeout       time.Duration // a ready worker without a heartbeat this long is hung (30s, at least 2s)
	MaxRequests       int           // recycle a worker after this many requests; 0: never
	MaxRequestsJitter int           // plus a random 0..J per worker, so they do not recycle together
	MaxRSS            uint64        // recycle a worker above this resident size in bytes; 0: never
	Control           string        // control socket path; "" for the default, "none" for none
	Metrics           string        // HOST:PORT for Prometheus metrics; "" for none
	Admin             string        // HOST:PORT for the dashboard, its API and /metrics; "" for none
	AdminActions      bool          // the dashboard may reload and scale (POST, with cross-site checks)
	AdminAuth         string        // file with the admin listener's bearer token or bcrypt users (mode 0600); "" for none: Admin must then be a loopback address
	AdminTLSCert      string        // PEM certificate file for the admin listener (re-read on SIGHUP); "" for plain HTTP
	AdminTLSKey       string        // its PEM key file
	User, Group       string        // run workers as this user and group (the primary must be root)
	WorkerOutput      string        // workers' stdout and stderr: "inherit" (default) or "capture"
	Sched             string        // workers' CPU policy: "batch" (default, SCHED_BATCH) or "normal"
	DeferAccept       bool          // TCP_DEFER_ACCEPT on the TCP sockets the supervisor binds
	WorkerProtocol    string        // ProtocolPrefork (default), ProtocolNode, ProtocolSystemd or ProtocolPlain
	StrictListen      bool          // node: a worker's listen on an address no listener serves fails its start

	// A reload's canary (-canary N -bake D): N slots get the new release
	// first and serve for Bake; then a verdict compares them with the old
	// generation over the same window, against the gates below, and the
	// reload goes on or rolls them back to the release that was serving.
	// These are the defaults of SIGHUP and of a ctl reload that does not
	// say otherwise. canary.go has the defaults.
	Canary             int           // slots judged first; 0: a plain rolling reload
	Bake               time.Duration // how long they serve before the verdict (30s)
	CanaryInsufficient string        // too little traffic to judge: "rollback" (default) or "continue"
	CanaryErrorPP      float64       // fail: error rate above the old by more than this many points (1)
	CanaryErrorRatio   float64       // ... and at least this many times the old (2)
	CanaryLatencyRatio float64       // fail: p99 above this many times the old (1.5)
	CanaryMinRequests  int           // fewer canary requests in the window: not enough traffic (100)

	// Respawn is who replaces a worker that exits: RespawnAuto (the
	// default, ""), the primary, or RespawnManual, the program, as in
	// Node (exit events only; it calls Fork). Not a flag: a command line
	// has no program to decide.
	Respawn string

	Stickiness // -sticky and -proxy-protocol (sticky.go)

	// Command is the worker program and its arguments: Node's
	// settings.exec and settings.args. On the supervisor's command line
	// it is COMMAND, by default the worker binary beside the supervisor.
	// For a program that is its own primary (the cluster package), nil
	// is this program, re-executed with its own arguments, as os.Args[0]
	// resolved to an absolute path when the primary starts. A reload
	// starts that path again, so a new binary moved into its place is
	// what the reloaded workers run.
	Command []string

	// from is the command line and -config file Parse read these
	// settings from, for Reread; nil without a file.
	from *origin
}

// Defaults, documented in the README.
const (
	DefaultListen       = ":3000"
	DefaultGrace        = 30 * time.Second
	DefaultReadyTimeout = 30 * time.Second
	DefaultQueueMax     = 4096
	DefaultQueueTimeout = 10 * time.Second
	DefaultMaxCrashes   = 10
	DefaultCrashWindow  = time.Minute
	DefaultHangTimeout  = 30 * time.Second
	MaxWorkers          = 1024

	// MinHangTimeout is two worker heartbeats (cluster.HeartbeatInterval
	// is 1s): with less, a healthy worker is silent that long between two
	// beats and is killed as hung.
	MinHangTimeout = 2 * time.Second
)

// Respawn policies (Settings.Respawn).
const (
	RespawnAuto   = "auto"   // the primary replaces every worker that exits unasked or is killed
	RespawnManual = "manual" // Node's: the program replaces them (Fork) if it wants to
)

// Balance policies (Settings.Balance).
const (
	BalanceRoundRobin = "round-robin" // each connection to the next ready worker
	BalanceLeastConn  = "least-conn"  // each connection to the worker with the fewest open
)

// Worker protocols (Settings.WorkerProtocol): how the supervisor speaks
// to a worker.
const (
	ProtocolPrefork = "prefork" // Go programs linking the cluster package
	ProtocolNode    = "node"    // unmodified Node.js cluster apps
	ProtocolSystemd = "systemd" // socket activation and sd_notify
	ProtocolPlain   = "plain"   // the socket at fd 3, nothing else
)
