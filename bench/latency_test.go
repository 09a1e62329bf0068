package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPlanRates(t *testing.T) {
	fr := []float64{0.5, 0.8}
	// The generator keeps up: plain fractions of the maximum.
	if got := planRates(10000, 20e-6, 0.7, fr); !slices.Equal(got, []int{5000, 8000}) {
		t.Errorf("generator with room: rates %v, want [5000 8000]", got)
	}
	// 80% of 50000 at 70µs a request would need 2.8 cores: both rates
	// shrink by one factor so the higher needs 0.7 cores.
	got := planRates(50000, 70e-6, 0.7, fr)
	if got[1] != 10000 || got[0] != 6250 {
		t.Errorf("generator short of CPU: rates %v, want [6250 10000]", got)
	}
	// Without a calibration the fractions stand.
	if got := planRates(4000, 0, 0.7, fr); !slices.Equal(got, []int{2000, 3200}) {
		t.Errorf("no calibration: rates %v, want [2000 3200]", got)
	}
}

func TestLatPath(t *testing.T) {
	for spin, want := range map[time.Duration]string{
		0:                      "/health",
		200 * time.Microsecond: "/spin?us=200",
		100 * time.Millisecond: "/spin?us=100000",
	} {
		if have := latPath(spin); have != want {
			t.Errorf("latPath(%v) = %q, want %q", spin, have, want)
		}
	}
}

func TestVariant(t *testing.T) {
	all := specs("/r", 2)
	sp, err := variant(all, "/r", "rr+sched=normal+gomaxprocs=1")
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Join(sp.command(4000), " ")
	want := "/r/bin/supervisor -sched normal -listen 127.0.0.1:4000 -workers 2 -mode rr -grace 2s -log-format json -- env GOMAXPROCS=1 /r/bin/worker"
	if sp.name != "rr+sched=normal+gomaxprocs=1" || argv != want {
		t.Errorf("variant: %s: %s\nwant %s", sp.name, argv, want)
	}
	sp, err = variant(all, "/r", "go-single+gomaxprocs=2")
	if err != nil || !slices.Contains(sp.env, "GOMAXPROCS=2") || strings.Contains(strings.Join(sp.command(1), " "), "env") {
		t.Errorf("go-single+gomaxprocs=2: env %v, argv %v, err %v", sp.env, sp.command(1), err)
	}
	sp, err = variant(all, "/r", "node-rr")
	if err != nil || sp.name != "node-rr" || sp.env[0] != "NODE_CLUSTER_SCHED_POLICY=rr" {
		t.Errorf("plain node-rr: %+v, %v", sp, err)
	}
	for _, bad := range []string{"nope", "node-rr+sched=normal", "rr+sched", "rr+sched=", "prefork-node-shared+gomaxprocs=1", "go-single+balance=least-conn"} {
		if _, err := variant(all, "/r", bad); err == nil {
			t.Errorf("variant(%q): no error", bad)
		}
	}
}

// A line as bench/loadgen prints it (its Report, JSON-encoded).
const loadgenLine = `{"target":8000,"rate":7995.2,"requests":23990,"errors":2,"first_err":"0 Get: timeout",` +
	`"p50":268147,"p99":7638509,"p999":13048593,"max":20291064,"cpu":1500000000,"elapsed":3000000000,` +
	`"codes":{"0":2,"200":23988},"keepalive":true}`

func TestGenReport(t *testing.T) {
	var g genReport
	if err := json.Unmarshal([]byte(loadgenLine), &g); err != nil {
		t.Fatal(err)
	}
	if g.P99 != 7638509*time.Nanosecond || g.P999 != 13048593*time.Nanosecond || g.Requests != 23990 || g.Errors != 2 {
		t.Errorf("decoded %+v", g)
	}
	if c := g.genCPU(); c != 0.5 {
		t.Errorf("genCPU %v, want 0.5", c)
	}
	if !g.onTime() {
		t.Errorf("7995.2/s of 8000/s is on time")
	}
	g.Rate = 7800
	if g.onTime() {
		t.Errorf("7800/s of 8000/s is late")
	}
}

func TestRunDelay(t *testing.T) {
	if d := runDelay("267199036 397253176 871\n"); d != 397253176*time.Nanosecond {
		t.Errorf("runDelay = %v, want 397.253176ms", d)
	}
	if d := runDelay("garbage"); d != 0 {
		t.Errorf("runDelay of a short line = %v", d)
	}
	// This process has threads; a pid that cannot exist has none.
	if d := runqWait([]int{1 << 30}); d != 0 {
		t.Errorf("runqWait of a missing pid = %v", d)
	}
}
