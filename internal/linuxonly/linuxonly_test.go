package linuxonly_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestOtherOSFailsInOneLine builds the whole module for operating systems
// prefork does not support and checks that the go command says why in one
// line, instead of listing every Linux-only identifier of every package.
func TestOtherOSFailsInOneLine(t *testing.T) {
	for _, goos := range []string{"darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			// go test puts its own go on PATH. The build stops while
			// loading packages, before any compilation, so it takes well
			// under a second even with a cold build cache.
			cmd := exec.Command("go", "build", "./...")
			cmd.Dir = "../.." // the module root
			cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0", "GOFLAGS=")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("GOOS=%s go build ./... succeeded; want an error that names Linux", goos)
			}
			have := strings.TrimSpace(string(out))
			if lines := strings.Count(have, "\n") + 1; lines != 1 || !strings.Contains(have, "prefork_needs_Linux") {
				t.Fatalf("GOOS=%s go build ./...: want one line naming prefork_needs_Linux, have %d:\n%s", goos, lines, have)
			}
		})
	}
}
