package chaos

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The signal sweeps (TestUpgradeSignals) send a signal at each offset
// after SIGUSR2 and require it to be handled as by a supervisor at rest,
// every time: the supervisor as it ships (scripts/build-supervisor, the
// archive build) has no time in an upgrade when one is lost or fatal
// (internal/execsignal). PREFORK_CHAOS_BUILD=plain runs them against the
// Go executable, which has such a window, to see them fail.

// sending is when a signal was sent: after from, before to.
type sending struct{ from, to time.Time }

func (sn sending) String() string {
	return sn.from.Format("15:04:05.000000") + "–" + sn.to.Format("15:04:05.000000")
}

// usr2ThenTimed sends SIGUSR2, and sig offset later, by a timer; it
// returns when it sent sig, with the time of the sending.
func (s *sup) usr2ThenTimed(sig syscall.Signal, offset time.Duration) sending {
	s.t.Helper()
	type sent struct {
		sn  sending
		err error
	}
	fired := make(chan sent, 1)
	s.Signal(syscall.SIGUSR2)
	time.AfterFunc(offset, func() {
		from := time.Now()
		err := syscall.Kill(s.PID(), sig)
		fired <- sent{sending{from, time.Now()}, err}
	})
	f := <-fired
	if f.err != nil {
		s.t.Fatalf("%s at %s after SIGUSR2: %v", sig, offset, f.err)
	}
	return f.sn
}

// sweepTally counts a sweep's outcomes.
type sweepTally struct {
	sent, handled, lost, fatal int
	wrong                      []string // every outcome but handled, described
}

// add counts one outcome: handled, or what went wrong (lost, fatal or
// another), described by why.
func (tl *sweepTally) add(outcome string, off time.Duration, sn sending, why string) {
	tl.sent++
	switch outcome {
	case "handled":
		tl.handled++
		return
	case "lost":
		tl.lost++
	case "fatal":
		tl.fatal++
	}
	tl.wrong = append(tl.wrong, fmt.Sprintf("%s after SIGUSR2 (sent %s): %s: %s", off, sn, outcome, why))
}

// judge reports a sweep's figures and fails it unless every signal was
// handled.
func judge(t *testing.T, sig, mode string, tl sweepTally) {
	t.Helper()
	figure(t, "upgrade-signals", mode, "build", build, "signal", sig, "sent", tl.sent, "handled", tl.handled,
		"lost", tl.lost, "fatal", tl.fatal, "other", len(tl.wrong)-tl.lost-tl.fatal)
	if len(tl.wrong) > 0 {
		t.Errorf("%s during an upgrade (%s build): %d of %d not handled as at rest:\n%s", sig, build,
			len(tl.wrong), tl.sent, strings.Join(tl.wrong, "\n"))
	}
}
