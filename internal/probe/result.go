package probe

import (
	"time"
)

// OverflowKey collects 2xx responses whose body would have been a new key
// after 10,000 distinct ones (a target answering something other than pids),
// keeping memory bounded.
const OverflowKey = "(other bodies)"

// Failure kinds. Non-2xx responses are reported as "http-status NNN".
const (
	KindRefused     = "refused"     // ECONNREFUSED: nothing listening
	KindReset       = "reset"       // ECONNRESET / EPIPE / ECONNABORTED
	KindTimeout     = "timeout"     // the per-request timeout expired
	KindEOF         = "eof"         // the server closed the connection without an answer
	KindDNS         = "dns"         // the URL's host did not resolve
	KindUnreachable = "unreachable" // EHOSTUNREACH / ENETUNREACH
	KindOther       = "other"
)

// Result is what Run observed.
type Result struct {
	// The options the run used (after defaults).
	URL         string
	Requests    int
	Concurrency int
	KeepAlive   bool
	Timeout     time.Duration
	Duration    time.Duration

	// Counts holds successful (2xx) responses keyed by body, whitespace
	// trimmed (only the first 128 bytes of a body are used): normally a pid.
	// At most 10,000 distinct keys are kept, the rest count under OverflowKey.
	Counts map[string]int
	// Failures counts failed requests by kind: one of the Kind* constants or
	// "http-status NNN" for a non-2xx response.
	Failures map[string]int
	// FailureExamples holds the first error message seen for each kind.
	FailureExamples map[string]string

	OK      int // successful requests (sum of Counts)
	Failed  int // failed requests (sum of Failures)
	Aborted int // in flight when the run was stopped; neither OK nor Failed

	// Stopped says why fewer than Requests requests completed: "" (all
	// completed), "duration" (the Duration bound expired) or "canceled"
	// (the caller's context was canceled).
	Stopped string

	// Dials is the number of TCP connections the probe opened successfully.
	Dials int64

	// Latencies of successful requests (request start to end of body),
	// sorted ascending: all of them, or a sample once OK > MaxLatencySamples.
	Latencies  []time.Duration
	MaxLatency time.Duration // exact, over all successful requests

	Elapsed time.Duration // wall time of the whole run
}

// Unreachable reports whether the target could not be reached at all: no
// request succeeded, no TCP connection was ever opened, and at least one
// request failed (refused, unresolvable host, unreachable, dial timeout...).
func (r *Result) Unreachable() bool {
	return r.OK == 0 && r.Dials == 0 && r.Failed > 0
}

// MaxMinRatio is the largest per-pid count divided by the smallest, over the
// pids that answered at all (1 with a single pid, 0 when nothing succeeded).
// Workers that got no request are invisible to the probe and do not count.
func (r *Result) MaxMinRatio() float64 {
	lo, hi := 0, 0
	for _, c := range r.Counts {
		if c <= 0 {
			continue
		}
		if lo == 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	if lo == 0 {
		return 0
	}
	return float64(hi) / float64(lo)
}

// Percentile returns the p-th percentile (0 < p <= 100, nearest rank) of the
// successful latencies, or 0 when there are none.
func (r *Result) Percentile(p float64) time.Duration {
	n := len(r.Latencies)
	if n == 0 {
		return 0
	}
	i := int(float64(n)*p/100+0.9999999) - 1
	return r.Latencies[min(max(i, 0), n-1)]
}

// RequestsPerSecond is successful requests per second of wall time.
func (r *Result) RequestsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Pids returns the keys of Counts: numeric ones in numeric order, then any
// others in lexical order.
func (r *Result) Pids() []string {
	keys := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys
}
