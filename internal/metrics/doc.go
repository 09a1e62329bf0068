// Package metrics exposes the supervisor to Prometheus.
//
// It owns a private registry and serves it on a listener of its own
// (-metrics HOST:PORT), never on the workers' port, so scrapes neither
// compete with traffic nor depend on a worker being up. At each scrape a
// collector asks the supervisor for a [Snapshot], which the supervisor's
// owner goroutine takes, bounded by [ScrapeTimeout]. The hot path feeds two
// histograms directly through [Metrics.ObserveHandoff] and
// [Metrics.ObservePendingWait], which do not allocate.
//
//	m := metrics.New(sup.Snapshot)
//	srv, err := metrics.Serve("127.0.0.1:9100", m, log)
//	if err != nil {
//		return err
//	}
//	defer srv.Close()
//	// accept loop:
//	m.ObserveHandoff(time.Since(accepted))
//
// Series are labelled by worker slot, never by pid, so their number stays
// bounded across respawns. While a rollout runs, a slot holds the draining
// worker and its replacement: the slot's series add the two up, and its
// heartbeat age is the older one. When a slot's worker is replaced its
// request counter resets, which rate() handles.
//
// # Metrics
//
// Supervisor, from the Snapshot:
//
//	prefork_workers{state}                     gauge    live workers by state: starting, ready, draining (all three always present)
//	prefork_worker_spawns_total{cause}         counter  workers started, by cause: start, crash, hang, recycle, reload, scale
//	prefork_worker_exits_total{cause}          counter  workers exited, by cause: crash, hang, recycle, reload, scale, stop
//	prefork_handoffs_total{slot}               counter  connections handed to the worker in a slot (rr mode, and backlog adoption in reuseport mode)
//	prefork_connections_accepted_total{listener} counter  connections the supervisor accepted on each listener, by name (rr; reuseport: those queued on a vacant slot's sockets)
//	prefork_handoff_failures_total             counter  handoffs that failed: worker gone or its queue full
//	prefork_handoff_reroutes_total             counter  connections re-routed to another worker after a failure, including ones read back from a dead worker's queue
//	prefork_connections_dropped_total          counter  connections closed unserved: pending queue full or waited too long
//	prefork_pending_connections                gauge    connections waiting for a ready worker
//	prefork_reloads_total{result}              counter  reloads, by result: success, failure, rollback
//	prefork_canary_verdicts_total{verdict}     counter  canary verdicts: pass, fail, insufficient
//	prefork_canary_baking                      gauge    1 while a canary reload bakes
//
// Per worker, labelled by slot:
//
//	prefork_worker_open_connections{slot}      gauge    connections the worker has open
//	prefork_worker_requests_total{slot}        counter  requests the worker has served
//	prefork_worker_resident_memory_bytes{slot} gauge    the worker's resident set size
//	prefork_worker_heartbeat_age_seconds{slot} gauge    time since the worker's last heartbeat; absent until its first
//
// Hot path, observed directly:
//
//	prefork_handoff_duration_seconds           histogram  accept to descriptor sent; buckets 1µs to 100ms
//	prefork_pending_wait_seconds               histogram  time a connection waited in the pending queue; buckets 100µs to 10s
//
// The admin listener (-admin), registered by internal/admin through
// [Metrics.Registerer]:
//
//	prefork_admin_auth_failures_total          counter  requests with a wrong credential
//	prefork_admin_auth_limited_total           counter  requests refused (429) while over the failed attempts' limit
//	prefork_admin_event_clients_dropped_total  counter  dashboard event stream clients disconnected for not keeping up
//
// The supervisor process itself: the standard go_* and process_* metrics,
// and the handler's own promhttp_metric_handler_requests_total{code},
// promhttp_metric_handler_requests_in_flight and
// promhttp_metric_handler_errors_total{cause}.
//
// If the Snapshot fails (the supervisor is stopping, or busy past
// ScrapeTimeout), the scrape still succeeds with every metric but the
// Snapshot's; the error is logged and counted in
// promhttp_metric_handler_errors_total{cause="gathering"}.
package metrics
