package chaos

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The one time in an upgrade when SIGTERM, SIGINT or SIGHUP can be lost
// (SIGTERM: or be fatal) is the signal window: from the old image's
// execsignal.Hold to the new image's first package init, when Go's
// runtime has unblocked them and no Go code can catch them yet (see
// internal/execsignal). Every upgrade logs its window ("upgraded in
// place", signals_held_ns and signals_caught_ns); the sweeps judge each
// signal by whether it was sent inside one.

// signalWindow is one upgrade's window.
type signalWindow struct{ held, caught time.Time }

func (w signalWindow) length() time.Duration { return w.caught.Sub(w.held) }

func (w signalWindow) String() string {
	return w.held.Format("15:04:05.000000") + "–" + w.caught.Format("15:04:05.000000")
}

// windows returns the signal windows of the upgrades s logged, in order.
func (s *sup) windows() []signalWindow {
	var out []signalWindow
	for _, line := range strings.Split(s.Out.String(), "\n") {
		var e struct {
			Msg    string `json:"msg"`
			Held   int64  `json:"signals_held_ns"`
			Caught int64  `json:"signals_caught_ns"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "upgraded in place" && e.Held > 0 {
			out = append(out, signalWindow{time.Unix(0, e.Held), time.Unix(0, e.Caught)})
		}
	}
	return out
}

// sending is when a signal was sent: after from, before to.
type sending struct{ from, to time.Time }

func (sn sending) String() string {
	return sn.from.Format("15:04:05.000000") + "–" + sn.to.Format("15:04:05.000000")
}

// in reports whether the signal may have arrived inside one of ws.
func (sn sending) in(ws []signalWindow) bool {
	for _, w := range ws {
		if !sn.to.Before(w.held) && !sn.from.After(w.caught) {
			return true
		}
	}
	return false
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

// windowTally counts a sweep's signals against the windows.
type windowTally struct {
	sent, inside    int      // signals sent; of those, inside a window
	lostIn, fatalIn int      // outcomes inside a window
	wrongOut        []string // wrong outcomes outside any window: a bug
	lengths         []time.Duration
}

// windowFigures summarises the windows' lengths: median and max in ms.
func windowFigures(ls []time.Duration) string {
	if len(ls) == 0 {
		return "-"
	}
	s := slices.Clone(ls)
	slices.Sort(s)
	return fmt.Sprintf("%.1f/%.1f", float64(s[len(s)/2].Microseconds())/1000, float64(s[len(s)-1].Microseconds())/1000)
}
