// Package probe measures how evenly a prefork supervisor spreads
// connections over its workers.
//
// Every worker answers GET /pid with its decimal pid. The probe fires a
// bounded number of requests (by default each on a NEW TCP connection, so
// every request is a fresh accept the supervisor has to balance), counts the
// responses by body, and prints a table of per-pid counts, the max/min ratio,
// latency percentiles and failures by kind.
//
// It is wired as the "probe" subcommand of the supervisor binary through Main.
//
//	res, err := probe.Run(ctx, probe.Options{URL: "http://127.0.0.1:3000/pid", Requests: 2000, Concurrency: 8})
//	if err != nil { ... }             // only invalid Options
//	res.Print(os.Stdout)              // per-pid counts, max/min, latency, failures
//	fmt.Println(res.MaxMinRatio())    // 1.0 is a perfect spread
//
// # Where to read
//
//	options.go   Options, their defaults and limits, the URL check
//	probe.go     Run: the requests, each worker's tally, failures classified
//	result.go    Result: counts, failures, latencies and what is derived from them
//	print.go     Result.Print, the report
//	main.go      Main, the command line
package probe
