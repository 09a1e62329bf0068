package dashboard

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/prefork/prefork/internal/admin/admintest"
)

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// signIn fills the login form and submits it.
func signIn(t *testing.T, b *browser, user, secret string) {
	t.Helper()
	within(t, b, 10*time.Second, "the login form", chromedp.Poll[bool](`!document.getElementById("login-box").hidden`,
		chromedp.WithPollingInterval(50*time.Millisecond)))
	if user != "" {
		within(t, b, 5*time.Second, "type the user", chromedp.SetValue(chromedp.ID("login-user"), user))
	}
	within(t, b, 5*time.Second, "type the secret", chromedp.SetValue(chromedp.ID("login-secret"), secret))
	within(t, b, 5*time.Second, "submit", chromedp.Click(chromedp.ID("login-submit")))
}

// loginError waits for the login form to show an error containing want.
func loginError(t *testing.T, b *browser, want string) string {
	t.Helper()
	return within(t, b, 10*time.Second, fmt.Sprintf("the login form to say %q", want),
		chromedp.Poll[string](fmt.Sprintf(`(e => !document.getElementById("login-box").hidden && e.includes(%q) && e)(document.getElementById("login-error").textContent)`, want),
			chromedp.WithPollingInterval(50*time.Millisecond)))
}

// fetchStatus is the status of a request the page makes without its
// credential.
func fetchStatus(t *testing.T, b *browser, method, path string) int {
	t.Helper()
	return within(t, b, 10*time.Second, method+" "+path+" from the page",
		chromedp.Evaluate[int](fmt.Sprintf(`fetch(%q, {method: %q, headers: {"X-Prefork-Page": "1", "Content-Type": "application/json"}, body: %s}).then(r => r.status)`,
			path, method, map[string]string{"GET": "undefined", "POST": `'{"n":2}'`}[method]),
			chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
}

// The page asks for the user and password once, says so when they are
// wrong, keeps them for the tab (a reload of the page does not ask
// again), and its actions work with them and not without.
func TestDashboardLogin(t *testing.T) {
	const workers = 2
	users := admintest.WriteUsers(t, t.TempDir(), "ops", "correct horse")
	s := startSupervisorWith(t, workers, launch{auth: basic("ops", "correct horse")}, "-admin-auth", users, "-admin-actions")
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	if n := within(t, b, 5*time.Second, "count the rows", chromedp.Evaluate[int](`document.querySelectorAll("#workers tbody tr").length`)); n != 0 {
		t.Fatalf("%d workers shown before signing in", n)
	}
	for _, path := range []string{"/api/status", "/api/history", "/metrics"} {
		if code := fetchStatus(t, b, "GET", path); code != http.StatusUnauthorized {
			t.Fatalf("GET %s without the credential: %d, want 401", path, code)
		}
	}
	if code := fetchStatus(t, b, "POST", "/api/reload"); code != http.StatusUnauthorized {
		t.Fatalf("reload without the credential: %d, want 401", code)
	}

	signIn(t, b, "ops", "wrong horse")
	loginError(t, b, "Wrong user or password")
	signIn(t, b, "ops", "correct horse")
	within(t, b, 10*time.Second, "the table after signing in",
		chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("login-box").hidden && (rows => rows.length === %d && rows.every(r => r.State === "ready"))(%s)`, workers, rowsJS),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	if url := within(t, b, 5*time.Second, "read the URL", chromedp.Evaluate[string](`location.href`)); url != s.admin+"/" {
		t.Fatalf("the page is at %q after signing in: nothing belongs in its URL", url)
	}
	within(t, b, 10*time.Second, "the event stream to connect",
		chromedp.Poll[bool](`document.getElementById("stream").classList.contains("on")`, chromedp.WithPollingInterval(50*time.Millisecond)))

	// Kept for the tab: a reload of the page does not ask again.
	within(t, b, 20*time.Second, "reload the page", chromedp.Reload())
	within(t, b, 10*time.Second, "the table without signing in again",
		chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("login-box").hidden && %s.length === %d`, rowsJS, workers),
			chromedp.WithPollingInterval(50*time.Millisecond)))

	// An action with the credential, from the page's button.
	within(t, b, 10*time.Second, "press reload", chromedp.Click(chromedp.ID("reload")))
	result := within(t, b, 30*time.Second, "the reload's result",
		chromedp.Poll[string](`(t => t.startsWith("reload") && t)(document.getElementById("action-result").textContent)`,
			chromedp.WithPollingInterval(50*time.Millisecond)))
	st, err := s.status()
	if err != nil || st.Generation != 2 || len(st.Workers) != workers {
		t.Fatalf("after the reload (%q): %+v %v, want generation 2", result, st, err)
	}
	// And without it, from the same page: refused, nothing done.
	if code := fetchStatus(t, b, "POST", "/api/scale"); code != http.StatusUnauthorized {
		t.Fatalf("scale without the credential: %d, want 401", code)
	}
	if st, err := s.status(); err != nil || len(st.Workers) != workers {
		t.Fatalf("after a refused scale: %+v %v", st, err)
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Logf("browser console (the 401s are expected):\n%s", strings.Join(errs, "\n"))
	}
}

// Wrong passwords are answered 401 until the address has failed too
// often; then the page says to wait (429), the right password too is
// refused until then, and the failures are counted in the metrics.
func TestDashboardLoginRateLimited(t *testing.T) {
	users := admintest.WriteUsers(t, t.TempDir(), "ops", "pw")
	s := startSupervisorWith(t, 1, launch{auth: basic("ops", "pw")}, "-admin-auth", users)
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("20 wrong passwords and no limit")
		}
		signIn(t, b, "ops", "guess"+strconv.Itoa(i))
		msg := loginError(t, b, "")
		if strings.Contains(msg, "Too many failed attempts") {
			t.Logf("limited after %d wrong passwords: %q", i, msg)
			if i < 3 {
				t.Fatalf("limited after only %d wrong passwords", i)
			}
			break
		}
		if !strings.Contains(msg, "Wrong user or password") {
			t.Fatalf("after wrong password %d the page says %q", i+1, msg)
		}
		within(t, b, 5*time.Second, "clear the message", chromedp.Evaluate[bool](`(document.getElementById("login-error").textContent = "") === ""`))
	}
	// Right now, even the right password is refused.
	resp, err := s.get("/api/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the right password while limited: %d, want 429", resp.StatusCode)
	}
	// Until the address may try again.
	var metrics string
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := s.get("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			metrics = string(body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after 15s: %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, name := range []string{"prefork_admin_auth_failures_total", "prefork_admin_auth_limited_total"} {
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(metrics)
		if m == nil || m[1] == "0" {
			t.Errorf("%s: %v, want a count", name, m)
		}
	}
}

// Over TLS, with a bearer token: the page asks for the token and shows
// the workers.
func TestDashboardTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := admintest.WriteCert(t, dir, 1)
	token := strings.Repeat("ab", 24)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSupervisorWith(t, 2, launch{https: true, auth: "Bearer " + token},
		"-admin-auth", tokenFile, "-admin-tls-cert", cert, "-admin-tls-key", key)
	if !strings.HasPrefix(s.admin, "https://") {
		t.Fatalf("admin at %s", s.admin)
	}
	b := newBrowser(t)
	within(t, b, 20*time.Second, "open the dashboard", chromedp.Navigate(s.admin+"/"))
	if proto := within(t, b, 5*time.Second, "read the protocol", chromedp.Evaluate[string](`location.protocol`)); proto != "https:" {
		t.Fatalf("page over %s", proto)
	}
	if shown := within(t, b, 5*time.Second, "the user field", chromedp.Evaluate[bool](`!document.getElementById("login-user-row").hidden`)); shown {
		t.Fatal("a token login asks for a user")
	}
	signIn(t, b, "", token)
	within(t, b, 10*time.Second, "the table after signing in",
		chromedp.Poll[bool](fmt.Sprintf(`(rows => rows.length === 2 && rows.every(r => r.State === "ready"))(%s)`, rowsJS),
			chromedp.WithPollingInterval(50*time.Millisecond)))
	within(t, b, 10*time.Second, "the event stream to connect",
		chromedp.Poll[bool](`document.getElementById("stream").classList.contains("on")`, chromedp.WithPollingInterval(50*time.Millisecond)))
	if errs := b.errors(); len(errs) > 0 {
		t.Fatalf("browser console errors:\n%s", strings.Join(errs, "\n"))
	}
}
