package supervisor

import (
	"time"

	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/latency"
)

// recentBeats is how many heartbeats a worker's recent figures span: at one
// a second, requests/s and latency quantiles over about the last five
// seconds, recent enough to follow a change and long enough for a p99 to
// rest on more than a handful of requests.
const recentBeats = 6

// recent is a worker's last heartbeats, for figures over the last few
// seconds rather than since it started. The owner goroutine owns it.
type recent struct {
	beats [recentBeats]beatSample // a ring: n samples ending at last
	last  int
	n     int
}

type beatSample struct {
	at       time.Time
	requests uint64
	latency  *latency.Counts   // nil from a worker that sends none
	outcomes *latency.Outcomes // nil from a worker that sends none
}

// add records a heartbeat received at now.
func (r *recent) add(now time.Time, hb ipc.Heartbeat) {
	r.last = (r.last + 1) % recentBeats
	r.beats[r.last] = sampleOf(now, hb)
	r.n = min(r.n+1, recentBeats)
}

// sampleOf is what a canary's window and the recent figures keep of hb.
func sampleOf(now time.Time, hb ipc.Heartbeat) beatSample {
	return beatSample{at: now, requests: hb.Requests, latency: hb.Latency, outcomes: hb.Outcomes}
}

// figures returns requests a second and the latency histogram between the
// oldest and newest heartbeats kept, or, with only one, since started. ok
// is false while there is no latency to report.
func (r *recent) figures(started time.Time) (perSec float64, lat latency.Counts, ok bool) {
	if r.n == 0 {
		return 0, lat, false
	}
	newest := r.beats[r.last]
	oldest := beatSample{at: started}
	if r.n > 1 {
		oldest = r.beats[(r.last-r.n+1+recentBeats)%recentBeats]
	}
	if secs := newest.at.Sub(oldest.at).Seconds(); secs > 0 && newest.requests >= oldest.requests {
		perSec = float64(newest.requests-oldest.requests) / secs
	}
	if newest.latency == nil {
		return perSec, lat, false
	}
	if oldest.latency == nil {
		return perSec, *newest.latency, true
	}
	return perSec, newest.latency.Since(oldest.latency), true
}
