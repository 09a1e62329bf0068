package chaos

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// The in-place upgrade under fire: signals at every point of it, and
// releases broken in every way an operator can install one.

// sweepOffsets are the delays after SIGUSR2 at which the second signal is
// sent: every millisecond from 0 to 20 in the long run, a few spread over
// the check, the execve and the new image's start otherwise.
func sweepOffsets() []time.Duration {
	var ms []int
	if long {
		for i := 0; i <= 20; i++ {
			ms = append(ms, i)
		}
		// And on to 40 ms: on a loaded machine the execve comes 15–30
		// ms after SIGUSR2 (the check and the rehearsal run first).
		for i := 22; i <= 40; i += 2 {
			ms = append(ms, i)
		}
	} else {
		ms = []int{2, 5, 7, 9, 12}
	}
	var out []time.Duration
	for _, m := range ms {
		out = append(out, time.Duration(m)*time.Millisecond)
	}
	return out
}

// upgradeOutcomes are the log lines that end an upgrade request, one each.
var upgradeOutcomes = []string{`"msg":"upgraded in place"`, `"msg":"upgrade refused"`, `"msg":"upgrade failed; still serving"`,
	`"msg":"upgrade rolled back"`, `"msg":"upgrade coalesced with the one in progress"`}

// upgradesSettled reports whether the supervisor has logged more than
// asked upgrade requests and every one of them has ended, one way or
// another.
func (s *sup) upgradesSettled(asked int) bool {
	n := 0
	for _, o := range upgradeOutcomes {
		n += s.count(o)
	}
	requested := s.count(`"msg":"upgrade requested"`)
	return requested > asked && n == requested
}

// TestUpgradeSignals: SIGTERM, SIGHUP, SIGUSR2 and SIGTTIN sent at each
// offset after SIGUSR2 — during the check, the execve or the new image's
// start. SIGUSR2 and SIGTTIN do what they do at any other time, at every
// offset: a second upgrade (or one coalesced with the first), one more
// worker. SIGTERM stops the supervisor gracefully and SIGHUP reloads,
// except inside a signal window (upgrade_window_test.go): from the old
// image's execsignal.Hold to the new image's first package init, Go's
// runtime lets them be lost (SIGTERM, from its handler install on, be
// fatal) and no Go code can catch them; and a SIGUSR2 or SIGTTIN that
// another thread of the old image takes there, after its last look at
// os/signal's channel and before execve ends that thread, is lost too. Each is judged by whether it was
// sent inside a window the supervisor logged: outside, a wrong outcome
// fails the test; inside, it is counted in the figures, and a SIGTERM
// that was lost must still stop the supervisor when sent again.
func TestUpgradeSignals(t *testing.T) {
	modesHere := pick([]string{"rr"}, modes)
	for _, mode := range modesHere {
		t.Run(mode, func(t *testing.T) {
			t.Run("TERM", func(t *testing.T) { sweepTerm(t, mode) })
			t.Run("HUP", func(t *testing.T) { sweepHup(t, mode) })
			t.Run("USR2", func(t *testing.T) { sweepUsr2(t, mode) })
			t.Run("TTIN", func(t *testing.T) { sweepTtin(t, mode) })
		})
	}
}

func sweepTerm(t *testing.T, mode string) {
	var tl windowTally
	for _, off := range sweepOffsets() {
		for range trials() {
			s := start(t, opts{mode: mode, workers: 1})
			sn := s.usr2ThenTimed(syscall.SIGTERM, off)
			tl.sent++
			stopped := proctest.Poll(3*time.Second, func() bool { return !s.Running() })
			ws := s.windows()
			inside := sn.in(ws)
			switch {
			case !stopped && inside:
				tl.lostIn++
			case !stopped:
				tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: lost, sent %s outside every window: %s", off, sn, ws))
			case s.ExitCode() == 0:
			case killedBy(s, syscall.SIGTERM) && (inside || s.count(`"msg":"upgraded in place"`) == 0):
				// SIGTERM in the new runtime's first milliseconds, the
				// only time it can be fatal; the new image may die
				// before it logs its window, or, as the runtime yields
				// before it kills, a few milliseconds after.
				tl.fatalIn++
				inside = true
			default:
				tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: %s, sent %s, windows %s; log:\n%s", off, s.Cmd.ProcessState,
					sn, ws, grepLines(s.Out.String(), "upgrad")))
			}
			if inside {
				tl.inside++
			}
			if !stopped {
				s.stop() // again: the supervisor must still stop gracefully
			}
			for _, w := range ws {
				tl.lengths = append(tl.lengths, w.length())
			}
			s.Kill()
		}
	}
	judge(t, "SIGTERM", mode, tl)
}

func sweepHup(t *testing.T, mode string) {
	s := start(t, opts{mode: mode, workers: 1})
	var tl windowTally
	for _, off := range sweepOffsets() {
		for range trials() {
			st, _, err := s.status(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			gen, asked := st.Generation, s.count(`"msg":"upgrade requested"`)
			sn := s.usr2ThenTimed(syscall.SIGHUP, off)
			tl.sent++
			reloaded := func() bool {
				st, _, err := s.status(2 * time.Second)
				return err == nil && st.Generation == gen+1 && settledNow(s, 1)
			}
			// Settled: the upgrade has ended and no reload runs or starts.
			proctest.Poll(10*time.Second, func() bool { return !s.Running() || s.upgradesSettled(asked) && settledNow(s, 1) })
			if !s.Running() {
				t.Fatalf("%s: the supervisor died (status %d)", off, s.ExitCode())
			}
			inside := sn.in(s.windows())
			if inside {
				tl.inside++
			}
			if !proctest.Poll(3*time.Second, reloaded) {
				if inside {
					tl.lostIn++
				} else {
					tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: lost, sent %s outside every window: %s", off, sn, s.windows()))
				}
			}
		}
	}
	for _, w := range s.windows() {
		tl.lengths = append(tl.lengths, w.length())
	}
	judge(t, "SIGHUP", mode, tl)
	s.stop()
}

// trials is how many times each offset is tried: PREFORK_CHAOS_TRIALS, or 1.
func trials() int {
	if n, err := strconv.Atoi(os.Getenv("PREFORK_CHAOS_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 1
}

// killedBy reports whether s was ended by sig.
func killedBy(s *sup, sig syscall.Signal) bool {
	ws, ok := s.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig || s.ExitCode() == 128+int(sig)
}

// judge reports a sweep's figures, and fails it for any wrong outcome
// outside the signal windows: there, every signal must do what it does at
// any other time.
func judge(t *testing.T, sig, mode string, tl windowTally) {
	t.Helper()
	figure(t, "upgrade-signals", mode, "signal", sig, "sent", tl.sent, "in_window", tl.inside,
		"lost_in_window", tl.lostIn, "fatal_in_window", tl.fatalIn, "wrong_outside", len(tl.wrongOut),
		"window_ms_median/max", windowFigures(tl.lengths))
	if len(tl.wrongOut) > 0 {
		t.Errorf("%s after SIGUSR2, wrong outcomes outside the signal windows:\n%s", sig, strings.Join(tl.wrongOut, "\n"))
	}
	if tl.lostIn+tl.fatalIn > 0 {
		t.Logf("%s: %d of %d sent inside a signal window, %d lost and %d fatal there (see internal/execsignal)",
			sig, tl.inside, tl.sent, tl.lostIn, tl.fatalIn)
	}
}

func sweepUsr2(t *testing.T, mode string) {
	s := start(t, opts{mode: mode, workers: 1})
	var tl windowTally
	for _, off := range sweepOffsets() {
		st, _, err := s.status(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		before, asked := st.Upgrades, s.count(`"msg":"upgrade requested"`)
		sn := s.usr2ThenTimed(syscall.SIGUSR2, off)
		sent := sn.from
		tl.sent++
		// Two signals of one kind both pending before the first is
		// handled are one to the kernel: then one request is right.
		// The log's times are in milliseconds.
		var after int
		ok := proctest.Poll(15*time.Second, func() bool {
			want := 2
			if at := s.times("upgrade requested"); len(at) > asked && !at[asked].Before(sent.Truncate(time.Millisecond)) {
				want = 1
			}
			if !s.Running() || s.count(`"msg":"upgrade requested"`) < asked+want || !s.upgradesSettled(asked) {
				return false
			}
			st, _, err := s.status(2 * time.Second)
			if err != nil {
				return false
			}
			after = st.Upgrades
			return settledNow(s, 1)
		})
		if !s.Running() {
			t.Fatalf("%s: the supervisor died (status %d)", off, s.ExitCode())
		}
		inside := sn.in(s.windows())
		if inside {
			tl.inside++
		}
		switch {
		case ok && after >= before+1 && after <= before+2:
		case inside && after <= before+1:
			tl.lostIn++ // taken by another thread of the old image, after its last look
		default:
			tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: upgrades %d → %d, %d of 2 requests seen", off, before, after,
				s.count(`"msg":"upgrade requested"`)-asked))
		}
	}
	judge(t, "SIGUSR2", mode, tl)
	s.stop()
}

func sweepTtin(t *testing.T, mode string) {
	var tl windowTally
	for _, off := range sweepOffsets() {
		s := start(t, opts{mode: mode, workers: 1})
		sn := s.usr2ThenTimed(syscall.SIGTTIN, off)
		tl.sent++
		ok := proctest.Poll(15*time.Second, func() bool { return s.Running() && s.upgradesSettled(0) && settledNow(s, 2) })
		inside := sn.in(s.windows())
		if inside {
			tl.inside++
		}
		switch {
		case !s.Running():
			tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: the supervisor died (status %d)", off, s.ExitCode()))
		case !ok && inside && settledNow(s, 1):
			tl.lostIn++ // taken by another thread of the old image, after its last look
			s.stop()
		case !ok:
			_, why := s.settled(2)
			tl.wrongOut = append(tl.wrongOut, fmt.Sprintf("%s: not 2 workers: %s", off, why))
		default:
			s.stop()
		}
		s.Kill()
	}
	judge(t, "SIGTTIN", mode, tl)
}

// settledNow is s.settled without the reason.
func settledNow(s *sup, n int) bool {
	ok, _ := s.settled(n)
	return ok
}
