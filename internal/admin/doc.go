// Package admin serves the supervisor's admin listener (-admin HOST:PORT):
// a live dashboard for a browser, the API it uses, and what happened
// before the page was opened.
//
//	GET  /             the dashboard (its assets are embedded: nothing is
//	                   loaded from the network); holds no secret
//	GET  /api/status   the status, as `ctl status -json` prints it
//	GET  /api/history  the last 5 minutes of per-worker samples (one a
//	                   second) and the last 200 events (History)
//	GET  /api/events   the event stream, as Server-Sent Events
//	GET  /metrics      Prometheus metrics
//	POST /api/reload   a rolling reload      } only with -admin-actions;
//	POST /api/scale    {"n": N}: scale to N  } 403 otherwise
//
// # Authentication
//
// With -admin-auth FILE (see Auth: one bearer token, or users with bcrypt
// hashes), every path under /api and /metrics, existing or not, answers
// 401 without the credential. The page asks for it once and keeps it in
// the tab's sessionStorage, never in a URL: a request with a credential in
// its query string is refused (400). Failed attempts are limited per
// client address (IPv6: per /64) to failBurst, then one every failEvery;
// over the limit every request gets 429 before its credential is looked
// at. The addresses remembered are bounded. Failures and refusals are
// counted in prefork_admin_auth_failures_total and
// prefork_admin_auth_limited_total. Tokens are compared by their SHA-256
// in constant time, passwords by bcrypt (an unknown user's against a
// dummy hash), one bcrypt at a time; a password found right is remembered
// by its SHA-256, since the page sends it every second.
//
// Without -admin-auth the caller must bind a loopback address (the
// supervisor refuses others at start), and the actions are refused from
// any other address.
//
// The actions change what the supervisor runs, so a page on another site
// must not be able to trigger them from an operator's browser: they are
// refused unless the request comes from the dashboard's own origin (by
// Sec-Fetch-Site or Origin, net/http's CrossOriginProtection) and carries
// the credential, or without -admin-auth the token embedded in the page,
// in a header, which a cross-site form cannot set and a cross-site script
// cannot read.
//
// # TLS
//
// With a certificate (-admin-tls-cert, -admin-tls-key), the listener
// speaks HTTPS only. Reload reads the certificate and the auth file again
// (the supervisor calls it on SIGHUP): new connections get the renewed
// certificate; a file that cannot be read is reported and the one in use
// stays.
//
// # History and the event stream
//
// A goroutine samples the status every second into a fixed ring
// (HistorySamples samples), whose memory does not grow after the first 5
// minutes. The hub is the listener's single subscriber to the
// supervisor's events: it encodes each event once (an event over
// maxEventBytes, a worker's big message, keeps only its time, kind, slot
// and pid), keeps the last HistoryEvents, and queues the same bytes for
// every event stream client. A client whose queue exceeds maxClientBytes,
// or that takes longer than WriteTimeout to accept a write, is
// disconnected and counted in prefork_admin_event_clients_dropped_total;
// its page reconnects with Last-Event-ID and gets the recent events it
// missed. The supervisor never waits for a client, and however many
// clients there are, they share one copy of each event.
//
//	srv, err := admin.Serve("127.0.0.1:9090", admin.Options{
//		Control: handler, Events: bus, Metrics: m.Handler(),
//		AuthFile: "/run/credentials/prefork.service/admin-auth",
//	})
package admin
