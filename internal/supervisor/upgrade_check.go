package supervisor

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// checkTimeout bounds how long the new binary's -check-upgrade may run.
const checkTimeout = 5 * time.Second

// checkLine is what -check-upgrade prints on success.
const checkLine = "prefork-upgrade-check"

// CheckUpgrade is the new binary's side of the check (-check-upgrade): the
// flags parsed (settings.Parse did that), the worker command can be found, and
// it prints its version and the state format it reads.
func CheckUpgrade(cfg Config, stderr io.Writer) int {
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		fmt.Fprintf(stderr, "supervisor: worker command: %v\n", unwrapExec(err))
		return 1
	}
	fmt.Fprintf(os.Stdout, "%s version=%s format=%d%s%s\n", checkLine, Version, stateFormat, checkListenersField(cfg), checkSignalsField())
	return 0
}

// checkBinary runs path -check-upgrade with this supervisor's flags and
// returns the version it reports, and whether it holds the supervisor's
// signals from its start (checkSignalsField). The binary must exit 0
// within checkTimeout and read this supervisor's state format.
func (u *upgrader) checkBinary(path string) (version string, holds bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", false, fmt.Errorf("upgrade: %w", err)
	case !fi.Mode().IsRegular():
		return "", false, fmt.Errorf("upgrade: %s is not a regular file", path)
	case fi.Mode().Perm()&0o111 == 0:
		return "", false, fmt.Errorf("upgrade: %s is not executable", path)
	}
	out, err := u.runAside("check", path, append([]string{"-check-upgrade"}, os.Args[1:]...), nil)
	if err != nil {
		return "", false, err
	}
	format := -1
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "version="); ok {
			version = v
		}
		if f == signalsHeld {
			holds = true
		}
		if v, ok := strings.CutPrefix(f, "format="); ok {
			format, _ = strconv.Atoi(v)
		}
	}
	switch {
	case !strings.HasPrefix(out, checkLine):
		return "", false, fmt.Errorf("upgrade: %s is not a prefork supervisor: its -check-upgrade printed %q", path, printableLine(out))
	case format != stateFormat:
		return "", false, fmt.Errorf("upgrade: %s reads state format %d, this supervisor writes %d", path, format, stateFormat)
	}
	if u.s.mode != nil {
		if err := checkedListeners(path, out, u.s.mode.listeners()); err != nil {
			return "", false, err
		}
	}
	return version, holds, nil
}

// printableLine cuts s to one short line for an error message.
func printableLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
