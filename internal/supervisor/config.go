package supervisor

import (
	"fmt"

	_ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
	"github.com/prefork/prefork/internal/settings"
)

// Config is what the supervisor runs: the one settings type, public as
// cluster.Settings, parsed from the command line by settings.Parse. The
// supervisor needs its Command set.
type Config = settings.Settings

// MaxWorkers bounds a scale, as it bounds Settings.Workers.
const MaxWorkers = settings.MaxWorkers

// usagef is a usage error the supervisor finds only when it starts (an
// inherited socket the mode cannot use).
func usagef(format string, a ...any) error {
	return &settings.UsageError{Msg: fmt.Sprintf(format, a...)}
}
