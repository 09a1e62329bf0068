// Command loadgen is the bench's open-loop load generator: it sends GET
// requests to one URL at a fixed rate with vegeta, whatever the server's
// latency (so a slow answer does not slow the senders down, as it does in
// wrk's closed loop), and prints one JSON line: the rate achieved, exact
// latency percentiles, errors, and its own CPU time while measuring.
//
//	loadgen -url http://127.0.0.1:3000/health -rate 8000 -duration 3s [-warmup 1s] [-keepalive=false]
//
// It lives in a module of its own so that vegeta and its dependencies stay
// out of prefork's go.mod, which every user of the cluster package reads.
// The harness (go run ./bench) builds it and runs it under taskset.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Report is the JSON line loadgen prints; the harness decodes it.
type Report struct {
	Target    float64        `json:"target"`    // requested rate, req/s
	Rate      float64        `json:"rate"`      // achieved send rate, req/s
	Requests  int            `json:"requests"`  // sent while measuring
	Errors    int            `json:"errors"`    // transport errors and non-2xx
	FirstErr  string         `json:"first_err"` // one of them, if any
	P50       time.Duration  `json:"p50"`
	P99       time.Duration  `json:"p99"`
	P999      time.Duration  `json:"p999"`
	Max       time.Duration  `json:"max"`
	CPU       time.Duration  `json:"cpu"`     // user+system time of loadgen while measuring
	Elapsed   time.Duration  `json:"elapsed"` // wall time of the measured attack
	Codes     map[uint16]int `json:"codes"`
	KeepAlive bool           `json:"keepalive"`
}

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 0, "requests per second")
	dur := flag.Duration("duration", 3*time.Second, "measured attack")
	warmup := flag.Duration("warmup", time.Second, "attack before measuring, not counted")
	keepalive := flag.Bool("keepalive", true, "reuse connections; false opens one per request")
	timeout := flag.Duration("timeout", 2*time.Second, "per-request timeout")
	flag.Parse()
	if *url == "" || *rate < 1 || *dur <= 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "loadgen: need -url, -rate ≥ 1, -duration > 0, -warmup ≥ 0")
		os.Exit(2)
	}
	r, err := run(*url, *rate, *dur, *warmup, *keepalive, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(url string, rate int, dur, warmup time.Duration, keepalive bool, timeout time.Duration) (Report, error) {
	// One client for the warm-up and the measured attack, so that
	// keep-alive connections opened while warming up are reused; each
	// attack needs its own Attacker (one stops itself when done).
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: vegeta.DefaultConnections}}
	attacker := func() *vegeta.Attacker {
		a := vegeta.NewAttacker(
			vegeta.Client(client),
			vegeta.KeepAlive(keepalive), // after Client: it edits that client's transport
			vegeta.Timeout(timeout),
			vegeta.Redirects(vegeta.NoFollow),
			// Enough senders from the start that a burst of slow answers
			// does not wait for vegeta to spawn more.
			vegeta.Workers(64),
		)
		// vegeta's dialer binds to 0.0.0.0:0 before connecting. A bind
		// without the destination cannot take a port that is in TIME_WAIT
		// towards another peer, and thousands of new connections a second
		// leave that many in TIME_WAIT: after a few seconds every dial fails
		// with EADDRINUSE. connect() alone picks the port knowing the
		// destination and may reuse a TIME_WAIT one on loopback
		// (net.ipv4.tcp_tw_reuse=2, the default).
		client.Transport.(*http.Transport).DialContext = (&net.Dialer{KeepAlive: -1}).DialContext
		return a
	}
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: url})
	pace := vegeta.Rate{Freq: rate, Per: time.Second}
	if warmup > 0 {
		for range attacker().Attack(tr, pace, warmup, "warmup") {
		}
	}
	rep := Report{Target: float64(rate), KeepAlive: keepalive, Codes: map[uint16]int{}}
	lat := make([]time.Duration, 0, int(float64(rate)*dur.Seconds())+16)
	var first, last time.Time
	cpu0, err := cpuTime()
	if err != nil {
		return rep, err
	}
	began := time.Now()
	for res := range attacker().Attack(tr, pace, dur, "measure") {
		if first.IsZero() || res.Timestamp.Before(first) {
			first = res.Timestamp
		}
		if res.Timestamp.After(last) {
			last = res.Timestamp
		}
		lat = append(lat, res.Latency)
		rep.Codes[res.Code]++
		if res.Error != "" || res.Code < 200 || res.Code >= 400 {
			rep.Errors++
			if rep.FirstErr == "" {
				rep.FirstErr = fmt.Sprintf("%d %s", res.Code, res.Error)
			}
		}
	}
	rep.Elapsed = time.Since(began)
	cpu1, err := cpuTime()
	if err != nil {
		return rep, err
	}
	rep.CPU = cpu1 - cpu0
	rep.Requests = len(lat)
	if len(lat) < 2 {
		return rep, errors.New("loadgen: fewer than 2 requests sent")
	}
	// Requests were started from first to last: n-1 intervals.
	rep.Rate = float64(len(lat)-1) / last.Sub(first).Seconds()
	slices.Sort(lat)
	rep.P50, rep.P99, rep.P999 = quantile(lat, 0.50), quantile(lat, 0.99), quantile(lat, 0.999)
	rep.Max = lat[len(lat)-1]
	return rep, nil
}

// quantile returns the nearest-rank q-quantile of sorted xs: the smallest
// value with at least q of the samples at or below it.
func quantile(xs []time.Duration, q float64) time.Duration {
	i := int(float64(len(xs))*q+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// cpuTime is this process's user+system time so far.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("loadgen: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
