package main

import (
	"testing"
	"time"
)

// parseStat takes busy time and steal from the "cpu" line, idle from each
// CPU's own line, and ignores the rest of /proc/stat.
func TestParseStat(t *testing.T) {
	const stat = `cpu  100 5 40 900 10 3 7 2 0 0
cpu0 60 1 20 300 4 1 3 1 0 0
cpu1 40 4 20 600 6 2 4 1 0 0
intr 12345 0 0
ctxt 999
`
	busy, steal, idle := parseStat(stat)
	if busy != 145 || steal != 2 {
		t.Errorf("busy, steal = %d, %d; want 145, 2", busy, steal)
	}
	if idle["cpu0"] != 304 || idle["cpu1"] != 606 || len(idle) != 2 {
		t.Errorf("idle = %v; want cpu0 304, cpu1 606", idle)
	}
}

// idleShare is the idle ticks of one CPU over the seconds between the
// snapshots.
func TestIdleShare(t *testing.T) {
	at := time.Unix(100, 0)
	a := cpuSnap{at: at, idle: map[string]uint64{"cpu0": 1000}}
	b := cpuSnap{at: at.Add(2 * time.Second), idle: map[string]uint64{"cpu0": 1000 + clockTicks/2}}
	if got := idleShare(a, b, "cpu0"); got < 0.249 || got > 0.251 {
		t.Errorf("idleShare = %.3f; want 0.25", got)
	}
}
