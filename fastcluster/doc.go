// Package fastcluster runs a fasthttp server as a worker of the prefork
// supervisor, with everything a net/http worker of package cluster gets:
// connections from the supervisor in every mode, a graceful drain on a
// reload, a scale-down or a stop, requests, latency and status classes in
// the heartbeats (-max-requests recycling, ctl status, the dashboard,
// Prometheus, a canary reload's gates), a
// health check whose silence is a hang (SIGQUIT, a goroutine dump, a new
// worker), and messages (cluster.Send, cluster.Messages).
//
// It is its own module, so that prefork's main module does not depend on
// fasthttp.
//
//	srv := &fasthttp.Server{Handler: handler}
//	cluster.SetHealthCheck(fastcluster.HealthCheck(handler, "/health"))
//	err := fastcluster.ListenAndServe(":3000", srv) // the address is ignored under the supervisor
//
// A Fiber app serves on the same listener: ln, _ := cluster.Listen(addr),
// then app.Listener(ln), and app.ShutdownWithContext once cluster.Drain is
// closed.
//
// fasthttp writes a response after its handler returns, so the latency
// recorded is the handler's time, without the write.
//
// Linux only, as package cluster.
package fastcluster
