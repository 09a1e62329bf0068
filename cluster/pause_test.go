package cluster

import (
	"bytes"

	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/ipc"
)

func TestPauseLevels(t *testing.T) {
	for _, tc := range []struct {
		limit     uint64
		baseline  int
		high, low int
		ok        bool
	}{
		{1024, 10, 1024 - pauseMargin, 1024 - pauseMargin - resumeGap, true},
		{1 << 63, 10, 1<<31 - 1 - pauseMargin, 1<<31 - 1 - pauseMargin - resumeGap, true}, // RLIM_INFINITY
		{pauseMargin + resumeGap + 10, 10, resumeGap + 10, 10, false},                     // paused with nothing open
		{64, 10, 64 - pauseMargin, 64 - pauseMargin - resumeGap, false},
	} {
		high, low, ok := pauseLevels(tc.limit, tc.baseline)
		if high != tc.high || low != tc.low || ok != tc.ok {
			t.Errorf("pauseLevels(%d, %d) = %d, %d, %v; want %d, %d, %v", tc.limit, tc.baseline, high, low, ok, tc.high, tc.low, tc.ok)
		}
	}
}

// The gate pauses at high, stays paused until low (hysteresis), and retries
// a frame it could not send.
func TestPauseGate(t *testing.T) {
	open := 0
	var sent []ipc.Type
	var fail bool
	g := &pauseGate{high: 100, low: 40,
		conns: func() int { return open },
		send: func(typ ipc.Type) error {
			if fail {
				return ipc.ErrWouldBlock
			}
			sent = append(sent, typ)
			return nil
		},
	}
	step := func(conns, pending int, want ...ipc.Type) {
		t.Helper()
		open = conns
		before := len(sent)
		g.update(pending)
		if have := sent[before:]; !slices.Equal(have, want) {
			t.Fatalf("open %d + pending %d: sent %v, want %v", conns, pending, have, want)
		}
	}
	step(50, 0)
	step(50, 49)
	step(50, 50, ipc.TypePause) // pending descriptors count
	step(120, 0)                // already paused
	step(60, 0)                 // below high, above low: still paused
	step(41, 0)
	step(40, 0, ipc.TypeResume)
	step(60, 0) // resumed: nothing until high again
	fail = true
	step(100, 0) // the supervisor's queue is full: not sent...
	fail = false
	step(100, 0, ipc.TypePause) // ...so the next update sends it
	step(0, 0, ipc.TypeResume)

	var nilGate *pauseGate
	nilGate.update(1 << 20) // no back-pressure: does nothing
}

func TestCountLog(t *testing.T) {
	var out bytes.Buffer
	tl := countLog{log: slog.New(slog.NewTextHandler(&out, nil)), msg: "truncated", keys: []string{"frames", "lost"}}
	t0 := time.Unix(1000, 0)
	lines := func() []string { return strings.Split(strings.TrimSpace(out.String()), "\n") }

	if wait := tl.report(t0, 0, 0); wait != 0 || out.Len() != 0 {
		t.Fatalf("nothing truncated: logged %q, wait %v", out.String(), wait)
	}
	if wait := tl.report(t0, 1, 30); wait != 0 || len(lines()) != 1 || !strings.Contains(lines()[0], "frames=1 lost=30") {
		t.Fatalf("first truncation: logged %q, wait %v", out.String(), wait)
	}
	// More within the interval: nothing logged until it has passed...
	if wait := tl.report(t0.Add(time.Second), 3, 40); wait != logEvery-time.Second || len(lines()) != 1 {
		t.Fatalf("within the interval: logged %q, wait %v", out.String(), wait)
	}
	if wait := tl.report(t0.Add(5*time.Second), 5, 100); wait != logEvery-5*time.Second || len(lines()) != 1 {
		t.Fatalf("within the interval: logged %q, wait %v", out.String(), wait)
	}
	// ...then one line with all of it.
	if wait := tl.report(t0.Add(logEvery), 5, 100); wait != 0 || len(lines()) != 2 || !strings.Contains(lines()[1], "frames=4 lost=70") {
		t.Fatalf("after the interval: logged %q, wait %v", out.String(), wait)
	}
	if wait := tl.report(t0.Add(time.Hour), 5, 100); wait != 0 || len(lines()) != 2 {
		t.Fatalf("nothing new: logged %q, wait %v", out.String(), wait)
	}
}
