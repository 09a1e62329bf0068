package ipc

// The contract between the supervisor and a worker process. The supervisor
// sets these variables; the cluster package reads them. All begin with
// EnvPrefix, by which the supervisor keeps its own out of a worker's
// environment and a worker keeps them from its children.
const (
	EnvPrefix = "PREFORK_"

	// EnvWorkerID is the worker's slot, 1..N. A replacement keeps its slot.
	EnvWorkerID = "PREFORK_WORKER_ID"
	// EnvMode is the scheduling mode: "rr", "shared" or "reuseport".
	EnvMode = "PREFORK_MODE"
	// EnvGeneration counts reloads: 1 for the first workers, +1 per reload.
	EnvGeneration = "PREFORK_GENERATION"
	// EnvControlFD names the control channel's descriptor (always "3").
	EnvControlFD = "PREFORK_CONTROL_FD"
	// EnvListenFD names the descriptor connections come from (always "4"):
	// the handoff channel in rr mode, a listening TCP socket otherwise.
	EnvListenFD = "PREFORK_LISTEN_FD"
	// EnvListenAddr is the address the supervisor listens on, for logs.
	EnvListenAddr = "PREFORK_LISTEN_ADDR"
	// EnvListeners, set when there are several listeners, lists them in
	// order as a JSON array of ListenerInfo. In shared and reuseport mode
	// the Nth (from 0) is the listening socket at fd ListenFD+N; in rr mode
	// every connection arrives on the handoff channel with its listener's
	// index (FeatureListeners). Absent: one listener, EnvListenAddr.
	EnvListeners = "PREFORK_LISTENERS"
	// EnvLoadReports is "1" when the supervisor balances by open
	// connections (least-conn) and wants a load frame after each close.
	EnvLoadReports = "PREFORK_LOAD_REPORTS"
	// EnvFeatures is the protocol [Features] the supervisor understands,
	// as a decimal bit set; absent means none.
	EnvFeatures = "PREFORK_FEATURES"
	// EnvProxy, in shared and reuseport mode with -proxy-protocol: every
	// connection starts with a PROXY protocol header, which the worker's
	// listener reads. Its value: "from=CIDR,...;wait=DURATION" (from
	// empty: any source).
	EnvProxy = "PREFORK_PROXY"
)

// Descriptor numbers in the worker. os/exec places ExtraFiles[i] at 3+i.
const (
	ControlFD = 3
	ListenFD  = 4
)

// Modes, as they appear in EnvMode and in the -mode flag.
const (
	ModeRR        = "rr"
	ModeShared    = "shared"
	ModeReusePort = "reuseport"
)

// ListenerInfo is one listener in EnvListeners.
type ListenerInfo struct {
	Name string `json:"name"`
	Addr string `json:"addr"` // HOST:PORT, or unix:/path
}
