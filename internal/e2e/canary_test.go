package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/demo"
	"github.com/prefork/prefork/internal/proctest"
)

// canaryBake is the bake of the canary tests: short, and long enough for a
// heartbeat or two of both generations in the window.
const canaryBake = 1500 * time.Millisecond

// buildReleases builds the demo worker once per release, named by its
// build id, each with its fault (demo.Fault), concurrently.
func buildReleases(t *testing.T, faults map[string]string) map[string]string {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	paths := map[string]string{}
	for build, fault := range faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, err := proctest.Build("./cmd/worker", "-ldflags=-X main.build="+build+" -X main.fault="+fault)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("build release %s: %v", build, err)
			}
			paths[build] = path
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return paths
}

// canaryLoad sends GET /pid on new connections from several goroutines and
// records every failure: the pid that answered an injected 500, and
// transport errors.
type canaryLoad struct {
	clients
	mu        sync.Mutex
	failedBy  map[int]int // injected 500s by the pid that answered
	transport []error
}

func startCanaryLoad(s *sup, n int) *canaryLoad {
	l := &canaryLoad{clients: newClients(), failedBy: map[int]int{}}
	for range n {
		l.run(1<<30, 5*time.Minute, func() bool {
			code, body, err := s.get("/pid")
			l.mu.Lock()
			defer l.mu.Unlock()
			switch {
			case err != nil:
				l.transport = append(l.transport, err)
			case code == http.StatusInternalServerError && strings.HasPrefix(body, "injected fault, pid "):
				pid, _ := strconv.Atoi(strings.TrimPrefix(body, "injected fault, pid "))
				l.failedBy[pid]++
			case code != http.StatusOK:
				l.transport = append(l.transport, fmt.Errorf("status %d: %s", code, body))
			}
			return err == nil && code == http.StatusOK
		})
	}
	return l
}

// take returns the failures since the last take, and forgets them.
func (l *canaryLoad) take() (map[int]int, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, e := l.failedBy, l.transport
	l.failedBy, l.transport = map[int]int{}, nil
	return f, e
}

// builds asks /health until n distinct workers have answered, and returns
// the build each runs, by pid.
func (s *sup) builds(n int) map[int]string {
	s.t.Helper()
	seen := map[int]string{}
	proctest.Eventually(s.t, 5*time.Second, fmt.Sprintf("%d workers answer /health", n), func() bool {
		code, body, err := s.get("/health")
		var h demo.Health
		if err != nil || code != 200 || json.Unmarshal([]byte(body), &h) != nil {
			s.t.Fatalf("/health: %d %q %v", code, body, err)
		}
		seen[h.PID] = h.Build
		return len(seen) >= n
	})
	return seen
}

// allOn checks that every worker answering /health runs build.
func (s *sup) allOn(build string, n int) {
	s.t.Helper()
	for pid, b := range s.builds(n) {
		if b != build {
			s.t.Fatalf("worker %d runs build %q, want every worker on %q", pid, b, build)
		}
	}
}

// deploy puts release path at app as a deploy does: beside it, then
// renamed over it (a running executable cannot be written: ETXTBSY).
func deploy(t *testing.T, path, app string) {
	t.Helper()
	copyExecutable(t, path, app+".new")
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
}

// TestCanaryReload puts several releases through one supervisor under
// load, each with `ctl reload -canary 1 -bake 1.5s`: three bad ones (5xx
// on 20% of requests, +50ms a request, a crash 10s after start, baked
// for 11s so that the crash falls inside the bake) are rolled back within
// the bake and 2s, with every worker back on the
// release that was serving and only the canary's requests failed; a good
// one goes through; then the binary on disk is replaced by a broken one,
// the canary fails, the kept release goes on serving (a worker killed
// then comes back in it, from its memfd) and a reload of nothing new is
// refused.
func TestCanaryReload(t *testing.T) {
	rel := buildReleases(t, map[string]string{"a": "", "b": "errors=20", "c": "delay=50ms", "d": "crash=10s", "e": ""})
	app := filepath.Join(t.TempDir(), "worker")
	deploy(t, rel["a"], app)
	admin := proctest.FreeAddr(t)
	s := startReady(t, "-workers", "3", "-canary-min-requests", "30", "-admin", admin, "--", app)
	s.allOn("a", 3)
	load := startCanaryLoad(s, 6)
	defer load.finish()

	for _, bad := range []struct {
		build, why string
		strict     bool // no request fails but the canary's injected 500s
		bake       time.Duration
	}{
		{"b", "error rate", true, canaryBake},
		{"c", "p99 latency", true, canaryBake},
		{"d", "crashed", false, 11 * time.Second}, // a request in flight at the crash may fail
	} {
		deploy(t, rel[bad.build], app)
		before := s.events.Count()
		load.take()
		out, code := s.ctl("reload", "-canary", "1", "-bake", bad.bake.String())
		if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, bad.why) {
			t.Fatalf("release %s: ctl reload exit %d: %s; want a rollback because of %s", bad.build, code, out, bad.why)
		}
		after := func(e proctest.Event) bool { return e.Pos >= before }
		start := s.waitEvent(time.Second, control.EventCanary, after)
		bake := s.waitEvent(time.Second, control.EventCanary, func(e proctest.Event) bool { return after(e) && e.Str("step") == "bake" })
		done := s.waitEvent(time.Second, control.EventRollback, func(e proctest.Event) bool { return after(e) && e.Str("step") == "done" })
		if took := done.At.Sub(bake.At); took > bad.bake+2*time.Second {
			t.Errorf("release %s: rolled back %s after the bake began, want within the bake and 2s", bad.build, took)
		}
		s.allOn("a", 3)
		failed, errs := load.take()
		canaries := map[int]bool{}
		for _, e := range s.events.All(control.EventFork) {
			if after(e) && e.Generation == start.Generation {
				canaries[e.PID] = true
			}
		}
		for pid, n := range failed {
			if !canaries[pid] {
				t.Errorf("release %s: %d requests failed on worker %d, not the canary %v", bad.build, n, pid, canaries)
			}
		}
		if bad.strict && len(errs) > 0 {
			t.Errorf("release %s: %d requests failed besides the canary's 500s: %v", bad.build, len(errs), errs[0])
		}
		t.Logf("release %s: %s; failed on the canary: %v; other failures: %d", bad.build, strings.TrimSpace(out), failed, len(errs))
		if bad.build == "b" {
			if len(failed) == 0 {
				t.Error("no request met the canary's 5xx")
			}
			st, _ := s.ctl("status")
			if !strings.Contains(st, "canary rolled back") || !strings.Contains(st, "error rate") {
				t.Errorf("ctl status does not say why the canary was rolled back:\n%s", st)
			}
			// The dashboard draws its canary panel from /api/status.
			var api control.Status
			resp, err := s.client.Get("http://" + admin + "/api/status")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&api)
				resp.Body.Close()
			}
			if err != nil || api.Canary == nil || api.Canary.State != control.CanaryRolledBack || !strings.Contains(api.Canary.Why, "error rate") ||
				api.Canary.New.ErrorRate < 0.1 || api.Canary.Old.ErrorRate != 0 {
				t.Errorf("/api/status canary: %+v, %v; want rolled back on the error rate, both generations' figures", api.Canary, err)
			}
		}
	}

	// A good release goes through, and becomes the one kept.
	deploy(t, rel["e"], app)
	if out, code := s.ctl("reload", "-canary", "1", "-bake", canaryBake.String()); code != 0 || !strings.Contains(out, "canary pass") {
		t.Fatalf("good release: ctl reload exit %d: %s", code, out)
	}
	s.allOn("e", 3)

	// A broken binary on disk: its canary cannot start, the kept release
	// goes on serving, and restarts in it from its memfd, not from disk.
	if err := os.WriteFile(app+".new", []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
	if out, code := s.ctl("reload", "-canary", "1", "-bake", canaryBake.String()); code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("broken release: ctl reload exit %d: %s", code, out)
	}
	if failed, errs := load.take(); len(failed)+len(errs) > 0 {
		t.Fatalf("requests failed after the good release: 500s %v, others %v", failed, errs)
	}
	victims := s.builds(3)
	before := s.events.Count()
	for pid := range victims {
		syscall.Kill(pid, syscall.SIGKILL)
		break
	}
	s.waitEvent(10*time.Second, control.EventReady, func(e proctest.Event) bool { return e.Pos >= before })
	s.allOn("e", 3)
	if out, code := s.ctl("reload"); code != 1 || !strings.Contains(out, "nothing new on disk") {
		t.Fatalf("reload of the rolled-back release: exit %d: %s; want refused", code, out)
	}
	load.finish()
	// Only the requests in the killed worker may fail, one per client.
	if failed, errs := load.take(); len(failed) > 0 || len(errs) > 6 {
		t.Fatalf("requests failed around the kill: 500s %v, others %d: %v", failed, len(errs), errs)
	}
}

// TestCanaryNode: a Node.js worker sends no heartbeat, so its canary is
// judged on crashes, readiness and hangs only, and the verdict says so.
func TestCanaryNode(t *testing.T) {
	node, app := nodeApp(t)
	t.Setenv("PORT", "0")
	s := startReady(t, "-workers", "2", "--", node, app)
	out, code := s.ctl("reload", "-canary", "1", "-bake", "1s")
	if code != 0 || !strings.Contains(out, "canary pass") || !strings.Contains(out, "no heartbeat") {
		t.Fatalf("ctl reload: exit %d: %s; want a pass on crashes and hangs only", code, out)
	}
	v := s.waitEvent(time.Second, control.EventVerdict, nil)
	if v.Str("verdict") != control.VerdictPass || v.Str("decision") != "continue" {
		t.Fatalf("verdict %+v", v.Fields())
	}
	for _, w := range s.status().Workers {
		if w.State == string(control.StateReady) && w.Generation != 2 {
			t.Fatalf("worker %d in generation %d after the reload, want 2", w.PID, w.Generation)
		}
	}
}
