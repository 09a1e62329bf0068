package settings

import (
	"errors"
	"fmt"
)

// origin is where Parse read settings from: a command line with -config.
type origin struct {
	file string   // the -config file
	args []string // the command line, which overrides it
	who  whose
}

// ConfigFile is the -config file st was read from; "" if none.
func (st Settings) ConfigFile() string {
	if st.from == nil {
		return ""
	}
	return st.from.file
}

// ErrNoConfigFile is Reread's error for settings not read from a file.
var ErrNoConfigFile = errors.New("settings: no configuration file")

// Reread reads st's configuration file again, under the same command
// line, which still overrides it: the settings a reload would run.
// Errors name the file, line and key, as at start.
func (st Settings) Reread() (Settings, error) {
	if st.from == nil {
		return st, ErrNoConfigFile
	}
	next, _, err := parse(st.from.args, st.from.who)
	return next, err
}

// What a changed setting needs to take effect (Change.Needs).
const (
	NeedsNothing = ""        // a reload applies it
	NeedsUpgrade = "upgrade" // an in-place upgrade (ctl upgrade) or a restart
	NeedsRestart = "restart" // a restart: what the running sockets or workers are
)

// needs is what a change of each key needs, but for those a reload
// applies: the ones the supervisor reads when it starts a worker or
// checks one (workers it scales to).
var needs = map[string]string{
	"workers": NeedsNothing, "grace": NeedsNothing, "ready-timeout": NeedsNothing,
	"hang-timeout": NeedsNothing, "max-crashes": NeedsNothing, "crash-window": NeedsNothing,
	"max-requests": NeedsNothing, "max-requests-jitter": NeedsNothing, "max-rss": NeedsNothing,
	"rebalance": NeedsNothing, "handback": NeedsNothing, keyCommand: NeedsNothing,
	"canary": NeedsNothing, "bake": NeedsNothing, "canary-insufficient": NeedsNothing,
	"canary-error-pp": NeedsNothing, "canary-error-ratio": NeedsNothing,
	"canary-latency-ratio": NeedsNothing, "canary-min-requests": NeedsNothing,

	// Read once when the supervisor starts; an upgrade starts it anew
	// over the same sockets and workers.
	"balance": NeedsUpgrade, "queue-max": NeedsUpgrade, "queue-timeout": NeedsUpgrade,
	"log-format": NeedsUpgrade, "sched": NeedsUpgrade,
	"admin-actions": NeedsUpgrade, "admin-auth": NeedsUpgrade,
	"admin-tls-cert": NeedsUpgrade, "admin-tls-key": NeedsUpgrade,
	"sticky": NeedsUpgrade, "sticky-wait": NeedsUpgrade, "sticky-hold": NeedsUpgrade,
	"sticky-table": NeedsUpgrade, "sticky-table-age": NeedsUpgrade, "sticky-forget": NeedsUpgrade,
	"proxy-protocol": NeedsUpgrade, "proxy-from": NeedsUpgrade, "proxy-wait": NeedsUpgrade,
	// What node workers' listens are answered with: the same for every
	// worker, from the start.
	"strict-listen": NeedsRestart,
	// Any other key is what the sockets or the running workers are
	// (listen, mode, user, group, worker-protocol, worker-output, and
	// the control, metrics and admin addresses, which an upgrade keeps
	// by address): NeedsRestart.
}

// Change is a setting that differs between two Settings.
type Change struct {
	Key      string // the flag's name, or command
	From, To string // the values, as TOML
	Needs    string // NeedsNothing, NeedsUpgrade or NeedsRestart
}

func (c Change) String() string { return fmt.Sprintf("%s %s -> %s", c.Key, c.From, c.To) }

// Changes is the settings that differ from st in next, in the flags'
// order.
func (st Settings) Changes(next Settings) []Change {
	was := map[string]string{}
	for _, kv := range st.keyValues() {
		was[kv.key] = kv.toml
	}
	var cs []Change
	for _, kv := range next.keyValues() {
		if from := was[kv.key]; from != kv.toml {
			n, ok := needs[kv.key]
			if !ok {
				n = NeedsRestart
			}
			cs = append(cs, Change{Key: kv.key, From: from, To: kv.toml, Needs: n})
		}
	}
	return cs
}

// Reload is st with the settings of next that a reload applies, and every
// change between them: those it applied (Needs empty) and those that wait
// for an upgrade or a restart. The result is checked as a whole; next's
// origin is kept, for the next reload.
func (st Settings) Reload(next Settings) (Settings, []Change, error) {
	changes := st.Changes(next)
	fs, c := st.flags()
	nfs, _ := next.flags()
	for _, ch := range changes {
		switch {
		case ch.Needs != NeedsNothing:
		case ch.Key == keyCommand:
			c.Command = next.Command
		default:
			if err := fs.Set(ch.Key, nfs.Lookup(ch.Key).Value.String()); err != nil {
				return st, changes, err
			}
		}
	}
	c.from = next.from
	if err := c.validate(asFlags); err != nil {
		return st, changes, err
	}
	return *c, changes, nil
}
