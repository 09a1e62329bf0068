package proctest

import (
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/prefork/prefork/internal/procfs"
)

// Run runs the tests (m.Run), then fails the run if they left a child
// process of the test binary, which it kills. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(proctest.Run(m)) }
func Run(m *testing.M) int {
	code := m.Run()
	// Each test kills and waits for its own processes; anything left is a
	// bug of the suite.
	if kids := procfs.Children(os.Getpid()); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "proctest: child processes left behind: %v\n", kids)
		for _, pid := range kids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return 1
	}
	return code
}
