package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/supervisor"
)

// Settings is how a primary runs its workers: Node's cluster.settings,
// with every option of the supervisor's command line. Each field is the
// flag of the same name in kebab case (MaxRequests is -max-requests); the
// README's table gives their meaning. Start from [DefaultSettings]: the
// zero Settings is not valid (it has no workers).
type Settings struct {
	Listen       string        // HOST:PORT to listen on (default ":3000")
	Workers      int           // worker processes, 1..1024 (default: the number of CPUs)
	Mode         string        // scheduling mode: ModeRR (default), ModeShared or ModeReusePort
	Balance      string        // rr mode: BalanceRoundRobin (default) or BalanceLeastConn
	Grace        time.Duration // how long a draining worker may take before SIGKILL (30s)
	ReadyTimeout time.Duration // how long a new worker may take to become ready (30s)
	LogFormat    string        // the primary's log: "console" (default) or "json", on stderr

	QueueMax     int           // connections held while no worker is ready (4096)
	QueueTimeout time.Duration // how long a held connection may wait (10s)

	MaxCrashes  int           // crashes of one slot within CrashWindow before the primary gives up (10)
	CrashWindow time.Duration // (1m)

	HangTimeout       time.Duration // a ready worker without a heartbeat this long is hung (30s, at least 2s)
	MaxRequests       int           // recycle a worker after this many requests; 0: never
	MaxRequestsJitter int           // plus a random 0..J per worker
	MaxRSS            uint64        // recycle a worker above this resident size in bytes; 0: never
	Control           string        // control socket path; "" for the default, "none" for none
	Metrics           string        // HOST:PORT for Prometheus metrics; "" for none
	Admin             string        // HOST:PORT for the dashboard, its API and /metrics; "" for none
	AdminActions      bool          // the dashboard may reload and scale (POST, with cross-site checks)
	AdminAuth         string        // file with the admin listener's bearer token or bcrypt users (mode 0600); "" for none: Admin must then be a loopback address
	AdminTLSCert      string        // PEM certificate file for the admin listener (re-read on SIGHUP); "" for plain HTTP
	AdminTLSKey       string        // its PEM key file
	User, Group       string        // run workers as this user and group (the primary must be root)
	WorkerOutput      string        // workers' stdout and stderr: "inherit" (default) or "capture"
	Sched             string        // workers' CPU policy: "batch" (default, SCHED_BATCH) or "normal"
	WorkerProtocol    string        // "prefork" (default), "node", "systemd" or "plain"

	// Command is the worker program and its arguments: Node's
	// settings.exec and settings.args. Nil (the default) is this program,
	// re-executed with its own arguments, as os.Args[0] resolved to an
	// absolute path when the primary starts. A reload starts that path
	// again, so a new binary moved into its place is what the reloaded
	// workers run.
	Command []string
}

// Balance policies (Settings.Balance). The modes are ModeRR, ModeShared and
// ModeReusePort.
const (
	BalanceRoundRobin = "round-robin" // each connection to the next ready worker
	BalanceLeastConn  = "least-conn"  // each connection to the worker with the fewest open
)

// ErrUsage is what a bad setting or flag is, for errors.Is: the command
// line's exit status 2.
var ErrUsage = supervisor.ErrUsage

// DefaultSettings returns the supervisor command line's defaults, with
// this program as the worker command.
func DefaultSettings() Settings {
	st, err := ParseSettings(nil)
	if err != nil { // the defaults are valid
		panic(err)
	}
	return st
}

// selfCommand stands for "this program" while ParseSettings parses.
const selfCommand = "\x00self"

// ParseSettings parses the supervisor's flags (see `supervisor -h`) into
// Settings, so that a program that is its own primary takes the same
// command line: -listen, -workers, -mode, -grace and the rest. Command is
// left nil: this program. Errors match errors.Is(err, ErrUsage) and name
// the flag; -h gives flag.ErrHelp.
func ParseSettings(args []string) (Settings, error) {
	cfg, err := supervisor.ParseFlags(append(slices.Clip(args), "--", selfCommand))
	if err != nil {
		return Settings{}, err
	}
	if len(cfg.Command) != 1 || cfg.Command[0] != selfCommand {
		return Settings{}, &supervisor.UsageError{Msg: fmt.Sprintf("unexpected argument %q: this program takes flags only", cfg.Command[0])}
	}
	cfg.Command = nil
	return Settings(cfg), nil
}

// Usage is the supervisor's flag summary, for -h.
func Usage() string { return supervisor.Usage }

// config is st as the engine takes it: Command filled in.
func (st Settings) config() (supervisor.Config, error) {
	cfg := supervisor.Config(st)
	if cfg.Command == nil {
		self, err := executable()
		if err != nil {
			return cfg, err
		}
		cfg.Command = append([]string{self}, os.Args[1:]...)
	}
	return cfg, nil
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
