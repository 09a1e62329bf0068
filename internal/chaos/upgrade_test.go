package chaos

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// The in-place upgrade under fire: signals at every point of it, and
// releases broken in every way an operator can install one.

// sweepOffsets are the delays after SIGUSR2 at which the second signal is
// sent: every millisecond from 0 to 20 in the long run, and every 2 on to
// 40; two in the short one. Both add three aimed at the signal window of
// upgrades in mode (aimedOffsets): the start, the middle and the
// end of the time from Hold to the new image's catching the signals, where
// a Go executable loses or dies of them.
func sweepOffsets(t *testing.T, mode string) []time.Duration {
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
		ms = []int{2, 9}
	}
	var out []time.Duration
	for _, m := range ms {
		out = append(out, time.Duration(m)*time.Millisecond)
	}
	return append(out, aimedOffsets(t, mode)...)
}

// aimed caches aimedOffsets by mode.
var aimed = map[string][]time.Duration{}

// aimedOffsets upgrades a supervisor in mode three times and returns the
// offsets after SIGUSR2 of the start, the middle and the end of the
// median signal window (the first upgrade, with cold caches, is slower
// than the sweeps' ones).
func aimedOffsets(t *testing.T, mode string) []time.Duration {
	if offs, ok := aimed[mode]; ok {
		return offs
	}
	s := start(t, opts{mode: mode, workers: 1})
	var ds, ws []time.Duration
	for n := 1; n <= 3; n++ {
		sent := time.Now()
		s.Signal(syscall.SIGUSR2)
		var got []window
		if !proctest.Poll(15*time.Second, func() bool { got = s.windows(); return len(got) == n && settledNow(s, 1) }) {
			t.Fatalf("upgrade %d logged no signal window:\n%s", n, grepLines(s.Out.String(), "upgrad"))
		}
		ds, ws = append(ds, got[n-1].held.Sub(sent)), append(ws, got[n-1].length())
	}
	s.stop()
	slices.Sort(ds)
	slices.Sort(ws)
	d, w := ds[1], ws[1]
	offs := []time.Duration{max(d, 0), max(d+w/2, 0), max(d+w, 0)}
	t.Logf("%s: signal window %s–%s after SIGUSR2 (median of 3): aiming at %v", mode,
		d.Round(10*time.Microsecond), (d + w).Round(10*time.Microsecond), offs)
	aimed[mode] = offs
	return offs
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
// offset after SIGUSR2 — during the check, the rehearsal, the execve or
// the new image's start — do what they do at any other time, at every
// offset: a graceful stop (exit 0), a reload, a second upgrade (or one
// coalesced with the first), one more worker. None is lost, none is fatal
// (see upgrade_window_test.go).
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
	var tl sweepTally
	for _, off := range sweepOffsets(t, mode) {
		for range trials() {
			s := start(t, opts{mode: mode, workers: 1})
			sn := s.usr2ThenTimed(syscall.SIGTERM, off)
			stopped := proctest.Poll(10*time.Second, func() bool { return !s.Running() })
			switch {
			case !stopped:
				tl.add(s, "lost", off, sn, "still running 10s later; log:\n"+grepLines(s.Out.String(), "upgrad"))
			case s.ExitCode() == 0:
				tl.add(s, "handled", off, sn, "")
			case killedBy(s, syscall.SIGTERM):
				tl.add(s, "fatal", off, sn, "killed by SIGTERM; log:\n"+grepLines(s.Out.String(), "upgrad"))
			default:
				tl.add(s, "wrong", off, sn, fmt.Sprintf("%s; log:\n%s", s.Cmd.ProcessState, grepLines(s.Out.String(), "upgrad")))
			}
			s.Kill()
		}
	}
	judge(t, "SIGTERM", mode, tl)
}

func sweepHup(t *testing.T, mode string) {
	s := start(t, opts{mode: mode, workers: 1})
	var tl sweepTally
	for _, off := range sweepOffsets(t, mode) {
		for range trials() {
			st, _, err := s.status(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			gen, asked := st.Generation, s.count(`"msg":"upgrade requested"`)
			sn := s.usr2ThenTimed(syscall.SIGHUP, off)
			reloaded := func() bool {
				st, _, err := s.status(2 * time.Second)
				return err == nil && st.Generation == gen+1 && settledNow(s, 1)
			}
			// Settled: the upgrade has ended and no reload runs or starts.
			proctest.Poll(10*time.Second, func() bool { return !s.Running() || s.upgradesSettled(asked) && settledNow(s, 1) })
			if !s.Running() {
				tl.add(s, "fatal", off, sn, fmt.Sprintf("the supervisor died (%s)", s.Cmd.ProcessState))
				judge(t, "SIGHUP", mode, tl)
				return
			}
			if proctest.Poll(3*time.Second, reloaded) {
				tl.add(s, "handled", off, sn, "")
			} else {
				tl.add(s, "lost", off, sn, fmt.Sprintf("generation %d, want %d", st.Generation, gen+1))
			}
		}
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

func sweepUsr2(t *testing.T, mode string) {
	s := start(t, opts{mode: mode, workers: 1})
	var tl sweepTally
	for _, off := range sweepOffsets(t, mode) {
		st, _, err := s.status(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		before, asked := st.Upgrades, s.count(`"msg":"upgrade requested"`)
		sn := s.usr2ThenTimed(syscall.SIGUSR2, off)
		sent := sn.from
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
		switch {
		case !s.Running():
			tl.add(s, "fatal", off, sn, fmt.Sprintf("the supervisor died (%s)", s.Cmd.ProcessState))
			judge(t, "SIGUSR2", mode, tl)
			return
		case ok && after >= before+1 && after <= before+2:
			tl.add(s, "handled", off, sn, "")
		default:
			tl.add(s, "lost", off, sn, fmt.Sprintf("upgrades %d → %d, %d of 2 requests seen", before, after,
				s.count(`"msg":"upgrade requested"`)-asked))
		}
	}
	judge(t, "SIGUSR2", mode, tl)
	s.stop()
}

func sweepTtin(t *testing.T, mode string) {
	var tl sweepTally
	for _, off := range sweepOffsets(t, mode) {
		s := start(t, opts{mode: mode, workers: 1})
		sn := s.usr2ThenTimed(syscall.SIGTTIN, off)
		ok := proctest.Poll(15*time.Second, func() bool { return s.Running() && s.upgradesSettled(0) && settledNow(s, 2) })
		switch {
		case !s.Running():
			tl.add(s, "fatal", off, sn, fmt.Sprintf("the supervisor died (%s)", s.Cmd.ProcessState))
		case ok:
			tl.add(s, "handled", off, sn, "")
			s.stop()
		case settledNow(s, 1):
			tl.add(s, "lost", off, sn, "one worker")
			s.stop()
		default:
			_, why := s.settled(2)
			tl.add(s, "wrong", off, sn, "not 2 workers: "+why)
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
