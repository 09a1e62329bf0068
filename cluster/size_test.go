package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxWorkerRatio bounds a worker-only program's size against the same
// program on plain net/http: a worker links the worker side, not the
// supervisor's engine, Prometheus, zap or the admin packages, which live
// behind cluster/primary.
const maxWorkerRatio = 1.3

// A hello-world worker (cluster.Listen and cluster.Serve) is at most
// maxWorkerRatio times the size of hello world on net/http, and links none
// of the primary's packages.
func TestWorkerSize(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, to build the programs: %v", err)
	}
	dir := t.TempDir()
	size := func(name string) int64 {
		out := filepath.Join(dir, name)
		cmd := exec.Command(gobin, "build", "-o", out, "./testdata/hello/"+name)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, b)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	plain, worker := size("plain"), size("worker")
	ratio := float64(worker) / float64(plain)
	t.Logf("worker %d bytes, plain net/http %d bytes: %.2fx", worker, plain, ratio)
	if ratio > maxWorkerRatio {
		t.Errorf("a worker-only program is %.2fx the size of plain net/http, want at most %.1fx", ratio, maxWorkerRatio)
	}

	deps, err := exec.Command(gobin, "list", "-deps", "./testdata/hello/worker").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(deps)) {
		for _, banned := range []string{"/internal/supervisor", "/internal/admin", "/internal/metrics", "/internal/control", "prometheus", "go.uber.org/zap", "/cluster/primary"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("a worker links %s", pkg)
			}
		}
	}
}
