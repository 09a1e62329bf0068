// Package spin spends a known amount of CPU time on the calling thread: the
// fixed server cost of the demo workers' GET /spin (internal/demo and
// examples/fasthttp), which the benchmarks' open-loop table sends.
//
//	err := spin.Thread(300 * time.Microsecond)
package spin
