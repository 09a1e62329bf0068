package dashboard

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The page shows every worker, hides the actions when they are off, and
// follows a kill -9 live: the exit, the respawn and the new worker appear
// within 2s without the page being reloaded.
func TestDashboardFollowsKill(t *testing.T) {
	const workers = 3
	sockPath := filepath.Join(t.TempDir(), "web.sock")
	s := startSupervisor(t, workers, "-listen", "web=unix:"+sockPath)
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	// Several listeners: the summary names each.
	want := s.listen + "=" + s.listen + ", web=unix:" + sockPath
	if got := within(t, b, 10*time.Second, "the listeners to show", chromedp.Poll[string](`(e => e && e.textContent.includes("web=") && e.textContent)(document.getElementById("listeners"))`,
		chromedp.WithPollingInterval(50*time.Millisecond))); got != want {
		t.Errorf("listeners shown %q, want %q", got, want)
	}
	rows := within(t, b, 10*time.Second, fmt.Sprintf("the table to show %d ready workers", workers),
		chromedp.Poll[[]row](fmt.Sprintf(`(rows => rows.filter(r => r.State === "ready").length === %d && rows)(%s)`, workers, rowsJS),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if len(rows) != workers {
		t.Fatalf("table rows %+v, want %d", rows, workers)
	}
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range st.Workers {
		if !slices.ContainsFunc(rows, func(r row) bool { return r.PID == w.PID && r.Slot == w.Slot }) {
			t.Fatalf("worker slot %d pid %d missing from the table %+v", w.Slot, w.PID, rows)
		}
	}
	if hidden := within(t, b, 5*time.Second, "read the actions", chromedp.Evaluate[bool](`document.getElementById("actions").hidden`)); !hidden {
		t.Fatal("reload and scale are shown without -admin-actions")
	}
	within(t, b, 10*time.Second, "the event stream to connect",
		chromedp.Poll[bool](`document.getElementById("stream").classList.contains("on")`, chromedp.WithPollingInterval(50*time.Millisecond)))
	within(t, b, 5*time.Second, "mark the page", chromedp.Evaluate[bool](`window.preforkTestMark = true`))

	victim := rows[0]
	begun := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	shown := fmt.Sprintf(`(() => {
		const exit = document.querySelector('#events li[data-event="exit"][data-pid="%[1]d"]');
		const respawn = document.querySelector('#events li[data-event="respawn"][data-slot="%[2]d"]');
		const fresh = %[3]s.find(r => r.Slot === %[2]d && r.PID !== %[1]d);
		return exit && respawn && fresh ? {exit: exit.textContent, pid: fresh.PID} : null;
	})()`, victim.PID, victim.Slot, rowsJS)
	got := within(t, b, 2*time.Second, fmt.Sprintf("the exit of pid %d and its slot's respawn to show", victim.PID),
		chromedp.Poll[struct {
			Exit string
			PID  int
		}](shown, chromedp.WithPollingInterval(20*time.Millisecond)))
	t.Logf("kill -9 to exit and respawn shown: %v", time.Since(begun))
	if !strings.Contains(got.Exit, "crash") {
		t.Errorf("exit shown as %q, want its cause, crash", got.Exit)
	}
	if marked := within(t, b, 5*time.Second, "check the mark", chromedp.Evaluate[bool](`window.preforkTestMark === true`)); !marked {
		t.Fatal("the page was reloaded")
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// With -admin-actions, the reload button asks for confirmation and, once
// it is accepted, reloads every worker: the generation goes up.
func TestDashboardReload(t *testing.T) {
	const workers = 2
	s := startSupervisor(t, workers, "-admin-actions")
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	within(t, b, 10*time.Second, "the table to show the first generation",
		chromedp.Poll[bool](fmt.Sprintf(`(rows => rows.length === %d && rows.every(r => r.State === "ready" && r.Generation === 1))(%s)`, workers, rowsJS),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if gen := within(t, b, 5*time.Second, "read the generation", chromedp.Evaluate[string](`document.getElementById("generation").textContent`)); gen != "1" {
		t.Fatalf("generation shown %q, want 1", gen)
	}
	if hidden := within(t, b, 5*time.Second, "read the actions", chromedp.Evaluate[bool](`document.getElementById("actions").hidden`)); hidden {
		t.Fatal("reload and scale are hidden with -admin-actions")
	}
	within(t, b, 10*time.Second, "press reload", chromedp.Click(chromedp.ID("reload")))
	within(t, b, 20*time.Second, "the table to show the second generation",
		chromedp.Poll[bool](fmt.Sprintf(`(rows => rows.length === %d && rows.every(r => r.State === "ready" && r.Generation === 2)
			&& document.getElementById("generation").textContent === "2")(%s)`, workers, rowsJS),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if d := b.dialogMessages(); len(d) != 1 || !strings.Contains(d[0], "Reload") {
		t.Errorf("dialogs %q, want one confirmation of the reload", d)
	}
	result := within(t, b, 10*time.Second, "the reload's result",
		chromedp.Poll[string](`(t => t.startsWith("reload") && t)(document.getElementById("action-result").textContent)`,
			chromedp.WithPollingInterval(50*time.Millisecond)))
	t.Logf("reload: %s", result)
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != 2 {
		t.Fatalf("supervisor at generation %d after the reload, want 2", st.Generation)
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}
