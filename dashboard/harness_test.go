package dashboard

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/prefork/prefork/internal/control"
	"github.com/prefork/prefork/internal/proctest"
)

var supervisorBin, workerBin string

func TestMain(m *testing.M) {
	// Built in the main module, with its go.mod and go.sum, as `make
	// build` builds them.
	supervisorBin = proctest.MustBuild("./cmd/supervisor")
	workerBin = proctest.MustBuild("./cmd/worker")
	os.Exit(proctest.Run(m))
}

// supervisor is one supervisor process with its admin listener.
type supervisor struct {
	*proctest.Proc
	admin  string // http://HOST:PORT, or https://
	listen string // the workers' HOST:PORT
	auth   string // the Authorization header its API wants; "" for none
}

// launch is how startSupervisorWith starts a supervisor.
type launch struct {
	https bool   // the flags give -admin-tls-cert and -admin-tls-key
	auth  string // the flags give -admin-auth: the Authorization header to send
}

// startSupervisor runs the supervisor with workers demo workers and -admin
// on a free port, and waits until every worker is ready. It stops it (and
// so its workers) when the test ends, and fails the test unless it exits
// 0 within 15s of SIGTERM.
func startSupervisor(t *testing.T, workers int, flags ...string) *supervisor {
	t.Helper()
	return startSupervisorWith(t, workers, launch{}, flags...)
}

// startSupervisorWith is startSupervisor with TLS or authentication on
// the admin listener, as l says.
func startSupervisorWith(t *testing.T, workers int, l launch, flags ...string) *supervisor {
	t.Helper()
	admin, listen := proctest.FreeAddr(t), proctest.FreeAddr(t)
	args := append([]string{"-listen", listen, "-workers", strconv.Itoa(workers), "-admin", admin,
		"-control", "none", "-grace", "5s", "-log-format", "json"}, flags...)
	scheme := "http://"
	if l.https {
		scheme = "https://"
	}
	s := &supervisor{Proc: proctest.Start(t, exec.Command(supervisorBin, append(args, "--", workerBin)...)),
		admin: scheme + admin, listen: listen, auth: l.auth}
	t.Cleanup(func() {
		s.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.Done():
			if code := s.ExitCode(); code != 0 {
				t.Errorf("supervisor exited with status %d", code)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("supervisor did not stop within 15s of SIGTERM")
		}
	})
	proctest.Eventually(t, 20*time.Second, fmt.Sprintf("%d ready workers", workers), func() bool {
		if !s.Running() {
			t.Fatalf("supervisor exited with status %d", s.ExitCode())
		}
		st, err := s.status()
		return err == nil && ready(st) == workers
	})
	return s
}

// client trusts any certificate: the tests' are made on the spot.
var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
}}

// get GETs path on the admin listener, with the credential if it wants one.
func (s *supervisor) get(path string) (*http.Response, error) {
	req, err := http.NewRequest("GET", s.admin+path, nil)
	if err != nil {
		return nil, err
	}
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	return client.Do(req)
}

func (s *supervisor) status() (*control.Status, error) {
	resp, err := s.get("/api/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s", resp.Status)
	}
	var st control.Status
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

func ready(st *control.Status) int {
	n := 0
	for _, w := range st.Workers {
		if w.State == control.StateReady {
			n++
		}
	}
	return n
}

// browser is one headless Chromium tab, and what the page wrote to its
// console.
type browser struct {
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
	dialogs []string // messages of the dialogs the page opened, all accepted
}

func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium on PATH: install it (Debian: apt-get install chromium); make test-deps does")
	return ""
}

// newBrowser starts headless Chromium; it is stopped, its temporary
// profile removed, when the test ends (before the supervisor stops, so the
// page does not see the supervisor go).
func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), // a container's /dev/shm is small
		// The TLS test's certificate is made on the spot, trusted by no one.
		chromedp.Flag("ignore-certificate-errors", true),
		// Chromium leaves org.chromium.Chromium.* (its singleton socket)
		// in TMPDIR: keep it in the test's own directory, removed after.
		chromedp.Env("TMPDIR="+t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	console := chromedp.Console(ctx) // starts the browser
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	// A confirm() blocks the page, and the click that opened it, until it
	// is answered: a goroutine of its own accepts each one.
	dialogs := chromedp.Events(ctx, pageDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			acceptDialog(ctx)
		}
	}()
	return b
}

// errors returns the console's errors and uncaught exceptions so far.
func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []string
	for _, m := range b.console {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			errs = append(errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
		}
	}
	return errs
}

func (b *browser) dialogMessages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// within runs a with a deadline of d.
func within[T any](t *testing.T, b *browser, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// row is a line of the dashboard's worker table.
type row struct {
	Slot, PID, Generation int
	State                 string
}

const rowsJS = `[...document.querySelectorAll('#workers tbody tr')].map(tr => ({
	Slot: +tr.dataset.slot, PID: +tr.dataset.pid, Generation: +tr.dataset.generation, State: tr.dataset.state}))`
