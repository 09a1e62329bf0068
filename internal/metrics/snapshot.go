package metrics

import (
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/latency"
)

// Snapshot is what the supervisor reports at scrape time. Its owner
// goroutine takes it, so the values are mutually consistent; the collector
// only reads it and never retains it after the scrape.
type Snapshot struct {
	Workers         []Worker                 // one per live worker process
	StateCounts     map[control.State]int    // live workers by state
	Spawns          map[control.Cause]uint64 // cumulative, by cause (control.SpawnCauses)
	Exits           map[control.Cause]uint64 // cumulative, by cause (control.ExitCauses)
	Handoffs        map[int]uint64           // per slot: connections handed off (rr, and reuseport backlog adoption)
	Accepted        map[string]uint64        // rr, reuseport: connections the supervisor accepted, by listener name; nil in shared mode
	HandoffFailures uint64                   // sends that failed (worker gone or its queue full)
	Reroutes        uint64                   // connections re-routed to another worker after a failure, incl. ones read back from a dead worker's queue
	Dropped         uint64                   // connections closed unserved (queue full or too old)
	PendingDepth    int                      // connections waiting for a ready worker now
	HandedBack      uint64                   // idle keep-alive connections draining workers handed back (rr)
	Unplaced        uint64                   // of those, closed because no worker could take them; the rest moved
	RebalanceAsks   uint64                   // idle connections workers were asked to give back to even out the load
	Reloads         map[string]uint64        // "success", "failure", "rollback" (a canary's)
	CanaryVerdicts  map[string]uint64        // "pass", "fail", "insufficient"
	CanaryBaking    bool                     // a canary reload's new workers serve, to be judged
	ProtocolErrors  uint64                   // frames from workers that broke the worker protocol
	Freezes         uint64                   // stalls of the supervisor itself that restarted the heartbeat clocks
	Sticky          *Sticky                  // -sticky or -proxy-protocol (rr); nil without
}

// Worker is one live worker process as seen by the supervisor.
type Worker struct {
	Slot         int
	OpenConns    int64
	Requests     uint64
	RSSBytes     uint64
	HeartbeatAge time.Duration // <0 if no heartbeat has arrived yet
	// Latency of the requests it served since it started; nil if it
	// reports none.
	Latency *latency.Counts
}

// Label values that are always exposed, so that counters start at zero and
// rate() sees their first increment.
var (
	reloadResults  = []string{"success", "failure", "rollback"}
	canaryVerdicts = []string{control.VerdictPass, control.VerdictFail, control.VerdictInsufficient}
)
