package supervisor

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
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

	// Command is the worker program and its arguments.
	Command []string
}

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
	MaxWorkers          = 1024
)

// ParseFlags parses the supervisor's arguments (without the program name):
// supervisor [flags] [-- COMMAND [ARGS...]]. Errors are *UsageError with one
// line naming the flag.
func ParseFlags(args []string) (Config, error) {
	c := Config{}
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &UsageError{Msg: err.Error()}
	}
	if err := c.validate(); err != nil {
		return c, err
	}
	c.Command = fs.Args()
	if len(c.Command) == 0 {
		c.Command = []string{defaultWorker()}
	}
	return c, nil
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
	if _, err := balancer.New[*target](c.Balance); err != nil {
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
	}{{"grace", c.Grace}, {"ready-timeout", c.ReadyTimeout}, {"queue-timeout", c.QueueTimeout}, {"crash-window", c.CrashWindow}} {
		if d.v <= 0 {
			return usagef("invalid value %s for flag -%s: must be positive", d.v, d.name)
		}
	}
	if c.QueueMax < 0 {
		return usagef("invalid value %d for flag -queue-max: must not be negative", c.QueueMax)
	}
	if c.MaxCrashes < 1 {
		return usagef("invalid value %d for flag -max-crashes: must be at least 1", c.MaxCrashes)
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
