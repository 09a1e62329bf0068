package dashboard

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/prefork/prefork/internal/control"
)

var supervisorBin, workerBin string

func TestMain(m *testing.M) { os.Exit(buildAndRun(m)) }

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "prefork-dashboard-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	supervisorBin, workerBin = filepath.Join(dir, "supervisor"), filepath.Join(dir, "worker")
	for _, b := range []struct{ out, pkg string }{
		{supervisorBin, "./cmd/supervisor"},
		{workerBin, "./cmd/worker"},
	} {
		// Built in the main module, with its go.mod and go.sum, as
		// `make build` builds them.
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = ".."
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", b.pkg, err)
			return 1
		}
	}
	return m.Run()
}

// lockedBuffer collects a process's output from its copying goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// supervisor is one supervisor process with its admin listener.
type supervisor struct {
	admin  string // http://HOST:PORT, or https://
	listen string // the workers' HOST:PORT
	auth   string // the Authorization header its API wants; "" for none
	out    *lockedBuffer
	pid    int
}

// launch is how startSupervisorWith starts a supervisor.
type launch struct {
	https bool   // the flags give -admin-tls-cert and -admin-tls-key
	auth  string // the flags give -admin-auth: the Authorization header to send
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startSupervisor runs the supervisor with workers demo workers and -admin
// on a free port, and waits until every worker is ready. It stops it (and
// so its workers) when the test ends.
func startSupervisor(t *testing.T, workers int, flags ...string) *supervisor {
	t.Helper()
	return startSupervisorWith(t, workers, launch{}, flags...)
}

// startSupervisorWith is startSupervisor with TLS or authentication on
// the admin listener, as l says.
func startSupervisorWith(t *testing.T, workers int, l launch, flags ...string) *supervisor {
	t.Helper()
	admin, listen := freeAddr(t), freeAddr(t)
	args := append([]string{"-listen", listen, "-workers", strconv.Itoa(workers), "-admin", admin,
		"-control", "none", "-grace", "5s", "-log-format", "json"}, flags...)
	cmd := exec.Command(supervisorBin, append(args, "--", workerBin)...)
	scheme := "http://"
	if l.https {
		scheme = "https://"
	}
	s := &supervisor{admin: scheme + admin, listen: listen, auth: l.auth, out: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	// Should the test binary die, the supervisor (and with it its
	// workers, through their own Pdeathsig) goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("supervisor exited with %v; output:\n%s", err, s.out)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("supervisor did not stop within 15s of SIGTERM; output:\n%s", s.out)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := s.status(); err == nil && ready(st) == workers {
			return s
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("supervisor exited (%v); output:\n%s", err, s.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers not ready within 20s; output:\n%s", workers, s.out)
		}
	}
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
