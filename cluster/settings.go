package cluster

import (
	"github.com/prefork/prefork/internal/settings"
)

// Settings is how a primary runs its workers: Node's cluster.settings,
// with every option of the supervisor's command line. Each field is the
// flag of the same name in kebab case (MaxRequests is -max-requests); the
// README's table gives their meaning. Command nil (the default) is this
// program, re-executed with its own arguments. Start from
// [DefaultSettings]: the zero Settings is not valid (it has no workers).
type Settings = settings.Settings

// Listeners is Settings.Listen: one [NAME=]ADDRESS per listener, the
// first the one a plain [Listen] serves.
type Listeners = settings.Listeners

// Balance policies (Settings.Balance). The modes are ModeRR, ModeShared and
// ModeReusePort.
const (
	BalanceRoundRobin = settings.BalanceRoundRobin // each connection to the next ready worker
	BalanceLeastConn  = settings.BalanceLeastConn  // each connection to the worker with the fewest open
)

// ErrUsage is what a bad setting or flag is, for errors.Is: the command
// line's exit status 2. The error names the flag for ParseSettings, the
// field (Settings.Workers) for primary.Start.
var ErrUsage = settings.ErrUsage

// DefaultSettings returns the supervisor command line's defaults, with
// this program as the worker command.
func DefaultSettings() Settings {
	st, err := ParseSettings(nil)
	if err != nil { // the defaults are valid
		panic(err)
	}
	return st
}

// ParseSettings parses the supervisor's flags (see `supervisor -h`) into
// Settings, so that a program that is its own primary takes the same
// command line: -listen, -workers, -mode, -grace and the rest. Command is
// left nil: this program. Errors match errors.Is(err, ErrUsage) and name
// the flag; -h gives flag.ErrHelp.
func ParseSettings(args []string) (Settings, error) { return settings.ParseFlags(args) }

// Usage is the supervisor's flag summary, for -h.
func Usage() string { return settings.Usage }

// Respawn policies (Settings.Respawn): who replaces a worker that exits.
const (
	// RespawnAuto, the default: the primary replaces a worker that
	// crashed (with backoff, within the crash budget), was killed or
	// disconnected, at once and in the same slot.
	RespawnAuto = settings.RespawnAuto
	// RespawnManual is Node's: the primary only reports the exit
	// (EventExit), and the program calls Fork if it wants a new worker.
	// There is no crash budget.
	RespawnManual = settings.RespawnManual
)
