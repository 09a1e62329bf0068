package settings

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prefork/prefork/internal/balancer"
	"github.com/prefork/prefork/internal/ipc"
	"github.com/prefork/prefork/internal/listener"
)

// ErrUsage is what a *UsageError is, for errors.Is: a bad setting or flag,
// exit status 2 on the command line.
var ErrUsage = errors.New("settings: usage")

// UsageError is a bad setting or command line: exit status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrUsage) true for a *UsageError.
func (e *UsageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// Validate checks st as a Go program gave it: the error is a *UsageError
// that names the field, such as Settings.Workers. Command is not checked:
// nil is valid for a program that is its own primary.
func (st Settings) Validate() error { return st.validate(asFields) }

// naming is how an error names a setting: as the command line's flag, or
// as the field of Settings a Go caller set.
type naming bool

const (
	asFlags  naming = true
	asFields naming = false
)

// the names the setting that field holds, as the subject of a message:
// "flag -max-requests" or "Settings.MaxRequests".
func (n naming) the(field string) string {
	if n == asFlags {
		return "flag " + n.ref(field)
	}
	return n.ref(field)
}

// leastWorkers is the fewest workers a primary may start with: none for a
// Go program, which may Fork them.
func (n naming) leastWorkers() int {
	if n == asFlags {
		return 1
	}
	return 0
}

// ref names it again, inside a message: "-max-requests" or
// "Settings.MaxRequests".
func (n naming) ref(field string) string {
	if n == asFlags {
		return "-" + kebab(field)
	}
	return "Settings." + field
}

// kebab is a field's flag name: MaxRequestsJitter is max-requests-jitter,
// MaxRSS is max-rss.
func kebab(field string) string {
	var b strings.Builder
	r := []rune(field)
	for i, c := range r {
		upper := c >= 'A' && c <= 'Z'
		if upper && i > 0 {
			prevLower := r[i-1] >= 'a' && r[i-1] <= 'z'
			nextLower := i+1 < len(r) && r[i+1] >= 'a' && r[i+1] <= 'z'
			if prevLower || nextLower && r[i-1] >= 'A' && r[i-1] <= 'Z' {
				b.WriteByte('-')
			}
		}
		if upper {
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (c *Settings) validate(n naming) error {
	if err := c.validateListen(n); err != nil {
		return err
	}
	// A program may start with none and Fork them, as Node's does; a
	// command line has nobody to fork.
	if least := n.leastWorkers(); c.Workers < least || c.Workers > MaxWorkers {
		return usagef("invalid value %d for %s: must be from %d to %d", c.Workers, n.the("Workers"), least, MaxWorkers)
	}
	switch c.Respawn {
	case "", RespawnAuto, RespawnManual:
	default:
		return usagef("invalid value %q for %s: must be %s or %s", c.Respawn, n.the("Respawn"), RespawnAuto, RespawnManual)
	}
	switch c.Mode {
	case ipc.ModeRR, ipc.ModeShared, ipc.ModeReusePort:
	default:
		return usagef("invalid value %q for %s: must be rr, shared or reuseport", c.Mode, n.the("Mode"))
	}
	if err := c.validateSticky(n); err != nil {
		return err
	}
	if !slices.Contains(balancer.Policies, c.Balance) {
		return usagef("invalid value %q for %s: must be %s", c.Balance, n.the("Balance"), strings.Join(balancer.Policies, " or "))
	}
	switch c.LogFormat {
	case "console", "json":
	default:
		return usagef("invalid value %q for %s: must be console or json", c.LogFormat, n.the("LogFormat"))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"Grace", c.Grace}, {"ReadyTimeout", c.ReadyTimeout}, {"QueueTimeout", c.QueueTimeout}, {"CrashWindow", c.CrashWindow}, {"HangTimeout", c.HangTimeout}} {
		if d.v <= 0 {
			return usagef("invalid value %s for %s: must be positive", d.v, n.the(d.field))
		}
	}
	if c.HangTimeout < MinHangTimeout {
		return usagef("invalid value %s for %s: must be at least %s, two worker heartbeats", c.HangTimeout, n.the("HangTimeout"), MinHangTimeout)
	}
	if c.QueueMax < 0 {
		return usagef("invalid value %d for %s: must not be negative", c.QueueMax, n.the("QueueMax"))
	}
	if c.MaxRequests < 0 {
		return usagef("invalid value %d for %s: must not be negative", c.MaxRequests, n.the("MaxRequests"))
	}
	// Each worker's limit is MaxRequests + rand.IntN(MaxRequestsJitter+1):
	// both the +1 and the sum must stay within an int.
	switch j := c.MaxRequestsJitter; {
	case j < 0:
		return usagef("invalid value %d for %s: must not be negative", j, n.the("MaxRequestsJitter"))
	case j > 0 && c.MaxRequests == 0:
		return usagef("%s needs %s", n.the("MaxRequestsJitter"), n.ref("MaxRequests"))
	case j > c.MaxRequests:
		return usagef("invalid value %d for %s: must be at most %s (%d)", j, n.the("MaxRequestsJitter"), n.ref("MaxRequests"), c.MaxRequests)
	case c.MaxRequests > math.MaxInt-j:
		return usagef("invalid value %d for %s: %s plus jitter must be at most %d", j, n.the("MaxRequestsJitter"), n.ref("MaxRequests"), math.MaxInt)
	}
	switch c.WorkerOutput {
	case "inherit", "capture":
	default:
		return usagef("invalid value %q for %s: must be inherit or capture", c.WorkerOutput, n.the("WorkerOutput"))
	}
	switch c.Sched {
	case "batch", "normal":
	default:
		return usagef("invalid value %q for %s: must be batch or normal", c.Sched, n.the("Sched"))
	}
	if c.Metrics != "" {
		if err := listener.ParseAddr(c.Metrics); err != nil {
			return usagef("invalid value %q for %s: want HOST:PORT", c.Metrics, n.the("Metrics"))
		}
	}
	if c.Admin != "" {
		if err := listener.ParseAddr(c.Admin); err != nil {
			return usagef("invalid value %q for %s: want HOST:PORT", c.Admin, n.the("Admin"))
		}
	}
	if c.AdminActions && c.Admin == "" {
		return usagef("%s needs %s", n.the("AdminActions"), n.ref("Admin"))
	}
	if err := c.validateAdmin(n); err != nil {
		return err
	}
	if err := c.validateCanary(n); err != nil {
		return err
	}
	if c.Group != "" && c.User == "" {
		return usagef("%s needs %s", n.the("Group"), n.ref("User"))
	}
	if c.MaxCrashes < 1 {
		return usagef("invalid value %d for %s: must be at least 1", c.MaxCrashes, n.the("MaxCrashes"))
	}
	return c.validateProtocol(n)
}

// validateProtocol checks WorkerProtocol and what it rules out: a worker
// without prefork's control channel or Node's IPC channel cannot be handed
// connections (rr), and one without prefork's reports no request counts
// or RSS (MaxRequests, MaxRSS).
func (c *Settings) validateProtocol(n naming) error {
	switch c.WorkerProtocol {
	case "", ProtocolPrefork: // "": Settings not made by Parse
		return nil
	case ProtocolSystemd, ProtocolPlain, ProtocolNode:
	default:
		return usagef("invalid value %q for %s: must be prefork, node, systemd or plain", c.WorkerProtocol, n.the("WorkerProtocol"))
	}
	p := c.WorkerProtocol
	switch {
	case c.Mode == ipc.ModeRR && p != ProtocolNode: // Node's IPC channel takes connections
		return usagef("%s rr cannot be used with %s %s: rr hands each connection to a worker over prefork's control channel, which a %s worker has not; use %s shared or reuseport", n.the("Mode"), n.ref("WorkerProtocol"), p, p, n.ref("Mode"))
	case c.MaxRequests > 0:
		return usagef("%s needs %s prefork: a %s worker reports no request count", n.the("MaxRequests"), n.ref("WorkerProtocol"), p)
	case c.MaxRSS > 0:
		return usagef("%s needs %s prefork: a %s worker reports no heartbeat with its RSS", n.the("MaxRSS"), n.ref("WorkerProtocol"), p)
	}
	return nil
}
