// Package admin serves the supervisor's admin listener (-admin HOST:PORT):
// a live dashboard for a browser, and the API it uses.
//
//	GET  /             the dashboard (its assets are embedded: nothing is
//	                   loaded from the network)
//	GET  /api/status   the status, as `ctl status -json` prints it
//	GET  /api/events   the event stream, as Server-Sent Events
//	GET  /metrics      Prometheus metrics
//	POST /api/reload   a rolling reload      } only with -admin-actions;
//	POST /api/scale    {"n": N}: scale to N  } 403 otherwise
//
// The actions change what the supervisor runs, so a page on another site
// must not be able to trigger them from an operator's browser: they are
// refused unless the request comes from the dashboard's own origin (by
// Sec-Fetch-Site or Origin, net/http's CrossOriginProtection) and carries
// the token embedded in the page in the X-Prefork-Token header, which a
// cross-site form cannot set and a cross-site script cannot read.
//
// Each event stream client has a bounded queue (a control.Subscription);
// a client that falls behind it, or takes longer than WriteTimeout to
// accept a write, is disconnected, and its browser reconnects and reloads
// the status. The supervisor never waits for a client.
//
//	srv, err := admin.Serve("127.0.0.1:9090", admin.Options{
//		Control: handler, Events: bus, Metrics: m.Handler(),
//	})
package admin
