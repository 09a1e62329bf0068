package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/settings"
)

// configHarness is a harness whose settings come from a -config file with
// text; write rewrites the file.
func configHarness(t *testing.T, text string) (*harness, func(string)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prefork.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(text)
	st, err := settings.Parse([]string{"-config", path, "-mode", "shared", "--", "worker"})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { *c = st })
	h.start(true)
	return h, write
}

// rollAll makes each new worker of the running rollout ready and its old
// one exit.
func (h *harness) rollAll() {
	h.t.Helper()
	for h.s.reloader.roll != nil {
		next := h.s.reloader.roll.next
		if next == nil {
			h.t.Fatal("rollout without a next worker")
		}
		old := next.slot.cur
		h.ready(next)
		if old != nil {
			h.exit(old, 0)
		}
	}
}

func TestReloadConfigFile(t *testing.T) {
	t.Run("scale down first, then roll", func(t *testing.T) {
		h, write := configHarness(t, "workers = 3\ngrace = \"30s\"\n")
		write("workers = 2\ngrace = \"5s\"\nqueue-max = 10\n")
		reply := h.control(control.Request{Cmd: control.CmdReload})
		if h.s.cfg.Grace != 5*time.Second || h.s.cfg.Workers != 2 || h.s.cfg.QueueMax != settings.DefaultQueueMax {
			t.Fatalf("settings after reload: grace %s, workers %d, queue-max %d", h.s.cfg.Grace, h.s.cfg.Workers, h.s.cfg.QueueMax)
		}
		if len(h.s.slots) != 2 || h.s.scaler.scaling == nil || h.s.reloader.roll != nil {
			t.Fatalf("want the scale-down to 2 first: %d slots, scaling %v, rollout %v", len(h.s.slots), h.s.scaler.scaling, h.s.reloader.roll)
		}
		for _, p := range h.s.live {
			if p.slot.removed {
				h.exit(p, 0)
			}
		}
		h.rollAll()
		r := h.answer(reply)
		for _, want := range []string{`grace "30s" -> "5s"`, "workers 3 -> 2", "queue-max 4096 -> 10 (needs upgrade)", "replaced 2 workers"} {
			if !r.OK || !strings.Contains(r.Message, want) {
				t.Errorf("reply %+v, want %q in it", r, want)
			}
		}
	})
	t.Run("roll first, then scale up", func(t *testing.T) {
		h, write := configHarness(t, "workers = 2\n")
		write("workers = 3\n")
		reply := h.control(control.Request{Cmd: control.CmdReload})
		if h.s.reloader.roll == nil || len(h.s.slots) != 2 {
			t.Fatalf("want the rollout of 2 first: %d slots", len(h.s.slots))
		}
		h.rollAll()
		if r := h.answer(reply); !r.OK || !strings.Contains(r.Message, "workers 2 -> 3") {
			t.Errorf("reply %+v", r)
		}
		if len(h.s.slots) != 3 || h.cur(3) == nil {
			t.Fatalf("no third worker after the rollout: %d slots", len(h.s.slots))
		}
		h.ready(h.cur(3))
		if h.s.scaler.scaling != nil {
			t.Error("the scale to 3 did not end")
		}
	})
	t.Run("a bad file refuses the reload", func(t *testing.T) {
		h, write := configHarness(t, "workers = 2\ngrace = \"30s\"\n")
		was := h.s.cfg
		write("grace = \"5s\"\nworkers = \"3\"\n")
		r := h.answer(h.control(control.Request{Cmd: control.CmdReload}))
		if r.OK || !strings.Contains(r.Error, "prefork.toml:2: workers: want an integer") {
			t.Errorf("reply %+v, want refused naming prefork.toml:2: workers", r)
		}
		if h.s.reloader.roll != nil || h.s.scaler.scaling != nil || h.s.cfg.Grace != was.Grace || h.s.gen != 1 || h.s.counts.reloads["failure"] != 1 {
			t.Errorf("a refused reload changed something: grace %s, generation %d", h.s.cfg.Grace, h.s.gen)
		}
		// SIGHUP too: refused, and logged, with nothing to reply to.
		h.signal(syscall.SIGHUP)
		if h.s.reloader.roll != nil || h.s.counts.reloads["failure"] != 2 {
			t.Error("SIGHUP with a bad file started a reload")
		}
	})
}
