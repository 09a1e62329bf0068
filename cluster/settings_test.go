package cluster

import (
	"errors"
	"runtime"
	"testing"
)

// ParseSettings gives the command line's defaults with this program as the
// command, and refuses what is not a flag.
func TestParseSettings(t *testing.T) {
	st, err := ParseSettings(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers != runtime.NumCPU() || st.Mode != ModeRR || st.Balance != BalanceRoundRobin || st.Listen.String() != ":3000" || st.Command != nil {
		t.Fatalf("defaults: %+v", st)
	}
	st, err = ParseSettings([]string{"-workers", "3", "-mode", "reuseport", "-balance", "least-conn"})
	if err != nil || st.Workers != 3 || st.Mode != ModeReusePort || st.Balance != BalanceLeastConn {
		t.Fatalf("flags: %+v, %v", st, err)
	}
	for _, args := range [][]string{{"extra"}, {"-workers", "0"}, {"--", "worker"}, {"-mode", "fast"}} {
		if _, err := ParseSettings(args); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseSettings(%q) = %v, want an ErrUsage", args, err)
		}
	}
}
