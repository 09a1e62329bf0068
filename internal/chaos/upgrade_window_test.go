package chaos

import (
	"encoding/json"
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

// window is one upgrade's signal window as the new image logged it
// ("upgraded in place"): from the old image's execsignal.Hold to the new
// image's catching the signals in its init. A Go executable can lose a
// SIGTERM, SIGINT or SIGHUP sent in it, or die of a SIGTERM; the sweeps
// count the signals sent in one, to show that they test it.
type window struct{ held, caught time.Time }

func (w window) length() time.Duration { return w.caught.Sub(w.held) }

// windows returns the windows of the upgrades s logged, in order.
func (s *sup) windows() []window {
	var out []window
	for _, line := range strings.Split(s.Out.String(), "\n") {
		var e struct {
			Msg    string `json:"msg"`
			Held   int64  `json:"signals_held_ns"`
			Caught int64  `json:"signals_caught_ns"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "upgraded in place" && e.Held > 0 {
			out = append(out, window{time.Unix(0, e.Held), time.Unix(0, e.Caught)})
		}
	}
	return out
}

// in reports whether the signal may have arrived inside one of ws.
func (sn sending) in(ws []window) bool {
	for _, w := range ws {
		if !sn.to.Before(w.held) && !sn.from.After(w.caught) {
			return true
		}
	}
	return false
}

// sweepTally counts a sweep's outcomes.
type sweepTally struct {
	sent, handled, lost, fatal int
	inWindow                   int      // sent inside a window the log shows
	wrong                      []string // every outcome but handled, described
}

// add counts one outcome of a signal sent to s: handled, or what went
// wrong (lost, fatal or another), described by why.
func (tl *sweepTally) add(s *sup, outcome string, off time.Duration, sn sending, why string) {
	tl.sent++
	if sn.in(s.windows()) {
		tl.inWindow++
	}
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
	figure(t, "upgrade-signals", mode, "build", build, "signal", sig, "sent", tl.sent, "in_window", tl.inWindow, "handled", tl.handled,
		"lost", tl.lost, "fatal", tl.fatal, "other", len(tl.wrong)-tl.lost-tl.fatal)
	if len(tl.wrong) > 0 {
		t.Errorf("%s during an upgrade (%s build): %d of %d not handled as at rest:\n%s", sig, build,
			len(tl.wrong), tl.sent, strings.Join(tl.wrong, "\n"))
	}
}
