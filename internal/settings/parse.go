package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
)

// Action is what the supervisor command line asks for besides supervising.
type Action int

// Actions.
const (
	ActionRun          Action = iota // supervise
	ActionVersion                    // -version: print the version and exit
	ActionCheckUpgrade               // -check-upgrade: can this binary take over a supervisor started with the other flags?
)

// Parse parses the supervisor's arguments (without the program name):
// supervisor [flags] [-- COMMAND [ARGS...]]. Errors are *UsageError with
// one line naming the flag; -h gives flag.ErrHelp.
func Parse(args []string) (Settings, error) {
	st, _, err := parse(args, forSupervisor)
	return st, err
}

// ParseCommandLine is Parse for the supervisor command, which also takes
// -version and -check-upgrade.
func ParseCommandLine(args []string) (Settings, Action, error) {
	return parse(args, forCommand)
}

// ParseFlags parses the supervisor's flags for a program that is its own
// primary: it takes no COMMAND, and Command stays nil (this program).
func ParseFlags(args []string) (Settings, error) {
	st, _, err := parse(args, forProgram)
	return st, err
}

// whose is who a command line is parsed for.
type whose int

const (
	forSupervisor whose = iota // supervisor [flags] [-- COMMAND]
	forCommand                 // the same, with -version and -check-upgrade
	forProgram                 // a program's own flags: no COMMAND
)

func parse(args []string, who whose) (Settings, Action, error) {
	c := Settings{}
	act := ActionRun
	fs := flag.NewFlagSet("supervisor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", DefaultListen, "`HOST:PORT` to listen on")
	fs.IntVar(&c.Workers, "workers", runtime.NumCPU(), "number of worker processes, 1..1024")
	fs.StringVar(&c.Mode, "mode", ipc.ModeRR, "scheduling mode: rr, shared or reuseport")
	fs.StringVar(&c.Balance, "balance", balancer.Policies[0], "rr mode: round-robin or least-conn")
	fs.DurationVar(&c.Grace, "grace", DefaultGrace, "how long workers may drain on stop before SIGKILL")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", DefaultReadyTimeout, "how long a new worker may take to become ready")
	fs.StringVar(&c.LogFormat, "log-format", "console", "console or json")
	fs.IntVar(&c.QueueMax, "queue-max", DefaultQueueMax, "connections held while no worker is ready")
	fs.DurationVar(&c.QueueTimeout, "queue-timeout", DefaultQueueTimeout, "how long a held connection may wait")
	fs.BoolVar(&c.Rebalance, "rebalance", true, "rr: move idle keep-alive connections from busy workers to new ones")
	fs.BoolVar(&c.Handback, "handback", true, "rr: a draining Go worker hands idle keep-alive connections back to move, instead of closing them")
	fs.IntVar(&c.MaxCrashes, "max-crashes", DefaultMaxCrashes, "crashes of one slot within -crash-window before giving up")
	fs.DurationVar(&c.CrashWindow, "crash-window", DefaultCrashWindow, "window for -max-crashes")
	fs.DurationVar(&c.HangTimeout, "hang-timeout", DefaultHangTimeout, "a ready worker without a heartbeat this long is hung (at least 2s)")
	fs.IntVar(&c.MaxRequests, "max-requests", 0, "recycle a worker after this many requests (0: never)")
	fs.IntVar(&c.MaxRequestsJitter, "max-requests-jitter", 0, "add a random 0..J to -max-requests per worker (J <= -max-requests)")
	maxRSS := fs.String("max-rss", "", "recycle a worker whose RSS exceeds SIZE, e.g. 512MiB (empty: never)")
	fs.StringVar(&c.Control, "control", "", "control socket `PATH` (default: per listening address; \"none\" to disable)")
	fs.StringVar(&c.Metrics, "metrics", "", "serve Prometheus metrics on `HOST:PORT` (default: off)")
	fs.StringVar(&c.Admin, "admin", "", "serve the dashboard, its API and /metrics on `HOST:PORT` (default: off)")
	fs.BoolVar(&c.AdminActions, "admin-actions", false, "let the dashboard reload and scale (POST /api/reload, /api/scale)")
	fs.StringVar(&c.AdminAuth, "admin-auth", "", "require the bearer token or bcrypt users in `FILE` (mode 0600) on the admin listener; without it -admin must be a loopback address")
	fs.StringVar(&c.AdminTLSCert, "admin-tls-cert", "", "serve the admin listener over TLS with this PEM certificate `FILE` (re-read on SIGHUP)")
	fs.StringVar(&c.AdminTLSKey, "admin-tls-key", "", "the PEM key `FILE` for -admin-tls-cert")
	fs.StringVar(&c.User, "user", "", "run workers as this user (the supervisor must be root)")
	fs.StringVar(&c.Group, "group", "", "run workers with this group (default: the user's)")
	fs.StringVar(&c.WorkerOutput, "worker-output", "inherit", "inherit or capture (re-log worker lines with slot and pid)")
	fs.StringVar(&c.Sched, "sched", "batch", "workers' scheduling policy: batch (SCHED_BATCH) or normal")
	fs.StringVar(&c.WorkerProtocol, "worker-protocol", ProtocolPrefork, "how workers are spoken to: prefork, node, systemd or plain (default node for a `node …` or .js command)")
	var version, check bool
	if who == forCommand {
		fs.BoolVar(&version, "version", false, "print the version and exit")
		fs.BoolVar(&check, "check-upgrade", false, "internal: check that this binary can take over from a running supervisor")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, act, err
		}
		return c, act, &UsageError{Msg: err.Error()}
	}
	switch {
	case version:
		act = ActionVersion
	case check:
		act = ActionCheckUpgrade
	}
	if *maxRSS != "" {
		n, err := ParseSize(*maxRSS)
		if err != nil {
			return c, act, usagef("invalid value %q for flag -max-rss: %v", *maxRSS, err)
		}
		c.MaxRSS = n
	}
	switch {
	case who == forProgram && fs.NArg() > 0:
		return c, act, usagef("unexpected argument %q: this program takes flags only", fs.Arg(0))
	case who == forProgram:
	case fs.NArg() > 0:
		c.Command = fs.Args()
	default:
		c.Command = []string{defaultWorker()}
	}
	if !flagSet(fs, "worker-protocol") && isNodeCommand(c.Command) {
		c.WorkerProtocol = ProtocolNode
	}
	if !flagSet(fs, "mode") && c.WorkerProtocol != ProtocolPrefork {
		// rr needs a worker that takes handed connections: the default
		// for the others is the mode they can use, as `node app.js` with
		// no flag should just run. A node worker takes them too (-mode
		// rr), but shared, where the supervisor does nothing per
		// connection, stays its default.
		c.Mode = ipc.ModeShared
	}
	if err := c.validate(asFlags); err != nil {
		return c, act, err
	}
	return c, act, nil
}

// defaultWorker is the worker binary beside the supervisor's executable.
func defaultWorker() string {
	exe, err := os.Executable()
	if err != nil {
		return "worker"
	}
	return filepath.Join(filepath.Dir(exe), "worker")
}

// isNodeCommand reports whether command runs Node.js: the node binary, or
// a JavaScript file run by its shebang.
func isNodeCommand(command []string) bool {
	if len(command) == 0 {
		return false
	}
	base := filepath.Base(command[0])
	switch {
	case base == "node" || base == "nodejs":
		return true
	case strings.HasSuffix(base, ".js"), strings.HasSuffix(base, ".mjs"), strings.HasSuffix(base, ".cjs"):
		return true
	}
	return false
}

// ParseSize parses a byte size: a number with an optional unit B, KB, MB,
// GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
func ParseSize(s string) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	num, mult := strings.TrimSpace(s), uint64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || n == 0 {
		return 0, errors.New("want a positive size such as 512MiB")
	}
	if err != nil || n > math.MaxUint64/mult {
		return 0, fmt.Errorf("size too large: at most %d bytes", uint64(math.MaxUint64))
	}
	return n * mult, nil
}

// flagSet reports whether the command line set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
