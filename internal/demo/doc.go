// Package demo implements the HTTP routes served by the prefork demo worker
// and the *http.Server that carries them.
//
// The routes are small on purpose; each one exercises a different aspect of
// a pre-forked server:
//
//	GET /health        JSON liveness report (see [Health])
//	GET /pid           the serving process ID, as plain text
//	GET /ip            the client's address (host:port), as plain text
//	GET /heavy?n=N     CPU-bound: counts primes below N on every P
//	GET /sleep?ms=N    I/O-bound: holds the request for N milliseconds
//	GET /spin?us=N     fixed cost: spends N µs of its thread's CPU time
//	GET /session       makes up a session id, claims it (cluster.Claim) and
//	                   sets it as the cookie sid; the body is the slot
//
// /pid and /health sit on the hot path of load tests and heartbeats, so they
// avoid per-request allocation where they can and no route logs requests.
// /heavy and /sleep stop early when the request context is cancelled, so a
// client that goes away does not keep a worker busy.
//
// [Fault] is a defect a release can be built with (-X main.fault), to
// test canary reloads: answers 500, slower answers, a crash.
//
// [CheckHealth] runs the /health handler in process, letting a worker prove
// it can still serve before it sends a heartbeat to the supervisor.
package demo
