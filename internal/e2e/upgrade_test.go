package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/fdtest"
	"github.com/prefork/prefork/internal/proctest"
)

// The in-place upgrade (`ctl upgrade`, SIGUSR2): the supervisor re-executes
// itself as another build, keeping its pid, its workers and its sockets.

// upgradeBins are supervisors built with different versions: v1, v2, and
// badRestore, a build whose restore of an upgrade's state fails; each has
// the worker linked beside it, its default command.
var upgradeBins struct {
	v1, v2, badRestore string
	loses              string // v1 that kills a worker just before its execve
	ctl                string // for ctl commands, built without -race
}

func buildUpgradeBins(t *testing.T) (v1, v2, badRestore string) {
	t.Helper()
	const pkg = "github.com/prefork/prefork/internal/supervisor"
	b := &upgradeBins
	for _, x := range []struct {
		path  *string
		flags []string
	}{
		{&b.v1, []string{"-race", "-ldflags=-X " + pkg + ".Version=v1"}},
		{&b.v2, []string{"-race", "-ldflags=-X " + pkg + ".Version=v2"}},
		{&b.badRestore, []string{"-race", "-ldflags=-X " + pkg + ".Version=v3-broken -X " + pkg + ".failRestore=test"}},
		{&b.loses, []string{"-race", "-ldflags=-X " + pkg + ".Version=v1 -X " + pkg + ".loseWorker=test"}},
		{&b.ctl, nil},
	} {
		path, err := proctest.Build("./cmd/supervisor", x.flags...)
		if err != nil {
			t.Fatal(err)
		}
		*x.path = path
		if x.path == &b.ctl {
			continue // in the directory of the plain builds, with their worker
		}
		// Its directory is proctest's for these flags and these sources:
		// the link is the same for every test binary that makes it.
		if err := os.Symlink(workerBin, filepath.Join(filepath.Dir(path), "worker")); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Fatal(err)
		}
	}
	return b.v1, b.v2, b.badRestore
}

// startBin starts the supervisor binary bin as start does.
func startBin(t *testing.T, bin string, args ...string) *sup {
	t.Helper()
	addr := proctest.FreeAddr(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(bin, append([]string{"-listen", addr, "-log-format", "json", "-control", ctl}, args...)...)
	s := adopt(t, cmd, addr, ctl)
	s.waitReady(10 * time.Second)
	return s
}

// upgradeStatus is what the upgrade tests read of ctl status -json.
type upgradeStatus struct {
	PID         int     `json:"pid"`
	Version     string  `json:"version"`
	Upgrades    int     `json:"upgrades"`
	AcceptGapMS float64 `json:"accept_gap_ms"`
	Workers     []struct {
		Slot  int    `json:"slot"`
		PID   int    `json:"pid"`
		State string `json:"state"`
	} `json:"workers"`
}

// uctlStop stops the supervisor with ctl stop and checks it exits 0.
func (s *sup) uctlStop(t *testing.T) {
	t.Helper()
	if out, code := s.uctl("stop"); code != 0 {
		t.Fatalf("ctl stop: exit %d: %s", code, out)
	}
	if code := s.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d after stop", code)
	}
}

// uctl is s.ctl through a build without the race detector, whose exit
// takes a second (GORACE atexit_sleep_ms).
func (s *sup) uctl(args ...string) (string, int) {
	s.t.Helper()
	out, err := exec.Command(upgradeBins.ctl, append([]string{"ctl", "-control", s.ctlPath}, args...)...).CombinedOutput()
	return string(out), exitCode(err)
}

func (s *sup) upgradeStatus() upgradeStatus {
	s.t.Helper()
	out, code := s.uctl("-json", "status")
	if code != 0 {
		s.t.Fatalf("ctl status: exit %d: %s", code, out)
	}
	var st upgradeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("ctl status -json: %v: %s", err, out)
	}
	return st
}

func (st upgradeStatus) workerPIDs() []int {
	var pids []int
	for _, w := range st.Workers {
		pids = append(pids, w.PID)
	}
	slices.Sort(pids)
	return pids
}

// checkKept fails unless after is the same supervisor process with the
// same workers as before, running version.
func checkKept(t *testing.T, s *sup, before, after upgradeStatus, version string, upgrades int) {
	t.Helper()
	if after.PID != s.PID() || before.PID != after.PID {
		t.Errorf("supervisor pid: before %d, after %d, process %d", before.PID, after.PID, s.PID())
	}
	if !slices.Equal(before.workerPIDs(), after.workerPIDs()) {
		t.Errorf("worker pids: before %v, after %v", before.workerPIDs(), after.workerPIDs())
	}
	if after.Version != version || after.Upgrades != upgrades {
		t.Errorf("after: version %q, upgrades %d; want %q, %d", after.Version, after.Upgrades, version, upgrades)
	}
	if kids := s.Children(); !slices.Equal(sorted(kids), after.workerPIDs()) {
		t.Errorf("children of the supervisor %v, want its workers %v", kids, after.workerPIDs())
	}
}

// upgradeUnderLoad starts mixed load on s, a v1, and once it is served
// upgrades s to bin, a v2. It returns the status before, the load and
// ctl's answer.
func upgradeUnderLoad(t *testing.T, s *sup, bin string) (upgradeStatus, *mixedLoad, string) {
	t.Helper()
	before := s.upgradeStatus()
	load := startMixedLoad(t, s.url("/pid"), 2, 2)
	load.waitOK(t, 50, 10*time.Second)
	out, code := s.uctl("upgrade", bin)
	if code != 0 || !strings.Contains(out, "upgraded from v1 to v2") {
		t.Fatalf("ctl upgrade: exit %d: %s", code, out)
	}
	return before, load, out
}

func TestUpgradeUnderLoad(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	for _, mode := range []string{"rr", "shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			s := startBin(t, v1, "-mode", mode, "-workers", "2")
			before, load, out := upgradeUnderLoad(t, s, v2)
			load.waitOK(t, 50, 10*time.Second)
			load.check(t)
			after := s.upgradeStatus()
			checkKept(t, s, before, after, "v2", 1)
			t.Logf("%s: %s", mode, strings.TrimSpace(out))
		})
	}
}

// TestUpgradeWorkerLost: a worker that dies while the supervisor
// re-executes itself (its exit reaped by the old image, never seen by the
// new one) is respawned by the new image, which keeps the other worker and
// keeps serving, rather than failing to adopt it and taking every worker
// down, or waiting forever for a spawn nobody serves.
func TestUpgradeWorkerLost(t *testing.T) {
	_, v2, _ := buildUpgradeBins(t)
	s := startBin(t, upgradeBins.loses, "-workers", "2")
	before, load, _ := upgradeUnderLoad(t, s, v2)
	var after upgradeStatus
	proctest.Eventually(t, 10*time.Second, "two ready workers, one of them new", func() bool {
		o, c := s.uctl("-json", "status")
		if c != 0 || json.Unmarshal([]byte(o), &after) != nil || len(after.Workers) != 2 {
			return false
		}
		for _, w := range after.Workers {
			if w.State != "ready" {
				return false
			}
		}
		return true
	})
	if after.Version != "v2" || after.PID != before.PID {
		t.Errorf("after: version %s, pid %d; want v2, pid %d", after.Version, after.PID, before.PID)
	}
	kept := 0
	for _, pid := range after.workerPIDs() {
		if slices.Contains(before.workerPIDs(), pid) {
			kept++
		}
	}
	if kept != 1 {
		t.Errorf("workers before %v, after %v: want one kept and one new", before.workerPIDs(), after.workerPIDs())
	}
	load.waitOK(t, 50, 10*time.Second) // serving on: the killed worker's own requests may fail
	load.finish()
	s.uctlStop(t)
}

// TestUpgradeSignal: SIGUSR2 upgrades to the binary the supervisor was
// started from, here replaced on disk by v2 (as a package upgrade does).
func TestUpgradeSignal(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	bin := filepath.Join(t.TempDir(), "supervisor")
	copyFile(t, v1, bin, 0o755)
	// Its default worker is beside it.
	os.Symlink(workerBin, filepath.Join(filepath.Dir(bin), "worker"))
	s := startBin(t, bin, "-workers", "2")
	before := s.upgradeStatus()
	tmp := bin + ".new"
	copyFile(t, v2, tmp, 0o755)
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGUSR2)
	var after upgradeStatus
	proctest.Eventually(t, 10*time.Second, "version v2 after SIGUSR2", func() bool {
		out, code := s.uctl("-json", "status")
		return code == 0 && json.Unmarshal([]byte(out), &after) == nil && after.Version == "v2"
	})
	checkKept(t, s, before, after, "v2", 1)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeBrokenBinary: a binary that is not executable, exits at once
// or fails the check is refused; the old version keeps serving.
func TestUpgradeBrokenBinary(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	copyFile(t, v2, notExec, 0o644)
	exits := filepath.Join(dir, "exits")
	os.WriteFile(exits, []byte("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n"), 0o755)
	foreign := filepath.Join(dir, "foreign")
	os.WriteFile(foreign, []byte("#!/bin/sh\necho hello\n"), 0o755)

	s := startBin(t, v1, "-workers", "2")
	before := s.upgradeStatus()
	load := startMixedLoad(t, s.url("/pid"), 1, 1)
	for _, c := range []struct{ path, want string }{
		{notExec, "is not executable"},
		{exits, "cannot start"},
		{foreign, "is not a prefork supervisor"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		out, code := s.uctl("upgrade", c.path)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("ctl upgrade %s: exit %d, want 1 with %q: %s", filepath.Base(c.path), code, c.want, out)
		}
	}
	load.waitOK(t, 20, 10*time.Second)
	load.check(t)
	checkKept(t, s, before, s.upgradeStatus(), "v1", 0)
}

// TestUpgradeRollback: a binary that passes the check but cannot restore
// the state rolls back to the previous one, which answers with the reason.
func TestUpgradeRollback(t *testing.T) {
	v1, _, bad := buildUpgradeBins(t)
	s := startBin(t, v1, "-workers", "2")
	before := s.upgradeStatus()
	load := startMixedLoad(t, s.url("/pid"), 2, 2)
	load.waitOK(t, 50, 10*time.Second)
	out, code := s.uctl("upgrade", bad)
	if code != 1 || !strings.Contains(out, "restore fails in this build") || !strings.Contains(out, "rolled back to v1") {
		t.Fatalf("ctl upgrade: exit %d, want 1 with the reason and the rollback: %s", code, out)
	}
	load.waitOK(t, 50, 10*time.Second)
	load.check(t)
	checkKept(t, s, before, s.upgradeStatus(), "v1", 0)
}

// TestUpgradeRollbackPathReplaced: the release that fails to restore was
// installed over the running binary's path (then SIGUSR2, as a package
// upgrade does it): the rollback runs the previous binary's own file,
// kept open, not what its path holds now.
func TestUpgradeRollbackPathReplaced(t *testing.T) {
	v1, _, bad := buildUpgradeBins(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "supervisor")
	copyFile(t, v1, bin, 0o755)
	os.Symlink(workerBin, filepath.Join(dir, "worker"))
	s := startBin(t, bin, "-workers", "2")
	before := s.upgradeStatus()
	copyFile(t, bad, bin+".new", 0o755)
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGUSR2)
	if _, ok := s.Out.WaitJSON(10*time.Second, func(m map[string]any) bool { return m["msg"] == "upgrade rolled back" }); !ok {
		t.Fatal("no rollback within 10s")
	}
	after := s.upgradeStatus()
	checkKept(t, s, before, after, "v1", 0)
	if code, body, err := s.get("/pid"); err != nil || code != 200 {
		t.Fatalf("after the rollback: %d %q %v", code, body, err)
	}
}

// TestUpgradeNoLeak: three upgrades in a row, then a stop, leave the
// supervisor with the descriptors it had (the metrics listener's among
// them), and a worker started after them with as many as one started
// before.
func TestUpgradeNoLeak(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	metricsAddr, adminAddr := proctest.FreeAddr(t), proctest.FreeAddr(t)
	s := startBin(t, v1, "-mode", "rr", "-workers", "2", "-metrics", metricsAddr, "-admin", adminAddr)
	pid := s.PID()
	adminSocket := listenInode(t, adminAddr)
	fds := func() int {
		n, err := fdtest.Count(pid)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The harness's event subscription ends with the first upgrade (its
	// connection is not kept): end it now, and count without it.
	subscribed := fds()
	s.events.Stop()
	proctest.Eventually(t, 5*time.Second, "the event subscription's connection closed", func() bool { return fds() == subscribed-1 })
	want := fds()
	wantList, _ := fdtest.List(pid)
	before := s.upgradeStatus()
	for i, bin := range []string{v2, v1, v2} {
		if out, code := s.uctl("upgrade", bin); code != 0 {
			t.Fatalf("upgrade %d: exit %d: %s", i+1, code, out)
		}
	}
	after := s.upgradeStatus()
	checkKept(t, s, before, after, "v2", 3)
	// The metrics listener still serves (and is counted above).
	if err := fetch(s.client, "http://"+metricsAddr+"/metrics"); err != nil {
		t.Errorf("metrics after the upgrades: %v", err)
	}
	// So does the admin listener, on the very socket it had: kept, not
	// bound again (which would refuse connections in between).
	if err := fetch(s.client, "http://"+adminAddr+"/api/status"); err != nil {
		t.Errorf("admin listener after the upgrades: %v", err)
	}
	if got := listenInode(t, adminAddr); got != adminSocket {
		t.Errorf("admin listener is socket %s after the upgrades, was %s: bound again, not kept", got, adminSocket)
	}
	// Transient descriptors (a ctl connection being closed) settle.
	have := fds()
	for deadline := time.Now().Add(5 * time.Second); have != want && time.Now().Before(deadline); have = fds() {
		time.Sleep(10 * time.Millisecond)
	}
	if have != want {
		list, _ := fdtest.List(pid)
		t.Fatalf("supervisor has %d descriptors after 3 upgrades, had %d:\n%s\nbefore:\n%s", have, want, strings.Join(list, "\n"), strings.Join(wantList, "\n"))
	}
	// A worker started now must inherit none of the kept descriptors.
	kept := after.Workers[0].PID
	syscall.Kill(after.Workers[1].PID, syscall.SIGKILL)
	var fresh int
	proctest.Eventually(t, 10*time.Second, "a respawned worker ready", func() bool {
		for _, w := range s.upgradeStatus().Workers {
			if w.PID != kept && w.PID != after.Workers[1].PID && w.State == "ready" {
				fresh = w.PID
				return true
			}
		}
		return false
	})
	nk, _ := fdtest.Count(kept)
	nf, _ := fdtest.Count(fresh)
	if nf != nk {
		list, _ := fdtest.List(fresh)
		t.Errorf("worker started after the upgrades has %d descriptors, one from before %d:\n%s", nf, nk, strings.Join(list, "\n"))
	}
	s.uctlStop(t)
}

// TestUpgradeSystemdNotify: under systemd the upgrade is a reload of the
// same main pid: RELOADING=1, then READY=1 from the new version, whose
// watchdog pings go on.
func TestUpgradeSystemdNotify(t *testing.T) {
	v1, v2, _ := buildUpgradeBins(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	// Read as systemd does, all the time, not only while the test waits
	// for a datagram: the supervisor drops what a full queue cannot take
	// (sdnotify.ErrQueueFull), so a receiver that stops reading during
	// the upgrade would lose READY=1.
	got := make(chan string, 4096)
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return // closed at the end of the test
			}
			select {
			case got <- string(buf[:n]):
			default: // more than 4096 unread: expect fails for what it misses
			}
		}
	}()
	defer func() { conn.Close(); <-read }()
	// expect takes datagrams until one has want, skipping watchdog pings
	// and status lines, for up to 15s.
	expect := func(want string) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			var msg string
			select {
			case msg = <-got:
			case <-timeout:
				t.Fatalf("no %s within 15s", want)
			}
			switch {
			case slices.Contains(strings.Split(msg, "\n"), want):
				return
			case strings.HasPrefix(msg, "WATCHDOG=1"), strings.HasPrefix(msg, "STATUS="):
			default:
				t.Fatalf("got %q while waiting for %s", msg, want)
			}
		}
	}
	addr := proctest.FreeAddr(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(v1, "-listen", addr, "-workers", "2", "-log-format", "json", "-control", ctl)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	s := adopt(t, cmd, addr, ctl)
	expect("READY=1")
	before := s.upgradeStatus()
	if out, code := s.uctl("upgrade", v2); code != 0 {
		t.Fatalf("ctl upgrade: exit %d: %s", code, out)
	}
	expect("RELOADING=1")
	expect("READY=1")
	expect("WATCHDOG=1")
	checkKept(t, s, before, s.upgradeStatus(), "v2", 1)
}

// listenInode is the inode of the socket listening at addr (127.0.0.1:PORT),
// from /proc/net/tcp.
func listenInode(t *testing.T, addr string) string {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", n)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) > 9 && f[1] == local && f[3] == "0A" {
			return f[9]
		}
	}
	t.Fatalf("nothing listens at %s", addr)
	return ""
}
