package settings

import (
	"flag"
	"time"
)

// Canary defaults, documented in the README.
const (
	DefaultBake               = 30 * time.Second
	DefaultCanaryErrorPP      = 1.0 // percentage points above the old error rate
	DefaultCanaryErrorRatio   = 2.0 // and at least this many times it
	DefaultCanaryLatencyRatio = 1.5
	DefaultCanaryMinRequests  = 100

	InsufficientRollback = "rollback"
	InsufficientContinue = "continue"
)

// canaryFlags registers the flags of a reload's canary: the defaults of
// SIGHUP and of a ctl reload that does not say, and the gates.
func canaryFlags(fs *flag.FlagSet, c *Settings) {
	fs.IntVar(&c.Canary, "canary", 0, "reloads replace N slots first and judge them for -bake before the rest (0: plain rolling reload)")
	fs.DurationVar(&c.Bake, "bake", DefaultBake, "how long a canary serves before its verdict")
	fs.StringVar(&c.CanaryInsufficient, "canary-insufficient", InsufficientRollback, "too little traffic to judge a canary: continue or rollback")
	fs.Float64Var(&c.CanaryErrorPP, "canary-error-pp", DefaultCanaryErrorPP, "fail a canary whose error rate is more than this many percentage points above the old one's")
	fs.Float64Var(&c.CanaryErrorRatio, "canary-error-ratio", DefaultCanaryErrorRatio, "... and at least this many times it")
	fs.Float64Var(&c.CanaryLatencyRatio, "canary-latency-ratio", DefaultCanaryLatencyRatio, "fail a canary whose p99 latency is above this many times the old one's")
	fs.IntVar(&c.CanaryMinRequests, "canary-min-requests", DefaultCanaryMinRequests, "fewer requests to the canary in the bake: not enough traffic")
}

// validateCanary checks the canary settings. Zero gates are the defaults
// (a Go program's Settings that leave them out).
func (c *Settings) validateCanary(n naming) error {
	switch {
	case c.Canary < 0 || c.Canary >= MaxWorkers:
		return usagef("invalid value %d for %s: must be from 0 to %d", c.Canary, n.the("Canary"), MaxWorkers-1)
	case c.Bake < 0:
		return usagef("invalid value %s for %s: must be positive", c.Bake, n.the("Bake"))
	case c.CanaryErrorPP < 0 || c.CanaryErrorPP > 100:
		return usagef("invalid value %g for %s: must be from 0 to 100", c.CanaryErrorPP, n.the("CanaryErrorPP"))
	case c.CanaryErrorRatio < 0 || c.CanaryLatencyRatio < 0 || c.CanaryMinRequests < 0:
		return usagef("invalid canary gate: %s, %s and %s must not be negative", n.the("CanaryErrorRatio"), n.ref("CanaryLatencyRatio"), n.ref("CanaryMinRequests"))
	}
	switch c.CanaryInsufficient {
	case "", InsufficientRollback, InsufficientContinue:
		return nil
	}
	return usagef("invalid value %q for %s: want continue or rollback", c.CanaryInsufficient, n.the("CanaryInsufficient"))
}
