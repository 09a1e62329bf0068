package supervisor

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/settings"
)

// requestReload is a reload asked for by SIGHUP, ctl reload or the
// dashboard: with a -config file, the file is read again first and what
// can change without a restart applies (workers, timeouts, recycling,
// the command); the rollout that follows starts the new workers under it.
// A file that does not read, or whose settings the running ones rule out,
// refuses the reload: everything runs on as it was.
func (rl *reloader) requestReload(reply chan control.Response, req control.Request) {
	s := rl.s
	if s.phase == phaseStopping || s.phase == phaseStarting && reply != nil {
		rl.reload(reply, reloadOptions{}) // refused, saying why
		return
	}
	note, err := s.reconfigure()
	if err != nil {
		s.log.Error("reload refused: the configuration file is bad; the settings in use stay", zap.Error(err))
		s.emit(nil, control.Event{Kind: control.EventReload, Step: control.StepFailed, Error: err.Error()})
		s.counts.reloads["failure"]++
		respond(reply, control.Response{Error: "reload refused: " + err.Error()})
		return
	}
	rl.note += note
	rl.reload(reply, s.reloadOptions(req)) // after the file: its -canary and -bake count
}

// reconfigure reads the -config file again and applies what a reload can:
// s.cfg takes the new values, and a changed worker count scales. It
// returns what changed, for the reload's reply; nothing without a file.
func (s *Supervisor) reconfigure() (string, error) {
	file := s.cfg.ConfigFile()
	if file == "" {
		return "", nil
	}
	next, err := s.cfg.Reread()
	if err != nil {
		return "", err
	}
	cfg, changes, err := s.cfg.Reload(next)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	s.cfg = cfg
	if sd, ok := s.proto.(*systemd); ok {
		sd.hang = cfg.HangTimeout // offered to the next workers as WATCHDOG_USEC
	}
	applied, waiting := changeLists(changes)
	s.log.Info("configuration file read again", zap.String("file", file), zap.Strings("applied", applied))
	if len(waiting) > 0 {
		s.log.Warn("configuration changes that a reload cannot apply; the settings in use stay until then", zap.String("file", file), zap.Strings("waiting", waiting))
	}
	if n := len(s.slots); cfg.Workers != n && changed(changes, "workers") {
		s.scaler.scaleTo(cfg.Workers)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: ", file)
	switch {
	case len(changes) == 0:
		b.WriteString("no change")
	case len(applied) > 0:
		b.WriteString("applied " + strings.Join(applied, ", "))
	}
	if len(waiting) > 0 {
		if len(applied) > 0 {
			b.WriteString("; ")
		}
		b.WriteString("not applied: " + strings.Join(waiting, ", "))
	}
	b.WriteString("; ")
	return b.String(), nil
}

// changeLists is the changes a reload applied, and the others, each with
// what it needs.
func changeLists(changes []settings.Change) (applied, waiting []string) {
	for _, c := range changes {
		if c.Needs == settings.NeedsNothing {
			applied = append(applied, c.String())
		} else {
			waiting = append(waiting, c.String()+" (needs "+c.Needs+")")
		}
	}
	return applied, waiting
}

// changed reports whether changes holds key.
func changed(changes []settings.Change, key string) bool {
	for _, c := range changes {
		if c.Key == key {
			return true
		}
	}
	return false
}

// scaleTo scales to n workers for a reloaded configuration file: at once
// down, when nothing else runs, so that the reload replaces fewer; else
// after the reload, as a queued TTIN/TTOU would, replacing what those
// queued.
func (sc *scaler) scaleTo(n int) {
	if n < len(sc.s.slots) && sc.s.phase == phaseRunning && sc.s.reloader.roll == nil && sc.scaling == nil {
		sc.scale(n, nil)
		return
	}
	sc.scaleQueued = n - len(sc.s.slots)
}
