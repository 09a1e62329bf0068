package supervisor

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	_ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
	"github.com/prefork/prefork/internal/listener"
)

// Config is everything the supervisor is told on its command line.
type Config struct {
	Listen       string
	Workers      int
	Mode         string
	Balance      string
	Grace        time.Duration
	ReadyTimeout time.Duration
	LogFormat    string

	// Pending queue for connections that arrive while no worker is ready.
	QueueMax     int
	QueueTimeout time.Duration

	// Crash budget: more than MaxCrashes unrequested exits of one slot
	// within CrashWindow stops the supervisor.
	MaxCrashes  int
	CrashWindow time.Duration

	// Operations.
	HangTimeout       time.Duration // a ready worker silent this long is hung
	MaxRequests       int           // recycle a worker after this many requests; 0: never
	MaxRequestsJitter int           // plus a random 0..J per worker, so they do not recycle together
	MaxRSS            uint64        // recycle a worker above this resident size; 0: never
	Control           string        // control socket path; "" for the default, "none" for none
	Metrics           string        // HOST:PORT for Prometheus metrics; "" for none
	Admin             string        // HOST:PORT for the dashboard and its API; "" for none
	AdminActions      bool          // the dashboard may reload and scale
	AdminAuth         string        // file with the admin listener's token or bcrypt users; "" for none (loopback only)
	AdminTLSCert      string        // PEM certificate for the admin listener; "" for plain HTTP
	AdminTLSKey       string        // its PEM key
	User, Group       string        // run workers as this user and group
	WorkerOutput      string        // "inherit" or "capture"
	Sched             string        // workers' CPU scheduling policy: "batch" or "normal"
	WorkerProtocol    string        // how workers are spoken to: ProtocolPrefork, ProtocolNode, ProtocolSystemd or ProtocolPlain

	// Command is the worker program and its arguments.
	Command []string
}

// Action is what the supervisor command line asks for besides supervising.
type Action int

// Actions.
const (
	ActionRun          Action = iota // supervise
	ActionVersion                    // -version: print Version and exit
	ActionCheckUpgrade               // -check-upgrade: can this binary take over a supervisor started with the other flags? (upgrade.go)
)

// UsageError is a bad command line: exit status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// Defaults, documented in the README.
const (
	DefaultListen       = ":3000"
	DefaultGrace        = 30 * time.Second
	DefaultReadyTimeout = 30 * time.Second
	DefaultQueueMax     = 4096
	DefaultQueueTimeout = 10 * time.Second
	DefaultMaxCrashes   = 10
	DefaultCrashWindow  = time.Minute
	DefaultHangTimeout  = 30 * time.Second
	MaxWorkers          = 1024

	// MinHangTimeout is two worker heartbeats (cluster.HeartbeatInterval
	// is 1s): with less, a healthy worker is silent that long between two
	// beats and is killed as hung. A constant, not an import of cluster,
	// which is the worker's side and may one day import this package.
	MinHangTimeout = 2 * time.Second
)

// ParseFlags parses the supervisor's arguments (without the program name):
// supervisor [flags] [-- COMMAND [ARGS...]]. Errors are *UsageError with one
// line naming the flag.
func ParseFlags(args []string) (Config, error) {
	c, _, err := parse(args, false)
	return c, err
}

// ParseCommandLine is ParseFlags for the supervisor command, which also
// takes -version and -check-upgrade.
func ParseCommandLine(args []string) (Config, Action, error) {
	return parse(args, true)
}

func parse(args []string, command bool) (Config, Action, error) {
	c := Config{}
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
	if command {
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
	c.Command = fs.Args()
	if len(c.Command) == 0 {
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
	if err := c.validate(); err != nil {
		return c, act, err
	}
	return c, act, nil
}

func (c *Config) validate() error {
	if err := listener.ParseAddr(c.Listen); err != nil {
		return usagef("invalid value %q for flag -listen: want HOST:PORT with a port from 0 to 65535", c.Listen)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		return usagef("invalid value %d for flag -workers: must be from 1 to %d", c.Workers, MaxWorkers)
	}
	switch c.Mode {
	case ipc.ModeRR, ipc.ModeShared, ipc.ModeReusePort:
	default:
		return usagef("invalid value %q for flag -mode: must be rr, shared or reuseport", c.Mode)
	}
	if !slices.Contains(balancer.Policies, c.Balance) {
		return usagef("invalid value %q for flag -balance: must be %s", c.Balance, strings.Join(balancer.Policies, " or "))
	}
	switch c.LogFormat {
	case "console", "json":
	default:
		return usagef("invalid value %q for flag -log-format: must be console or json", c.LogFormat)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"grace", c.Grace}, {"ready-timeout", c.ReadyTimeout}, {"queue-timeout", c.QueueTimeout}, {"crash-window", c.CrashWindow}, {"hang-timeout", c.HangTimeout}} {
		if d.v <= 0 {
			return usagef("invalid value %s for flag -%s: must be positive", d.v, d.name)
		}
	}
	if c.HangTimeout < MinHangTimeout {
		return usagef("invalid value %s for flag -hang-timeout: must be at least %s, two worker heartbeats", c.HangTimeout, MinHangTimeout)
	}
	if c.QueueMax < 0 {
		return usagef("invalid value %d for flag -queue-max: must not be negative", c.QueueMax)
	}
	if c.MaxRequests < 0 {
		return usagef("invalid value %d for flag -max-requests: must not be negative", c.MaxRequests)
	}
	// Each worker's limit is MaxRequests + rand.IntN(MaxRequestsJitter+1):
	// both the +1 and the sum must stay within an int.
	switch j := c.MaxRequestsJitter; {
	case j < 0:
		return usagef("invalid value %d for flag -max-requests-jitter: must not be negative", j)
	case j > 0 && c.MaxRequests == 0:
		return usagef("flag -max-requests-jitter needs -max-requests")
	case j > c.MaxRequests:
		return usagef("invalid value %d for flag -max-requests-jitter: must be at most -max-requests (%d)", j, c.MaxRequests)
	case c.MaxRequests > math.MaxInt-j:
		return usagef("invalid value %d for flag -max-requests-jitter: -max-requests plus jitter must be at most %d", j, math.MaxInt)
	}
	switch c.WorkerOutput {
	case "inherit", "capture":
	default:
		return usagef("invalid value %q for flag -worker-output: must be inherit or capture", c.WorkerOutput)
	}
	switch c.Sched {
	case "batch", "normal":
	default:
		return usagef("invalid value %q for flag -sched: must be batch or normal", c.Sched)
	}
	if c.Metrics != "" {
		if err := listener.ParseAddr(c.Metrics); err != nil {
			return usagef("invalid value %q for flag -metrics: want HOST:PORT", c.Metrics)
		}
	}
	if c.Admin != "" {
		if err := listener.ParseAddr(c.Admin); err != nil {
			return usagef("invalid value %q for flag -admin: want HOST:PORT", c.Admin)
		}
	}
	if c.AdminActions && c.Admin == "" {
		return usagef("flag -admin-actions needs -admin")
	}
	if err := c.validateAdmin(); err != nil {
		return err
	}
	if c.Group != "" && c.User == "" {
		return usagef("flag -group needs -user")
	}
	if c.MaxCrashes < 1 {
		return usagef("invalid value %d for flag -max-crashes: must be at least 1", c.MaxCrashes)
	}
	return c.validateProtocol()
}

// validateProtocol checks -worker-protocol and what it rules out: a worker
// without prefork's control channel or Node's IPC channel cannot be handed
// connections (rr), and one without prefork's reports no request counts
// or RSS (-max-requests, -max-rss).
func (c *Config) validateProtocol() error {
	switch c.WorkerProtocol {
	case "", ProtocolPrefork: // "": a Config not made by ParseFlags
		return nil
	case ProtocolSystemd, ProtocolPlain, ProtocolNode:
	default:
		return usagef("invalid value %q for flag -worker-protocol: must be prefork, node, systemd or plain", c.WorkerProtocol)
	}
	switch {
	case c.Mode == ipc.ModeRR && c.WorkerProtocol != ProtocolNode: // Node's IPC channel takes connections
		return usagef("flag -mode rr cannot be used with -worker-protocol %s: rr hands each connection to a worker over prefork's control channel, which a %s worker has not; use -mode shared or reuseport", c.WorkerProtocol, c.WorkerProtocol)
	case c.MaxRequests > 0:
		return usagef("flag -max-requests needs -worker-protocol prefork: a %s worker reports no request count", c.WorkerProtocol)
	case c.MaxRSS > 0:
		return usagef("flag -max-rss needs -worker-protocol prefork: a %s worker reports no heartbeat with its RSS", c.WorkerProtocol)
	}
	return nil
}

// defaultWorker is the worker binary beside the supervisor's executable.
func defaultWorker() string {
	exe, err := os.Executable()
	if err != nil {
		return "worker"
	}
	return filepath.Join(filepath.Dir(exe), "worker")
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
