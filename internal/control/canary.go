package control

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/prefork/prefork/internal/cli"
)

// Canary states, in CanaryStatus.State.
const (
	CanaryStarting    = "starting"     // the canary slots' new workers are starting
	CanaryBaking      = "baking"       // they serve beside the old generation, judged at the end
	CanaryPassed      = "passed"       // the verdict let the reload go on (or it went on and ended)
	CanaryRollingBack = "rolling back" // the canary slots get workers of the kept release again
	CanaryRolledBack  = "rolled back"  // done: every slot runs the kept release
)

// Canary verdicts, in CanaryStatus.Verdict and the verdict event.
const (
	VerdictPass         = "pass"
	VerdictFail         = "fail"
	VerdictInsufficient = "insufficient" // too little traffic to judge; -canary-insufficient decides
)

// CanaryInsufficient values: what a verdict of too little traffic does.
const (
	InsufficientRollback = "rollback"
	InsufficientContinue = "continue"
)

// CanaryStatus is a canary reload: its slots, the two generations side by
// side over the same window, and the verdict once there is one.
type CanaryStatus struct {
	State         string     `json:"state"`
	Slots         []int      `json:"slots"`
	Generation    int        `json:"generation"`     // the canary's
	OldGeneration int        `json:"old_generation"` // the one serving, kept for rollback
	BakeS         float64    `json:"bake_s"`
	BakedS        float64    `json:"baked_s"` // of the bake so far
	Old           GenFigures `json:"old"`
	New           GenFigures `json:"new"`
	Verdict       string     `json:"verdict,omitempty"`
	Why           string     `json:"why,omitempty"`
	Decided       string     `json:"decided,omitempty"` // RFC 3339, when the verdict came
}

// GenFigures are one generation's figures over the bake window. ErrorRate
// and P99S are -1 when its workers do not report them (node, systemd and
// plain workers: crashes, readiness and hangs only).
type GenFigures struct {
	Workers   int     `json:"workers"`
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`     // 5xx answers and handler panics
	ErrorRate float64 `json:"error_rate"` // errors / requests, 0..1
	P99S      float64 `json:"p99_s"`
	Crashes   int     `json:"crashes"`
	Hangs     int     `json:"hangs"`
}

// validateReload checks a reload's canary options.
func (r Request) validateReload() error {
	switch {
	case r.Canary != nil && *r.Canary < 0:
		return fmt.Errorf("control: reload canary must be >= 0, got %d", *r.Canary)
	case r.BakeMS < 0:
		return fmt.Errorf("control: reload bake must be >= 0, got %dms", r.BakeMS)
	}
	switch r.Insufficient {
	case "", InsufficientRollback, InsufficientContinue:
		return nil
	}
	return fmt.Errorf("control: reload canary_insufficient must be continue or rollback, got %q", r.Insufficient)
}

// Bake is BakeMS as a duration.
func (r Request) Bake() time.Duration { return time.Duration(r.BakeMS) * time.Millisecond }

// writeCanary writes a canary's state and the two generations side by
// side, as ctl status shows them under its header line.
func writeCanary(w io.Writer, c *CanaryStatus) error {
	fmt.Fprintf(w, "canary %s: slots %v, generation %d against %d, baked %s of %s", printable(c.State), c.Slots,
		c.Generation, c.OldGeneration, seconds(c.BakedS), seconds(c.BakeS))
	if c.Verdict != "" {
		fmt.Fprintf(w, ", verdict %s: %s", printable(c.Verdict), printable(c.Why))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  GEN\tWORKERS\tREQUESTS\tERRORS\tERROR%\tP99\tCRASHES\tHANGS")
	for _, g := range []struct {
		name string
		gen  int
		f    GenFigures
	}{{"old", c.OldGeneration, c.Old}, {"canary", c.Generation, c.New}} {
		rate, p99 := "-", "-"
		if g.f.ErrorRate >= 0 {
			rate = strconv.FormatFloat(100*g.f.ErrorRate, 'f', 2, 64)
		}
		if g.f.P99S >= 0 {
			p99 = millis(g.f.P99S)
		}
		fmt.Fprintf(tw, "  %d (%s)\t%d\t%d\t%d\t%s\t%s\t%d\t%d\n", g.gen, g.name, g.f.Workers, g.f.Requests, g.f.Errors, rate, p99, g.f.Crashes, g.f.Hangs)
	}
	return tw.Flush()
}

// reloadFlags checks ctl's reload flags and puts them in c.reload; they
// are an error with any other command.
func (c *ctl) reloadFlags(fs *flag.FlagSet, canary int, bake time.Duration) error {
	for _, name := range []string{"canary", "bake", "canary-insufficient", "force"} {
		if cli.IsSet(fs, name) && c.cmd != CmdReload {
			return fmt.Errorf("flag -%s is for reload only", name)
		}
	}
	switch {
	case canary < 0:
		return fmt.Errorf("invalid value %d for flag -canary: want 0 or more slots", canary)
	case bake < 0 || bake == 0 && cli.IsSet(fs, "bake"):
		return fmt.Errorf("invalid value %q for flag -bake: must be positive", fs.Lookup("bake").Value)
	}
	switch c.reload.Insufficient {
	case "", InsufficientContinue, InsufficientRollback:
	default:
		return fmt.Errorf("invalid value %q for flag -canary-insufficient: want continue or rollback", c.reload.Insufficient)
	}
	if cli.IsSet(fs, "canary") {
		c.reload.Canary = &canary
	}
	c.reload.BakeMS = bake.Milliseconds()
	return nil
}
