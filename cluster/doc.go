// Package cluster is Node's cluster module for Go: a program that links it
// can be a worker of the prefork supervisor, or its own primary, or both.
//
// # One binary that is its own cluster
//
// [ListenAndServe] is Node's `if (cluster.isPrimary) fork() else serve` in
// one call. Run by hand, the program is the primary: it binds the address,
// starts itself again (os.Args[0], resolved to an absolute path) as its
// workers, hands them connections and keeps them alive, with every mode,
// balance policy and lifecycle option of the supervisor command line
// ([Settings], [Option]). In each worker the same call serves the handler.
//
//	mux := http.NewServeMux()
//	mux.HandleFunc("/", hello)
//	err := cluster.ListenAndServe(":3000", mux, cluster.WithWorkers(4))
//
// SIGHUP reloads the workers from the binary now at that path (a deploy is
// mv plus SIGHUP), SIGTERM stops them gracefully, and SIGTTIN and SIGTTOU
// scale by one. A program that wants its own primary code uses
// [IsPrimary] and [StartPrimary]: the returned [Primary] forks, scales,
// reloads and stops, lists its [Worker] processes, and delivers their
// events ([Event]: fork, online, listening, disconnect, exit, message) on
// a channel. Messages go both ways: [Worker.Send] from the primary reaches
// [Messages] in the worker, [Send] in the worker is an [EventMessage] in the
// primary. examples/singlebinary and examples/primary are complete
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
// Under the supervisor the listener yields, depending on the mode, the
// connections handed over the IPC channel (rr) or those accepted on the
// listening socket the worker inherited (shared, reuseport). When the
// supervisor asks for a drain, the package stops taking new connections at
// once (so the port refuses them once every worker has), while Accept keeps
// blocking until the application closes the listener, so that
// http.Server.Serve returns http.ErrServerClosed rather than an error. A
// worker that never calls Drain is sent SIGTERM instead.
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
// Linux only.
package cluster

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
