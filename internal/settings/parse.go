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
	"github.com/prefork/prefork/internal/sticky"
)

// Action is what the supervisor command line asks for besides supervising.
type Action int

// Actions.
const (
	ActionRun          Action = iota // supervise
	ActionVersion                    // -version: print the version and exit
	ActionCheckUpgrade               // -check-upgrade: can this binary take over a supervisor started with the other flags?
	ActionPrintConfig                // -print-config: print the effective settings as a -config file
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
	var c Settings
	cl := newCommandLine(&c, who)
	if err := cl.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, ActionRun, err
		}
		return c, ActionRun, &UsageError{Msg: err.Error()}
	}
	given := setFlags(cl.fs)
	var file *fileSettings
	if path := cl.config; path != "" {
		// The file first, on fresh flags, then the command line again:
		// a flag given there overrides the file's key, even a repeatable
		// one, which would otherwise add to the file's values.
		c = Settings{}
		cl = newCommandLine(&c, who)
		var err error
		if file, err = loadFile(cl.fs, path, given); err != nil {
			return c, ActionRun, err
		}
		if err := cl.fs.Parse(args); err != nil {
			return c, ActionRun, &UsageError{Msg: err.Error()}
		}
		for key := range file.lines {
			given[key] = true
		}
		c.from = &origin{file: path, args: args, who: who}
	}
	if len(c.Listen) == 0 {
		c.Listen = Listeners{DefaultListen}
	}
	act := ActionRun
	switch {
	case cl.version:
		act = ActionVersion
	case cl.check:
		act = ActionCheckUpgrade
	case cl.print:
		act = ActionPrintConfig
	}
	switch {
	case who == forProgram && cl.fs.NArg() > 0:
		return c, act, usagef("unexpected argument %q: this program takes flags only", cl.fs.Arg(0))
	case who == forProgram:
	case cl.fs.NArg() > 0:
		c.Command = cl.fs.Args()
	case file != nil && file.command != nil:
		c.Command = file.command
	default:
		c.Command = []string{defaultWorker()}
	}
	if !given["worker-protocol"] && isNodeCommand(c.Command) {
		c.WorkerProtocol = ProtocolNode
	}
	if c.Sticky == sticky.SocketIO && !given["sticky-wait"] {
		// A socket.io session's request that goes by the balance meets
		// "Session ID unknown": wait as long as a loaded client may take
		// to write it, as @socket.io/sticky's primary waits, unbounded.
		c.StickyWait = sticky.SocketIOWait
	}
	if !given["mode"] && c.WorkerProtocol != ProtocolPrefork && c.Sticky == "" {
		// rr needs a worker that takes handed connections: the default
		// for the others is the mode they can use, as `node app.js` with
		// no flag should just run. A node worker takes them too (-mode
		// rr), but shared, where the supervisor does nothing per
		// connection, stays its default, unless -sticky asks for rr.
		c.Mode = ipc.ModeShared
	}
	if err := c.validate(asFlags); err != nil {
		return c, act, file.locate(err)
	}
	return c, act, nil
}

// commandLine is the supervisor's flag set over one Settings, and the
// flags that are not settings.
type commandLine struct {
	fs                    *flag.FlagSet
	config                string // -config FILE
	version, check, print bool   // -version, -check-upgrade, -print-config
}

// newCommandLine defines the flags over c: one per setting, each with its
// default, and -config; -version, -check-upgrade and -print-config for
// the supervisor command.
func newCommandLine(c *Settings, who whose) *commandLine {
	cl := &commandLine{fs: flag.NewFlagSet("supervisor", flag.ContinueOnError)}
	fs := cl.fs
	fs.SetOutput(io.Discard)
	defineSettings(fs, c)
	fs.StringVar(&cl.config, "config", "", "read settings from this TOML `FILE`; flags override it")
	if who == forCommand {
		fs.BoolVar(&cl.version, "version", false, "print the version and exit")
		fs.BoolVar(&cl.check, "check-upgrade", false, "internal: check that this binary can take over from a running supervisor")
		fs.BoolVar(&cl.print, "print-config", false, "print the effective settings as a -config file and exit")
	}
	return cl
}

// notSettings are the flags that are no setting, and so no key of a
// configuration file.
var notSettings = map[string]bool{"config": true, "version": true, "check-upgrade": true, "print-config": true}

// defineSettings defines one flag per setting over c, with its default.
func defineSettings(fs *flag.FlagSet, c *Settings) {
	fs.Var(&c.Listen, "listen", "listen on `[NAME=]ADDRESS`: HOST:PORT, :PORT, [v6]:PORT, unix:/path or fd:N; repeat for several (default \":3000\")")
	fs.Var(fileMode{&c.ListenMode}, "listen-mode", "permission bits of a Unix listener's socket file, in `OCTAL` (default: the umask's)")
	fs.StringVar(&c.ListenOwner, "listen-owner", "", "owner (`USER` or uid) of a Unix listener's socket file")
	fs.StringVar(&c.ListenGroup, "listen-group", "", "group (`GROUP` or gid) of a Unix listener's socket file")
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
	fs.Var((*size)(&c.MaxRSS), "max-rss", "recycle a worker whose RSS exceeds SIZE, e.g. 512MiB (empty: never)")
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
	fs.BoolVar(&c.DeferAccept, "defer-accept", false, "TCP listeners: a connection is accepted only once its client has sent data (TCP_DEFER_ACCEPT, as fasthttp's prefork sets); for protocols whose client speaks first, such as HTTP")
	fs.StringVar(&c.WorkerProtocol, "worker-protocol", ProtocolPrefork, "how workers are spoken to: prefork, node, systemd or plain (default node for a `node …` or .js command)")
	fs.BoolVar(&c.StrictListen, "strict-listen", false, "node: a worker that listens on an address no -listen serves fails to start (default: a warning, and the supervisor binds it)")
	stickyFlags(fs, &c.Stickiness)
	canaryFlags(fs, c) // canary.go
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

// setFlags is the flags the command line set.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// size is -max-rss: a byte size, 0 (never) for empty.
type size uint64

func (s *size) Set(v string) error {
	if v == "" {
		*s = 0
		return nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

// String is the size in the largest binary unit it is a whole number of,
// as ParseSize reads it back.
func (s *size) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	n := uint64(*s)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}
