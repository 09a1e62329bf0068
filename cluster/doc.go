// Package cluster is Node's cluster module for Go, the worker's side: a
// program that links it can be a worker of the prefork supervisor (Node's
// cluster.isWorker branch), and it links nothing of the primary, so a
// worker-only binary stays within 1.3 times the size of the same program
// on plain net/http (TestWorkerSize).
//
// # One binary that is its own cluster
//
// The primary's side is package cluster/primary, which links the
// supervisor's engine. Its ListenAndServe is Node's
// `if (cluster.isPrimary) fork() else serve` in one call: run by hand, the
// program is the primary: it binds the address, starts itself again as
// its workers, hands them connections and keeps them alive, with every
// mode, balance policy and lifecycle option of the supervisor command
// line ([Settings]). In each worker the same call serves the handler.
//
//	mux := http.NewServeMux()
//	mux.HandleFunc("/", hello)
//	err := primary.ListenAndServe(":3000", mux, primary.WithWorkers(4))
//
// SIGHUP reloads the workers from the binary now at that path (a deploy is
// mv plus SIGHUP), SIGTERM stops them gracefully, and SIGTTIN and SIGTTOU
// scale by one. A program with its own primary code tests [IsPrimary] and
// calls primary.Start; its workers use this package. Node's idioms work
// as written: start with Workers 0, Primary.Fork n times and
// Primary.Ready; fork on each exit (with Settings.Respawn set to
// [RespawnManual] the program decides, as in Node; under the default
// [RespawnAuto] such a Fork takes the primary's own respawn);
// primary.Worker.Kill and a worker's own [Disconnect] are intended exits,
// not crashes. Messages go both ways: primary.Worker.Send reaches
// [Messages] in the worker, and [Send] in the worker is an EventMessage in
// the primary. examples/singlebinary and examples/primary are complete
// programs; the README maps every member of Node's cluster module.
//
// # Workers
//
// Run without a supervisor, the worker side behaves like plain net.Listen,
// so the same binary works on its own.
//
// A worker replaces net.Listen with [Listen], serves on the listener it
// returns, and shuts down when [Drain] is closed:
//
//	ln, err := cluster.Listen(":3000")   // the address is ignored under the supervisor
//	if err != nil { log.Fatal(err) }
//	srv := &http.Server{Handler: cluster.CountRequests(mux)}
//	go srv.Serve(ln)                     // the first Accept tells the supervisor "ready"
//	<-cluster.Drain()                    // the supervisor asks us to stop (or is gone)
//	ctx, cancel := context.WithTimeout(context.Background(), cluster.DrainTimeout())
//	defer cancel()
//	cluster.Shutdown(ctx, srv)           // finish every accepted connection, then srv.Shutdown
//
// With several listeners (-listen given more than once) the listener
// [Listen] returns yields the connections of all of them, and
// [ListenerName] tells them apart. To run one server per listener, call
// [ListenNamed] once for each of [ListenerNames] instead; closing one
// leaves the others serving, and the drain waits for every server:
//
//	for _, name := range cluster.ListenerNames() {   // [""] with one listener
//		ln, err := cluster.ListenNamed(name, ":3000") // the address is for standalone runs
//		if err != nil { log.Fatal(err) }
//		srv := &http.Server{Handler: cluster.CountRequests(handlerFor(name))}
//		go cluster.Serve(srv, ln)                     // returns once drained; wait for every one
//	}
//
// A server that is not net/http serves on the same listener and reports
// each request with [RequestServed]; for fasthttp (and Fiber), package
// github.com/prefork/prefork/fastcluster, its own module, does it all.
//
// Under the supervisor the listener yields, depending on the mode, the
// connections handed over the IPC channel (rr) or those accepted on the
// listening socket the worker inherited (shared, reuseport). When the
// supervisor asks for a drain, the package stops taking new connections at
// once (so the port refuses them once every worker has), while Accept keeps
// blocking until the application closes the listener, so that
// http.Server.Serve returns http.ErrServerClosed rather than an error. A
// worker that never calls Drain is sent SIGTERM instead.
//
// In rr mode, when the supervisor offers it, a server run by [Serve] hands
// its keep-alive connections back to the supervisor when it drains,
// instead of closing them: each HTTP/1.1 connection idle between requests
// (one busy with a request, after its response), provided the worker has
// read none of the next request, so that the next worker answers it on the
// same TCP connection. TLS and hijacked connections never move
// (handback.go says how idleness is told from net/http's reads).
//
// In rr mode, when the supervisor offers it, a worker whose open descriptors
// come within two frames and some headroom of RLIMIT_NOFILE asks the
// supervisor to send it no more connections, and asks again once a frame's
// worth has closed; it takes another batch of connections only while all of
// it fits. Connections the kernel still had to drop for want of descriptors
// are counted as closed and logged at most every ten seconds.
//
// A worker out of descriptors (accept fails with EMFILE or ENFILE in shared
// and reuseport mode; paused in rr mode) closes connections that have sent
// nothing for 250ms, oldest first, until it can take connections again: up
// to 32 per failed accept, or down to the level at which it resumes. A real
// HTTP client sends its request right after connecting, so this frees the
// descriptors an idle flood holds without waiting for the server's header
// timeout. A connection that has sent anything (read by the application, or
// waiting in its receive queue) is never shed. Each connection is tracked
// from accept to its first Read that returns bytes; the sweep runs only
// under pressure. The count is logged at most every ten seconds.
//
// The package also sends a heartbeat every second (open connections,
// requests counted by [CountRequests] or reported with [RequestServed] by a
// server that is not net/http, RSS, goroutines, and the result of the
// check set with [SetHealthCheck]) so the supervisor can tell a hung worker
// from a busy one, and it exits the process if the supervisor disappears.
//
// Where to read:
//
//	worker.go     this process as a worker: its link to the supervisor, ID, Drain
//	loop.go       run, the worker's owner loop: frames, drain, shedding under pressure
//	listener.go   Listen and its listener: handed connections or an inherited socket
//	listeners.go  several listeners: the other sockets (shared, reuseport), ListenerName, ListenerNames
//	named.go      ListenNamed: one net.Listener per listener, a demux over Listen's
//	accept.go     accepting on an inherited socket (shared, reuseport)
//	tcpconn.go    a connection handed over by the supervisor (rr)
//	handback.go   handing idle keep-alive connections back when draining (rr)
//	pause.go      rr's pause gate: no more connections near RLIMIT_NOFILE
//	shed.go       closing silent connections when out of descriptors
//	heartbeat.go  heartbeats, load reports, CountRequests, SetHealthCheck
//	outcome.go    the status class or panic of each request CountRequests counts
//	countlog.go   logging what was truncated or shed, at most every ten seconds
//	message.go    Send and Messages: application messages to and from the primary
//	claim.go      Claim: a sticky key (a session id) this worker made up, routed to its slot
//	proxy.go      -proxy-protocol in shared and reuseport: a connection's PROXY header, read on first use
//	leave.go      Disconnect: this worker leaves on its own
//	serve.go      Serve, until the supervisor asks to drain; IsPrimary
//	shutdown.go   Shutdown: srv.Shutdown without dropping a request
//	settings.go   Settings, the primary's settings (package cluster/primary runs them)
//
// Linux only.
package cluster

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
