package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// TestConfigReloadUnderLoad: a supervisor run from a -config file; under
// load, the file changes the worker count, the grace and the mode, and ctl
// reload applies the first two with no failed request and says that the
// mode needs a restart; a bad file is then refused with file:line: key
// and the workers serve on; the grace applied shows on stop.
func TestConfigReloadUnderLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prefork.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("workers = 2\ngrace = \"30s\"\nmode = \"rr\"\n")
	s := startReady(t, "-config", path)
	if n := len(s.status().pids("ready")); n != 2 {
		t.Fatalf("%d workers from the file, want 2", n)
	}
	load := startMixedLoad(t, s.url("/pid"), 3, 3)
	load.waitOK(t, 200, 10*time.Second)

	write("# more workers, a shorter grace\nworkers = 3\ngrace = \"2s\"\nmode = \"shared\"\n")
	out, code := s.ctl("reload")
	if code != 0 {
		t.Fatalf("ctl reload: exit %d: %s", code, out)
	}
	for _, want := range []string{"applied ", "workers 2 -> 3", `grace "30s" -> "2s"`, `mode "rr" -> "shared" (needs restart)`, "reload: replaced"} {
		if !strings.Contains(out, want) {
			t.Errorf("ctl reload says %q, want %q in it", out, want)
		}
	}
	proctest.Eventually(t, 15*time.Second, "3 ready workers", func() bool { return len(s.status().pids("ready")) == 3 })
	load.waitOK(t, 200, 10*time.Second)
	load.check(t)
	if _, ok := s.Out.WaitJSON(5*time.Second, func(m map[string]any) bool {
		return strings.HasPrefix(m["msg"].(string), "configuration changes that a reload cannot apply") && strings.Contains(logString(m["waiting"]), "mode")
	}); !ok {
		t.Error("the log does not say that the mode waits for a restart")
	}

	write("workers = 3\n\ngrace = 5\n")
	out, code = s.ctl("reload")
	if code == 0 || !strings.Contains(out, path+":3: grace: want a duration string") {
		t.Errorf("a bad file: ctl reload exit %d, %q; want refused naming %s:3: grace", code, out, path)
	}
	if st := s.status(); len(st.pids("ready")) != 3 || st.Generation != 2 {
		t.Errorf("after a refused reload: %d ready workers, generation %d; want 3 and 2", len(st.pids("ready")), st.Generation)
	}
	if _, err := s.pid(); err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}

	// A request that outlives the new grace (2s, not the file's first
	// 30s) is cut short on stop.
	held := make(chan error, 1)
	go func() {
		// Its own client: s.client gives up after 5s, and with it the
		// request, which would end the old grace early too.
		held <- fetch(&http.Client{Timeout: 30 * time.Second}, s.url("/sleep?ms=20000"))
	}()
	proctest.Eventually(t, 5*time.Second, "the held request reaches a worker", func() bool {
		for _, w := range s.status().Workers {
			if w.OpenConns > 0 {
				return true
			}
		}
		return false
	})
	began := time.Now()
	s.Signal(syscall.SIGTERM)
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Errorf("stop: exit %d", code)
	}
	if took := time.Since(began); took > 8*time.Second {
		t.Errorf("stop took %s: the reloaded grace of 2s did not apply", took)
	}
	<-held
}

// logString is a log field as text.
func logString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		var parts []string
		for _, e := range v {
			parts = append(parts, logString(e))
		}
		return strings.Join(parts, ", ")
	}
	return ""
}
