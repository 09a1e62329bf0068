// Package primary is the primary's side of Node's cluster module for Go:
// a program that is its own cluster, or that runs its own primary code
// over workers of package cluster. It runs the same engine as the
// supervisor command, which is a command line over this package.
//
// [ListenAndServe] is Node's `if (cluster.isPrimary) fork() else serve`
// in one call. Run by hand, the program is the primary: it binds the
// address, starts itself again (os.Args[0], resolved to an absolute path)
// as its workers, hands them connections and keeps them alive, with every
// mode, balance policy and lifecycle option of the supervisor command line
// (cluster.Settings, [Option]). In each worker the same call serves the
// handler with cluster.Listen and cluster.Serve.
//
//	mux := http.NewServeMux()
//	mux.HandleFunc("/", hello)
//	err := primary.ListenAndServe(":3000", mux, primary.WithWorkers(4))
//
// SIGHUP reloads the workers from the binary now at that path (a deploy is
// mv plus SIGHUP), SIGTERM stops them gracefully, and SIGTTIN and SIGTTOU
// scale by one. A program that wants its own primary code tests
// cluster.IsPrimary and calls [Start]: the returned [Primary] forks,
// scales, reloads and stops, lists its [Worker] processes, and delivers
// their events ([Event]: fork, online, listening, disconnect, exit,
// message) on a channel:
//
//	if cluster.IsPrimary() {
//		p, err := primary.Start(cluster.DefaultSettings())
//		if err != nil { ... }
//		for ev := range p.Events() { ... }   // closed once the primary has stopped
//		return p.Wait()
//	}
//	return primary.ListenAndServe("", mux)   // a worker
//
// A primary that reads no events calls [Run] (Start and Wait) instead, as
// the supervisor command does: workers' messages then wait for no reader.
//
// This package links the supervisor's engine, Prometheus and the admin
// dashboard; a program that is only a worker imports package cluster
// alone and links none of them.
//
//	primary.go   Start, Run and Primary: the engine run in this process
//	reload.go    Reload's options: a canary judged before the rest, Force
//	worker.go    Worker: one worker process as the primary sees it
//	event.go     Event: the engine's events as Node's cluster events
//	serve.go     ListenAndServe: primary or worker, by the environment
//	settings.go  Option, and this program as the workers' command
//
// Linux only.
package primary
