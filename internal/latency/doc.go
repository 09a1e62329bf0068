// Package latency is the fixed-bucket request latency histogram a worker
// records (cluster.CountRequests), sends in its heartbeat (internal/ipc)
// and the supervisor turns into quantiles (ctl status, the dashboard) and a
// Prometheus histogram per slot.
//
// Every build uses the same bucket bounds, [Bounds], so that a histogram
// needs no description on the wire and two can be added bucket by bucket.
// They run from 100µs to 10s, five to a decade, roughly log-spaced (1, 1.5,
// 2.5, 4, 6), plus one bucket for anything slower.
//
// Beside it, an [OutcomeRecorder] counts the same requests by how they
// ended ([Class]: 2xx, 3xx, 4xx, 5xx, a handler's panic), which a canary
// reload compares between two releases (classes.go).
//
//	var r latency.Recorder
//	r.Observe(3 * time.Millisecond)
//	c := r.Snapshot()
//	fmt.Println(c.Total(), c.Quantile(0.99))
package latency
