package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/proctest"
)

// endpoint is one of a supervisor's listeners as a client reaches it.
type endpoint struct {
	name   string
	base   string // http://HOST:PORT, or http://unix for a socket file
	unix   bool
	client func(keepAlive bool) *http.Client
}

func tcpEndpoint(name, addr string) endpoint {
	return endpoint{name: name, base: "http://" + addr, client: func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}}
	}}
}

func unixEndpoint(name, path string) endpoint {
	return endpoint{name: name, base: "http://unix", unix: true, client: func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			}}}
	}}
}

// mixedLoadOn is startMixedLoad on every endpoint: one keep-alive and one
// new-connection client each.
func mixedLoadOn(t testing.TB, eps []endpoint) *mixedLoad {
	m := &mixedLoad{clients: newClients()}
	for _, ep := range eps {
		for _, keep := range []bool{true, false} {
			m.loop(ep.client(keep), ep.base+"/pid", ep.name)
		}
	}
	t.Cleanup(m.finish)
	return m
}

// checkListeners: every endpoint's /pid reaches both workers, spread
// evenly in rr, and about evenly on a reuseport group (the kernel hashes
// each new connection to one of its two sockets: a split worse than 8 to
// 32 comes once in 24,000 checks), and its /health names the listener
// that answered.
func checkListeners(t *testing.T, mode string, eps []endpoint) {
	t.Helper()
	for _, ep := range eps {
		c := ep.client(false)
		count := map[string]int{}
		get := func() {
			resp, err := c.Get(ep.base + "/pid")
			if err != nil {
				t.Fatalf("%s: %v", ep.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			count[string(b)]++
		}
		for range 40 {
			get()
		}
		// A socket every worker accepts on (shared mode, and a Unix
		// socket in reuseport) is balanced by the kernel, which wakes
		// every idle worker and lets the first to accept win: one after
		// another, 40 connections can all go to one worker (seen after a
		// kill, with the respawned worker taking all 40). That each
		// worker accepts there is still checked, with more connections,
		// within a bound.
		if len(count) < 2 && (mode == "shared" || mode == "reuseport" && ep.unix) {
			for i := 0; i < 400 && len(count) < 2; i++ {
				get()
			}
		}
		if len(count) != 2 {
			t.Errorf("%s: /pid answered by %v, want both workers", ep.name, count)
		}
		for pid, n := range count {
			if mode == "rr" && (n < 15 || n > 25) {
				t.Errorf("%s: worker %s answered %d of 40, want about 20 (rr)", ep.name, pid, n)
			}
			if mode == "reuseport" && !ep.unix && (n < 8 || n > 32) {
				t.Errorf("%s: worker %s answered %d of 40, want about 20 (a reuseport group)", ep.name, pid, n)
			}
		}
		resp, err := c.Get(ep.base + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var h struct{ Listener string }
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if h.Listener != ep.name {
			t.Errorf("%s: /health says listener %q", ep.name, h.Listener)
		}
	}
}

// TestSeveralListeners: two TCP ports and a Unix socket, served by Go
// workers in rr, shared and reuseport mode (two SO_REUSEPORT groups and
// the Unix socket shared): each balanced over both workers and named in
// /health; a reload and an in-place upgrade under load on all three fail
// nothing; the socket file goes with a clean stop, and is not replaced
// while the supervisor serves it.
func TestSeveralListeners(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			api := proctest.FreeAddr(t)
			sockPath := filepath.Join(t.TempDir(), "app.sock")
			maddr := proctest.FreeAddr(t)
			s := startBin(t, v1, "-mode", mode, "-workers", "2", "-listen", "api="+api, "-listen", "web=unix:"+sockPath, "-listen-mode", "0660", "-metrics", maddr)
			eps := []endpoint{tcpEndpoint(s.addr, s.addr), tcpEndpoint("api", api), unixEndpoint("web", sockPath)}
			checkListeners(t, mode, eps)
			if mode == "rr" { // each listener's accepts, counted apart: 41 new connections each
				for _, ep := range eps {
					n := scrape(t, "http://"+maddr+"/metrics", "prefork_connections_accepted_total", `listener="`+ep.name+`"`)
					if n < 41 || (n != 41 && ep.name != s.addr) {
						t.Errorf("prefork_connections_accepted_total{listener=%q} = %v, want 41", ep.name, n)
					}
				}
			}
			if out, _ := s.uctl("status"); !strings.Contains(out, " listener=api="+api+" listener=web=unix:"+sockPath) {
				t.Errorf("ctl status does not name the listeners:\n%s", out)
			}
			if fi, err := os.Stat(sockPath); err != nil || fi.Mode().Perm() != 0o660 {
				t.Errorf("socket file %v (%v), want mode 0660", fi, err)
			}

			// Another server cannot take the path while it is served.
			other := exec.Command(supervisorBin, "-listen", "unix:"+sockPath, "-control", "none", "-workers", "1")
			if out, err := other.CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(out), "another server is listening on it") {
				t.Errorf("a second server on the socket path: exit %d: %s", exitCode(err), out)
			}

			checkKillOnListeners(t, s, mode, eps, []int{port(t, s.addr), port(t, api)})
			if mode == "reuseport" { // every listener shows, with what a vacant slot's sockets had queued
				for _, ep := range eps {
					n := scrape(t, "http://"+maddr+"/metrics", "prefork_connections_accepted_total", `listener="`+ep.name+`"`)
					t.Logf("prefork_connections_accepted_total{listener=%q} = %v after the kill", ep.name, n)
				}
			}

			load := mixedLoadOn(t, eps)
			load.waitOK(t, 100, 10*time.Second)
			if mode != "shared" {
				// A release whose restore leaves "web" out is refused by
				// its rehearsal, naming it, and the old image serves on.
				drops := buildDropping(t, "web")
				if out, code := s.uctl("upgrade", drops); code == 0 || !strings.Contains(out, `would drop listener "web"`) {
					t.Errorf("ctl upgrade to a binary that drops web: exit %d: %s", code, out)
				}
				load.waitOK(t, 100, 10*time.Second)
			}
			if out, code := s.uctl("reload"); code != 0 {
				t.Fatalf("ctl reload: exit %d: %s", code, out)
			}
			load.waitOK(t, 100, 10*time.Second)
			if out, code := s.uctl("upgrade", v2); code != 0 || !strings.Contains(out, "upgraded from v1 to v2") {
				t.Fatalf("ctl upgrade: exit %d: %s", code, out)
			}
			load.waitOK(t, 100, 10*time.Second)
			load.check(t)
			checkListeners(t, mode, eps) // the new image serves them all

			s.uctlStop(t)
			if _, err := os.Lstat(sockPath); !os.IsNotExist(err) {
				t.Errorf("socket file after a clean stop: %v", err)
			}
		})
	}
}

// TestListenersRefused: bad listeners exit 1 or 2 with one line naming
// the listener, and leave nothing bound.
func TestListenersRefused(t *testing.T) {
	dir := t.TempDir()
	notSock := filepath.Join(dir, "file")
	os.WriteFile(notSock, []byte("x"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := proctest.FreeAddr(t)
	regular, err := os.Open(notSock)
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-listen", free, "-listen", free}, 2, `duplicate address`},
		{[]string{"-listen", free, "-listen", "unix:" + dir + "/no/app.sock"}, 1, `listener unix:` + dir + `/no/app.sock: listen unix ` + dir + `/no/app.sock: bind: no such file or directory`},
		{[]string{"-listen", free, "-listen", "web=unix:" + notSock}, 1, `listener "web" (unix:` + notSock + `): ` + notSock + ` exists and is not a socket`},
		{[]string{"-listen", free, "-listen", "fd:3"}, 1, `listener fd:3: descriptor 3 is not a listening socket`},
		{[]string{"-listen", free, "-listen", "api=" + busy.Addr().String()}, 1, `listener "api" (` + busy.Addr().String() + `): listen tcp ` + busy.Addr().String() + `: bind: address already in use`},
	} {
		for _, mode := range []string{"rr", "reuseport"} { // reuseport binds a group for each TCP listener
			args := append(tc.args, "-control", "none", "-workers", "2", "-mode", mode)
			cmd := exec.Command(supervisorBin, args...)
			cmd.ExtraFiles = []*os.File{regular} // fd 3: a file, not a socket
			out, err := cmd.CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if code := exitCode(err); code != tc.code || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("%v: exit %d, output:\n%s\nwant exit %d and one line with %q", args, code, out, tc.code, tc.want)
			}
			// Nothing left bound: the first listener's port binds again.
			ln, err := net.Listen("tcp", free)
			if err != nil {
				t.Errorf("%v: %s still bound: %v", args, free, err)
				continue
			}
			ln.Close()
		}
	}
	if _, err := os.Stat(notSock); err != nil {
		t.Errorf("the regular file at the socket path is gone: %v", err)
	}
}

// TestGunicornTwoSockets: gunicorn as a systemd-protocol worker takes a
// TCP port and a Unix socket (LISTEN_FDS=2) and serves both, in shared
// and in reuseport mode (its slot's socket of the port's group).
func TestGunicornTwoSockets(t *testing.T) {
	gunicorn := need(t, "/usr/bin/gunicorn", "gunicorn")
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mostly waits for its gunicorns
			api := proctest.FreeAddr(t)
			sockPath := filepath.Join(t.TempDir(), "g.sock")
			s := startReady(t, "-workers", "2", "-mode", mode, "-worker-protocol", "systemd", "-grace", "10s",
				"-listen", "api="+api, "-listen", "web=unix:"+sockPath, "--",
				gunicorn, "--workers", "1", "--chdir", testdata(t, "."), "pid_app:app")
			for _, ep := range []endpoint{tcpEndpoint(s.addr, s.addr), tcpEndpoint("api", api), unixEndpoint("web", sockPath)} {
				pids := map[string]bool{}
				c := ep.client(false)
				proctest.Eventually(t, 10*time.Second, ep.name+" served by both workers", func() bool {
					resp, err := c.Get(ep.base + "/")
					if err != nil {
						t.Fatalf("%s: %v", ep.name, err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("%s: status %d", ep.name, resp.StatusCode)
					}
					pids[string(b)] = true
					return len(pids) == 2
				})
			}
		})
	}
}

// buildDropping builds the supervisor (with its worker beside it) so that
// its restore leaves the listener name out, as a release that lost it.
func buildDropping(t *testing.T, name string) string {
	t.Helper()
	const pkg = "github.com/prefork/prefork/internal/supervisor"
	path, err := proctest.Build("./cmd/supervisor", "-race", "-ldflags=-X "+pkg+".Version=v2-drops -X "+pkg+".dropListener="+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(workerBin, filepath.Join(filepath.Dir(path), "worker")); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	return path
}
