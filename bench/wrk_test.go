package main

import (
	"testing"
	"time"
)

const wrkReport = `Running 3s test @ http://127.0.0.1:40123/health
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.27ms    2.45ms  36.05ms   96.33%
    Req/Sec    36.91k     9.26k   51.53k    70.00%
  Latency Distribution
     50%  650.00us
     75%    1.00ms
     90%    1.44ms
     99%   12.26ms
  110325 requests in 3.00s, 26.20MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  36582.27
Transfer/sec:      8.73MB
`

func TestParseWrk(t *testing.T) {
	have, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{rps: 36582.27, p50: 650 * time.Microsecond, p99: 12260 * time.Microsecond,
		requests: 110325, sockErrs: 6, non2xx: 5}
	if have != want {
		t.Errorf("parseWrk:\nhave %+v\nwant %+v", have, want)
	}
}

func TestParseWrkWithoutLatency(t *testing.T) {
	if _, err := parseWrk("Requests/sec: 10.0\n"); err == nil {
		t.Error("parseWrk accepted a report without --latency percentiles")
	}
}
