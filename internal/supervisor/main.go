package supervisor

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
)

// Main runs the supervisor with the given arguments (without the program
// name) and returns the process exit status: 0 after a clean stop, 1 for a
// runtime failure, 2 for a usage error.
func Main(args []string, stderr io.Writer) int {
	cfg, err := ParseFlags(args)
	if err == nil && cfg.ShowVersion {
		fmt.Fprintln(os.Stdout, "prefork "+Version)
		return 0
	}
	if err == nil && cfg.CheckUpgrade {
		return checkUpgrade(cfg, stderr)
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 2
	}
	log := NewLogger(cfg.LogFormat)
	defer log.Sync()
	if err := Run(cfg, log); err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "supervisor: %v\n", err)
			return 2
		}
		log.Error("exiting", zap.Error(err))
		fmt.Fprintf(stderr, "supervisor: %v\n", err)
		return 1
	}
	return 0
}
