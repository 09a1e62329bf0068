package primary

import (
	"errors"
	"time"

	ctl "github.com/prefork/prefork/internal/control"
)

// ReloadOption changes how one [Primary.Reload] rolls; without any, a
// reload follows Settings.Canary and Settings.Bake.
type ReloadOption func(*ctl.Request)

// Canary replaces n slots first and lets them serve for bake (0: the
// primary's Settings.Bake); then their error rate, p99 latency, crashes
// and hangs are compared with the old generation's over the same window,
// and the reload goes on with the other slots or gives the canary's slots
// workers of the release that was serving again ([ErrRolledBack]).
// Canary(0, 0) is a plain rolling reload, whatever the Settings say.
func Canary(n int, bake time.Duration) ReloadOption {
	return func(r *ctl.Request) { r.Canary, r.BakeMS = &n, bake.Milliseconds() }
}

// CanaryInsufficient says what a canary that met too little traffic to be
// judged does: roll back (the default) or continue.
func CanaryInsufficient(rollback bool) ReloadOption {
	return func(r *ctl.Request) {
		r.Insufficient = ctl.InsufficientContinue
		if rollback {
			r.Insufficient = ctl.InsufficientRollback
		}
	}
}

// Force reloads even the release a canary rolled back, unchanged on disk;
// without it such a reload is refused.
func Force() ReloadOption { return func(r *ctl.Request) { r.Force = true } }

// ErrRolledBack is the error, for errors.Is, of a reload whose canary was
// rolled back: every worker runs the release that was serving.
var ErrRolledBack = errors.New("primary: reload: canary rolled back")

// rolledBack wraps err with ErrRolledBack when r says the canary was.
func rolledBack(r ctl.Response, err error) error {
	if err != nil && r.Canary != nil && r.Canary.State == ctl.CanaryRolledBack {
		return errors.Join(ErrRolledBack, err)
	}
	return err
}
