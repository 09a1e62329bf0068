package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

// wrkLoad is one load variant.
type wrkLoad struct {
	name  string // keepalive or close
	close bool   // send Connection: close: one TCP connection per request
}

var loads = []wrkLoad{{"keepalive", false}, {"close", true}}

// placement says where the server and wrk run.
type placement struct {
	name   string
	pinned bool // server on CPU 0, wrk -t1 on CPU 1; else no affinity, wrk -t2
}

var placements = []placement{{"pinned", true}, {"unpinned", false}}

// The CPUs of a pinned run: the server's (and every process it forks) and
// the load generator's.
const serverCore, clientCore = "0", "1"

// wrkResult is what the harness keeps of a wrk report.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	sockErrs int64 // connect + read + write + timeout
	non2xx   int64 // wrk's "Non-2xx or 3xx responses"

	cpu          time.Duration // wrk's own user+system time
	noise, steal float64       // other processes' CPU and steal during the run, in cores
	busiest      string        // who the other processes were
	primaryCPU   float64       // CPU of the supervisor / Node primary, in cores (0 for one process)
	serverCPU    time.Duration // CPU the server's processes (workers and primary) spent per request
	clientCPU    time.Duration // wrk's own CPU per request
	serverIdle   float64       // pinned: share of the server's CPU left idle (idleShare)
}

func (r wrkResult) errors() int64 { return r.sockErrs + r.non2xx }

// withScript adds wrk's -s script before the URL, the last argument.
func withScript(argv []string, script string) []string {
	if script == "" {
		return argv
	}
	n := len(argv) - 1
	return append(append(argv[:n:n], "-s", script), argv[n])
}

// twoPortsScript writes a wrk script that sends its threads in turn to
// 127.0.0.1:port and :port2, and returns its path (the caller removes it).
func twoPortsScript(port, port2 int) (string, error) {
	f, err := os.CreateTemp("", "prefork-bench-*.lua")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, `local ports, n = {"%d", "%d"}, 0
function setup(thread)
  n = n + 1
  thread.addr = wrk.lookup("127.0.0.1", ports[(n - 1) %% 2 + 1])[1]
end
`, port, port2)
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("bench: %w", err)
	}
	return f.Name(), nil
}

// twoThreads makes a pinned run's one wrk thread two, on the same CPU, so
// that twoPortsScript loads both ports.
func twoThreads(argv []string) []string {
	for i, a := range argv {
		if a == "-t1" {
			argv[i] = "-t2"
		}
	}
	return argv
}

// wrkThreads is wrk's -t in a placement: one thread on its own CPU when
// pinned, else one per CPU.
func wrkThreads(pl placement) int {
	if pl.pinned {
		return 1
	}
	return 2
}

// wrkArgs builds the command line for one run.
func wrkArgs(url string, pl placement, ld wrkLoad, conns int, d time.Duration) []string {
	var argv []string
	if pl.pinned {
		argv = []string{"taskset", "-c", clientCore}
	}
	argv = append(argv, "wrk", "-t"+itoa(wrkThreads(pl)), "-c"+itoa(conns), "-d"+itoa(int(d/time.Second))+"s",
		"--timeout", "2s", "--latency")
	if ld.close {
		argv = append(argv, "-H", "Connection: close")
	}
	return append(argv, url)
}

// runWrk runs wrk for d (bounded: it is killed 15s later) and calls tick
// every tickEvery while it runs. It returns the parsed result and the raw
// report.
func runWrk(ctx context.Context, argv []string, d time.Duration, tick func()) (wrkResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d+15*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // see launch
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return wrkResult{}, "", fmt.Errorf("bench: start wrk: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			raw := out.String()
			if err != nil {
				return wrkResult{}, raw, fmt.Errorf("bench: wrk: %w", err)
			}
			r, err := parseWrk(raw)
			r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			return r, raw, err
		case <-t.C:
			if tick != nil {
				tick()
			}
		}
	}
}

const tickEvery = 500 * time.Millisecond

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs     = regexp.MustCompile(`(\d+) requests in `)
	reP50      = regexp.MustCompile(`(?m)^\s+50%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	reP99      = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	reSockErrs = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk 4's text report (with --latency).
func parseWrk(raw string) (wrkResult, error) {
	var r wrkResult
	m := reRPS.FindStringSubmatch(raw)
	if m == nil {
		return r, fmt.Errorf("bench: no Requests/sec in wrk output")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reReqs.FindStringSubmatch(raw); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	var err error
	if r.p50, err = latency(reP50, raw); err != nil {
		return r, err
	}
	if r.p99, err = latency(reP99, raw); err != nil {
		return r, err
	}
	if m := reSockErrs.FindStringSubmatch(raw); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.sockErrs += n
		}
	}
	if m := reNon2xx.FindStringSubmatch(raw); m != nil {
		r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

func latency(re *regexp.Regexp, raw string) (time.Duration, error) {
	m := re.FindStringSubmatch(raw)
	if m == nil {
		return 0, fmt.Errorf("bench: no latency percentile %q in wrk output (--latency missing?)", re)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9}[m[2]]
	return time.Duration(v * unit), nil
}
