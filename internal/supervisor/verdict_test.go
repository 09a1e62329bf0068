package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/latency"
)

// served is a generation's window of n requests, errs of them failed
// (5xx), each taking took.
func served(n, errs uint64, took time.Duration) genWindow {
	var r latency.Recorder
	var o latency.OutcomeRecorder
	for i := range n {
		r.Observe(took)
		if i < errs {
			o.Count(latency.ClassServerError)
		} else {
			o.Count(latency.ClassOK)
		}
	}
	w := genWindow{beats: true}
	lat, out := r.Snapshot(), o.Snapshot()
	w.add(beatSample{}, beatSample{requests: n, latency: &lat, outcomes: &out})
	return w
}

func TestJudge(t *testing.T) {
	def := gatesOf(testConfig(), "")
	cont := gatesOf(testConfig(), control.InsufficientContinue)
	crashed, hung := served(500, 0, time.Millisecond), served(500, 0, time.Millisecond)
	crashed.crashes, hung.hangs = 1, 1
	noBeats := genWindow{workers: 1}
	for _, tc := range []struct {
		name     string
		g        gates
		old, new genWindow
		verdict  string
		rollback bool
		why      string
	}{
		{"same release", def, served(1000, 0, time.Millisecond), served(500, 0, time.Millisecond), control.VerdictPass, false, "within the gates"},
		{"20% 5xx", def, served(1000, 0, time.Millisecond), served(500, 100, time.Millisecond), control.VerdictFail, true, "error rate 20.00% against 0.00%"},
		{"errors just under +1 point", def, served(1000, 0, time.Millisecond), served(1000, 10, time.Millisecond), control.VerdictPass, false, ""},
		{"errors just over +1 point", def, served(1000, 0, time.Millisecond), served(1000, 11, time.Millisecond), control.VerdictFail, true, "error rate 1.10%"},
		{"more errors but under 2x the old", def, served(1000, 100, time.Millisecond), served(1000, 150, time.Millisecond), control.VerdictPass, false, ""},
		{"2x the old and +1 point", def, served(1000, 100, time.Millisecond), served(1000, 200, time.Millisecond), control.VerdictFail, true, "error rate 20.00% against 10.00%"},
		{"+50ms p99", def, served(1000, 0, 2*time.Millisecond), served(500, 0, 52*time.Millisecond), control.VerdictFail, true, "p99 latency"},
		{"p99 1.2x, one bucket", def, served(1000, 0, 16*time.Millisecond), served(500, 0, 19*time.Millisecond), control.VerdictPass, false, ""},
		{"p99 2x but within the slack", def, served(1000, 0, 200*time.Microsecond), served(500, 0, 400*time.Microsecond), control.VerdictPass, false, ""},
		{"too little traffic", def, served(1000, 0, time.Millisecond), served(99, 0, time.Millisecond), control.VerdictInsufficient, true, "not enough traffic: 99 requests"},
		{"too little traffic, continue", cont, served(1000, 0, time.Millisecond), served(99, 0, time.Millisecond), control.VerdictInsufficient, false, "-canary-insufficient continue"},
		{"a crash", def, served(1000, 0, time.Millisecond), crashed, control.VerdictFail, true, "crashed 1 time"},
		{"a hang", def, served(1000, 0, time.Millisecond), hung, control.VerdictFail, true, "hung 1 time"},
		{"no heartbeats: crashes and hangs only", def, noBeats, noBeats, control.VerdictPass, false, "sends no heartbeat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.g, tc.old, tc.new)
			if v.verdict != tc.verdict || v.rollback != tc.rollback || !strings.Contains(v.why, tc.why) {
				t.Fatalf("judge: %s rollback=%v (%s), want %s rollback=%v (%q)", v.verdict, v.rollback, v.why, tc.verdict, tc.rollback, tc.why)
			}
			if v.new.Requests != tc.new.requests || v.old.Requests != tc.old.requests {
				t.Fatalf("figures %+v %+v do not carry the windows' requests", v.old, v.new)
			}
		})
	}
}
