package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A page opened after traffic and a kill -9 shows them at once: the
// charts drawn from the supervisor's history, the exit and the respawn in
// the events, newest first, with readable times.
func TestDashboardRemembers(t *testing.T) {
	const workers = 2
	s := startSupervisor(t, workers)
	// Traffic for a few seconds, so that several samples have requests.
	httpc := &http.Client{Timeout: 2 * time.Second}
	until := time.Now().Add(4 * time.Second)
	served := 0
	for time.Now().Before(until) {
		resp, err := httpc.Get("http://" + s.listen + "/pid")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		served++
	}
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	victim := st.Workers[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.status()
		if err == nil && ready(st) == workers && st.Workers[0].PID != victim.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %d not respawned within 10s", victim.Slot)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("served %d requests, killed pid %d", served, victim.PID)
	// A worker's RSS is sampled less often than its requests: wait until the
	// history holds the 8 RSS points the page is asked to draw below.
	waitHistory(t, s.admin, 8)

	b := newBrowser(t)
	opened := time.Now()
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	// Within the first poll: what is drawn comes from the history.
	got := within(t, b, 3*time.Second, "the charts and events from the history",
		chromedp.Poll[struct {
			Points, Events int
			Exit           string
			Ticks          string
		}](fmt.Sprintf(`(() => {
			const exit = document.querySelector('#events li[data-event="exit"][data-pid="%d"]');
			const respawn = document.querySelector('#events li[data-event="respawn"][data-slot="%d"]');
			const points = +document.getElementById("chart-rps").dataset.points;
			return exit && respawn && points >= 8 ? {points, events: document.querySelectorAll("#events li").length,
				exit: exit.textContent, ticks: document.getElementById("chart-rps").dataset.ticks} : null;
		})()`, victim.PID, victim.Slot), chromedp.WithPollingInterval(20*time.Millisecond)))
	t.Logf("shown %v after opening: %d chart points, %d events, rps axis %s", time.Since(opened), got.Points, got.Events, got.Ticks)
	if !strings.Contains(got.Exit, "crash") {
		t.Errorf("exit shown as %q, want its cause", got.Exit)
	}
	for _, canvas := range []string{"chart-latency", "chart-rss", "chart-cpu"} {
		if n := within(t, b, 5*time.Second, "count "+canvas, chromedp.Evaluate[int](`+document.getElementById("`+canvas+`").dataset.points`)); n < 8 {
			t.Errorf("%s has %d points", canvas, n)
		}
	}
	// Newest first, each with a time of day.
	times := within(t, b, 5*time.Second, "the events' times",
		chromedp.Evaluate[[]string](`[...document.querySelectorAll("#events li time")].map(e => e.dateTime)`))
	for i := 1; i < len(times); i++ {
		a, errA := time.Parse(time.RFC3339Nano, times[i-1])
		b, errB := time.Parse(time.RFC3339Nano, times[i])
		if errA != nil || errB != nil || a.Before(b) {
			t.Fatalf("events not newest first: %q before %q", times[i-1], times[i])
		}
	}
	shown := within(t, b, 5*time.Second, "an event's time", chromedp.Evaluate[string](`document.querySelector("#events li time").textContent`))
	if _, err := time.Parse("15:04:05.000", shown); err != nil {
		t.Errorf("event time shown as %q: %v", shown, err)
	}
	// Status classes are shown: the demo worker reports its answers by
	// class with its heartbeats, and the surviving worker answered 2xx.
	classesShown := `[...document.querySelectorAll("th.classes")].every(th => !th.hidden) &&
		[...document.querySelectorAll("td.c2xx")].some(td => +td.textContent > 0)`
	for deadline := time.Now().Add(5 * time.Second); !within(t, b, 5*time.Second, "the classes' columns", chromedp.Evaluate[bool](classesShown)); {
		if time.Now().After(deadline) {
			t.Fatal("status class columns hidden, or no 2xx answers shown, for workers that report them")
		}
		time.Sleep(50 * time.Millisecond) // polling the page, with a deadline
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// The axes have round, distinct ticks at any scale: a quiet service's
// chart does not read 0, 0, 1, 1, 1.
func TestDashboardTicks(t *testing.T) {
	s := startSupervisor(t, 1)
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	for _, tc := range []struct {
		max  float64
		want string
	}{
		{0, "0,0.5,1"},
		{1.1, "0,0.5,1,1.5"},
		{0.003, "0,0.001,0.002,0.003"},
		{4, "0,1,2,3,4"},
		{37, "0,10,20,30,40"},
		{1234, "0,500,1000,1500"},
		{0.27, "0,0.1,0.2,0.3"},
	} {
		have := within(t, b, 5*time.Second, "ticks", chromedp.Evaluate[string](fmt.Sprintf(
			`(t => t.values.map(v => v.toFixed(t.decimals)).map(Number).join(","))(preforkTicks(%v, 4))`, tc.max)))
		if have != tc.want {
			t.Errorf("ticks for %v: %s, want %s", tc.max, have, tc.want)
		}
	}
	// And on the page, every chart's labels differ.
	within(t, b, 10*time.Second, "distinct labels on every chart",
		chromedp.Poll[bool](`[...document.querySelectorAll("canvas")].every(c => c.dataset.ticks && new Set(c.dataset.ticks.split(",")).size === c.dataset.ticks.split(",").length)`,
			chromedp.WithPollingInterval(50*time.Millisecond)))
}

// waitHistory polls the admin listener's /api/history until its samples
// hold at least n measured worker RSS values, the sparsest of the charts.
func waitHistory(t *testing.T, admin string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	have := 0
	for time.Now().Before(deadline) {
		var h struct {
			Samples []struct {
				Workers []struct {
					RSS uint64 `json:"rss_bytes"`
				} `json:"workers"`
			} `json:"samples"`
		}
		resp, err := http.Get(admin + "/api/history")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
		}
		if err == nil {
			have = 0
			for _, s := range h.Samples {
				for _, w := range s.Workers {
					if w.RSS > 0 {
						have++
					}
				}
			}
			if have >= n {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("history has %d RSS points after 15s, want %d", have, n)
}
