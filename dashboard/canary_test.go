package dashboard

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/prefork/prefork/internal/control"
)

// TestDashboardCanary: the reload button with a canary of 1 and a bake of
// 1s starts a canary reload; with no traffic to judge it by, it is rolled
// back (-canary-insufficient's default), and the canary panel says so,
// with both generations side by side.
func TestDashboardCanary(t *testing.T) {
	s := startSupervisor(t, 3, "-admin-actions")
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	within(t, b, 10*time.Second, "the actions to show",
		chromedp.Poll[bool](`!document.getElementById("actions").hidden`, chromedp.WithPollingInterval(50*time.Millisecond)))
	if hidden := within(t, b, 5*time.Second, "read the canary panel", chromedp.Evaluate[bool](`document.getElementById("canary-box").hidden`)); !hidden {
		t.Fatal("the canary panel shows before any canary")
	}
	within(t, b, 5*time.Second, "ask for a canary of 1 slot", chromedp.SetValue(chromedp.ID("reload-canary"), "1"))
	within(t, b, 5*time.Second, "baking 1s", chromedp.SetValue(chromedp.ID("reload-bake"), "1"))
	within(t, b, 10*time.Second, "press reload", chromedp.Click(chromedp.ID("reload")))
	state := within(t, b, 20*time.Second, "the canary panel to show the rollback",
		chromedp.Poll[string](`(b => !b.hidden && document.getElementById("canary-state").textContent.startsWith("rolled back") && document.getElementById("canary-state").textContent)(document.getElementById("canary-box"))`,
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if !strings.Contains(state, "not enough traffic") || !strings.Contains(state, "generation 2 against 1") {
		t.Fatalf("canary panel: %q", state)
	}
	rows := within(t, b, 5*time.Second, "read the generations", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#canary tbody tr")].map(r => r.cells[0].textContent)`))
	if len(rows) != 2 || rows[0] != "1 (old)" || rows[1] != "2 (canary)" {
		t.Fatalf("canary rows %q, want the old generation and the canary side by side", rows)
	}
	result := within(t, b, 10*time.Second, "the reload's result",
		chromedp.Poll[string](`(t => t.includes("rolled back") && t)(document.getElementById("action-result").textContent)`,
			chromedp.WithPollingInterval(50*time.Millisecond)))
	t.Logf("reload: %s", result)
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Canary == nil || st.Canary.State != control.CanaryRolledBack || st.Generation != 1 {
		t.Fatalf("status after the canary: generation %d, canary %+v", st.Generation, st.Canary)
	}
	// The rolled-back reload is a 409 from /api/reload, which the browser
	// logs; anything else is a bug of the page.
	for _, e := range b.errors() {
		if !strings.Contains(e, "status of 409") || !strings.Contains(e, "/api/reload") {
			t.Errorf("browser console error: %s", e)
		}
	}
}
