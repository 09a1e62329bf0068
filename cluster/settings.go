package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/settings"
)

// Settings is how a primary runs its workers: Node's cluster.settings,
// with every option of the supervisor's command line. Each field is the
// flag of the same name in kebab case (MaxRequests is -max-requests); the
// README's table gives their meaning. Command nil (the default) is this
// program, re-executed with its own arguments. Start from
// [DefaultSettings]: the zero Settings is not valid (it has no workers).
type Settings = settings.Settings

// Balance policies (Settings.Balance). The modes are ModeRR, ModeShared and
// ModeReusePort.
const (
	BalanceRoundRobin = settings.BalanceRoundRobin // each connection to the next ready worker
	BalanceLeastConn  = settings.BalanceLeastConn  // each connection to the worker with the fewest open
)

// ErrUsage is what a bad setting or flag is, for errors.Is: the command
// line's exit status 2. The error names the flag for ParseSettings, the
// field (Settings.Workers) for StartPrimary.
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

// withCommand is st as the engine takes it: Command filled in.
func withCommand(st Settings) (Settings, error) {
	if st.Command == nil {
		self, err := executable()
		if err != nil {
			return st, err
		}
		st.Command = append([]string{self}, os.Args[1:]...)
	}
	return st, nil
}

// executable is os.Args[0] as an absolute path. Not os.Executable: that
// resolves symbolic links once, now, so a deploy that points a link such
// as /usr/local/bin/app at a new release would reload into the old one; a
// reload must start whatever the program's path names then.
func executable() (string, error) {
	if len(os.Args) == 0 || os.Args[0] == "" {
		return "", errors.New("cluster: no os.Args[0] to re-execute")
	}
	path := os.Args[0]
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("cluster: find this program to re-execute: %w", err)
		}
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("cluster: find this program to re-execute: %w", err)
	}
	return abs, nil
}

// Option changes Settings: the options of [ListenAndServe] and
// [StartPrimary].
type Option func(*Settings)

// WithSettings replaces every setting with st (apply it first).
func WithSettings(st Settings) Option { return func(s *Settings) { *s = st } }

// WithWorkers sets the number of worker processes (Node's os.availableParallelism() by default).
func WithWorkers(n int) Option { return func(s *Settings) { s.Workers = n } }

// WithMode sets the scheduling mode: ModeRR, ModeShared or ModeReusePort
// (Node's cluster.schedulingPolicy).
func WithMode(mode string) Option { return func(s *Settings) { s.Mode = mode } }

// WithBalance sets rr mode's policy: BalanceRoundRobin or BalanceLeastConn.
func WithBalance(policy string) Option { return func(s *Settings) { s.Balance = policy } }

// WithGrace sets how long a draining worker may take before it is killed.
func WithGrace(d time.Duration) Option { return func(s *Settings) { s.Grace = d } }
