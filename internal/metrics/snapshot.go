package metrics

import "time"

// Snapshot is what the supervisor reports at scrape time. Its owner
// goroutine takes it, so the values are mutually consistent; the collector
// only reads it and never retains it after the scrape.
type Snapshot struct {
	Workers         []Worker          // one per live worker process
	StateCounts     map[string]int    // "starting", "ready", "draining" → count
	Spawns          map[string]uint64 // cumulative, by cause: "start", "crash", "hang", "recycle", "reload", "scale"
	Exits           map[string]uint64 // cumulative, by cause: "crash", "hang", "recycle", "reload", "scale", "stop"
	Handoffs        map[int]uint64    // per slot: connections handed off (rr, and reuseport backlog adoption)
	HandoffFailures uint64            // sends that failed (worker gone or its queue full)
	Reroutes        uint64            // connections re-routed to another worker after a failure, incl. ones read back from a dead worker's queue
	Dropped         uint64            // connections closed unserved (queue full or too old)
	PendingDepth    int               // connections waiting for a ready worker now
	Reloads         map[string]uint64 // "success", "failure"
}

// Worker is one live worker process as seen by the supervisor.
type Worker struct {
	Slot         int
	OpenConns    int64
	Requests     uint64
	RSSBytes     uint64
	HeartbeatAge time.Duration // <0 if no heartbeat has arrived yet
}

// Label values that are always exposed, so that counters start at zero and
// rate() sees their first increment.
var (
	states        = []string{"starting", "ready", "draining"}
	spawnCauses   = []string{"start", "crash", "hang", "recycle", "reload", "scale"}
	exitCauses    = []string{"crash", "hang", "recycle", "reload", "scale", "stop"}
	reloadResults = []string{"success", "failure"}
)
