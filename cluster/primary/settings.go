package primary

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prefork/prefork/cluster"
)

// Option changes the Settings: the options of [ListenAndServe] and
// [Start].
type Option func(*cluster.Settings)

// WithSettings replaces every setting with st (apply it first).
func WithSettings(st cluster.Settings) Option { return func(s *cluster.Settings) { *s = st } }

// WithWorkers sets the number of worker processes (Node's os.availableParallelism() by default).
func WithWorkers(n int) Option { return func(s *cluster.Settings) { s.Workers = n } }

// WithMode sets the scheduling mode: cluster.ModeRR, ModeShared or
// ModeReusePort (Node's cluster.schedulingPolicy).
func WithMode(mode string) Option { return func(s *cluster.Settings) { s.Mode = mode } }

// WithBalance sets rr mode's policy: cluster.BalanceRoundRobin or
// BalanceLeastConn.
func WithBalance(policy string) Option { return func(s *cluster.Settings) { s.Balance = policy } }

// WithGrace sets how long a draining worker may take before it is killed.
func WithGrace(d time.Duration) Option { return func(s *cluster.Settings) { s.Grace = d } }

// withCommand is st as the engine takes it: Command filled in.
func withCommand(st cluster.Settings) (cluster.Settings, error) {
	if st.Command == nil {
		self, err := executable()
		if err != nil {
			return st, err
		}
		st.Command = append([]string{self}, os.Args[1:]...)
	}
	return st, nil
}

// executable is os.Args[0] as an absolute path. Not os.Executable: that
// resolves symbolic links once, now, so a deploy that points a link such
// as /usr/local/bin/app at a new release would reload into the old one; a
// reload must start whatever the program's path names then.
func executable() (string, error) {
	if len(os.Args) == 0 || os.Args[0] == "" {
		return "", errors.New("primary: no os.Args[0] to re-execute")
	}
	path := os.Args[0]
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("primary: find this program to re-execute: %w", err)
		}
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("primary: find this program to re-execute: %w", err)
	}
	return abs, nil
}
