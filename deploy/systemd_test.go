package deploy

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// supervisorPath is where every artefact here installs the supervisor.
const supervisorPath = "/usr/local/bin/supervisor"

const (
	serviceFile = "systemd/prefork.service"
	socketFile  = "systemd/prefork.socket"
)

func loadUnit(t *testing.T, rel string) unit {
	t.Helper()
	u, err := parseUnit(string(readFile(t, rel)))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return u
}

// service is prefork.service with its ExecStart= parsed.
type service struct {
	unit
	argv   []string // ExecStart=
	cfg    settings // its flags over its -config file
	listen int      // listen port
	grace  time.Duration
}

func loadService(t *testing.T) *service {
	t.Helper()
	s := &service{unit: loadUnit(t, serviceFile)}
	starts := s.unit["Service"]["ExecStart"]
	if len(starts) != 1 {
		t.Fatalf("want one ExecStart=, have %d", len(starts))
	}
	s.argv = execArgs(starts[0])
	if s.argv[0] != supervisorPath {
		t.Fatalf("ExecStart runs %s, want %s", s.argv[0], supervisorPath)
	}
	s.cfg = loadSettings(t, s.argv[1:])
	listen, ok := s.cfg.get("listen")
	if !ok {
		t.Fatal("ExecStart and its -config set no listen (the default :3000 would not match the socket unit)")
	}
	var err error
	if s.listen, err = listenPort(listen); err != nil {
		t.Fatalf("%s %q: %v", s.cfg.where("listen"), listen, err)
	}
	g, ok := s.cfg.get("grace")
	if !ok {
		t.Fatal("ExecStart and its -config set no grace; TimeoutStopSec= must be sized against it")
	}
	if s.grace, err = time.ParseDuration(g); err != nil {
		t.Fatalf("%s %q: %v", s.cfg.where("grace"), g, err)
	}
	return s
}

// want checks that a single-valued setting has one of the given values.
func (s *service) want(t *testing.T, section, key string, values ...string) {
	t.Helper()
	have, ok := s.get(section, key)
	if !ok {
		t.Errorf("[%s] %s= unset, want %s", section, key, strings.Join(values, " or "))
		return
	}
	if !slices.Contains(values, have) {
		t.Errorf("[%s] %s=%s, want %s", section, key, have, strings.Join(values, " or "))
	}
}

func (s *service) timespan(t *testing.T, key string) time.Duration {
	t.Helper()
	v, ok := s.get("Service", key)
	if !ok {
		t.Fatalf("%s= unset", key)
	}
	d, err := parseTimespan(v)
	if err != nil {
		t.Fatalf("%s=%s: %v", key, v, err)
	}
	return d
}

func TestServiceUnit(t *testing.T) {
	s := loadService(t)

	typ, _ := s.get("Service", "Type")
	if !strings.HasPrefix(typ, "notify") {
		t.Errorf("Type=%s: want notify or notify-reload (the supervisor reports READY=1)", typ)
	}
	s.want(t, "Service", "NotifyAccess", "main")
	if reload, ok := s.get("Service", "ExecReload"); ok || typ != "notify-reload" {
		argv := execArgs(reload)
		if len(argv) == 0 || path.Base(argv[0]) != "kill" ||
			!slices.ContainsFunc(argv, func(a string) bool { return a == "-HUP" || a == "-SIGHUP" || a == "-1" }) ||
			argv[len(argv)-1] != "$MAINPID" {
			t.Errorf("ExecReload=%s: want kill -HUP $MAINPID (SIGHUP is the rolling reload)", reload)
		}
	}

	// The socket unit's listener is one socket: reuseport mode cannot
	// split it into a group of per-worker sockets and serves it as in
	// shared mode, so a unit asking for reuseport would not get it.
	if mode, ok := s.cfg.get("mode"); ok && mode != "rr" && mode != "shared" {
		t.Errorf("%s %s cannot group the socket unit's listener (it is served as in shared mode): say shared", s.cfg.where("mode"), mode)
	}

	s.want(t, "Service", "KillMode", "mixed")
	if sig, ok := s.get("Service", "KillSignal"); ok && sig != "SIGTERM" && sig != "TERM" {
		t.Errorf("KillSignal=%s: the supervisor drains on SIGTERM", sig)
	}
	if stop := s.timespan(t, "TimeoutStopSec"); stop < s.grace+drainMargin {
		t.Errorf("TimeoutStopSec=%v < %s %v + %v: systemd would SIGKILL workers mid-drain", stop, s.cfg.where("grace"), s.grace, drainMargin)
	}
	if rt, ok := s.cfg.get("ready-timeout"); ok {
		d, err := time.ParseDuration(rt)
		if err != nil {
			t.Fatalf("%s %q: %v", s.cfg.where("ready-timeout"), rt, err)
		}
		if start := s.timespan(t, "TimeoutStartSec"); start < d {
			t.Errorf("TimeoutStartSec=%v < %s %v", start, s.cfg.where("ready-timeout"), d)
		}
	}
	s.want(t, "Service", "Restart", "on-failure")

	if user, ok := s.get("Service", "User"); !ok || user == "root" || user == "0" {
		t.Errorf("User=%s: want an unprivileged user", user)
	}
	s.want(t, "Service", "RuntimeDirectory", "prefork")
	if ctl, ok := s.cfg.get("control"); ok && !strings.HasPrefix(ctl, "/run/prefork/") {
		t.Errorf("%s %s is outside RuntimeDirectory=prefork (/run/prefork), the only writable place", s.cfg.where("control"), ctl)
	}
	if v, _ := s.get("Service", "LimitNOFILE"); !atLeast(v, 65536) {
		t.Errorf("LimitNOFILE=%s: want at least 65536, one fd per connection", v)
	}

	t.Run("hardening", func(t *testing.T) {
		for key, values := range map[string][]string{
			"NoNewPrivileges": {"yes", "true"},
			"ProtectSystem":   {"strict"},
			"ProtectHome":     {"yes", "true", "read-only", "tmpfs"},
			"PrivateTmp":      {"yes", "true"},
		} {
			s.want(t, "Service", key, values...)
		}
		families := s.list("Service", "RestrictAddressFamilies")
		if len(families) > 0 && strings.HasPrefix(families[0], "~") {
			t.Errorf("RestrictAddressFamilies=%v is a deny list; want an allow list", families)
		}
		for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6"} {
			if !slices.Contains(families, f) {
				// AF_UNIX carries worker IPC and sd_notify; AF_INET(6) the traffic.
				t.Errorf("RestrictAddressFamilies=%v lacks %s", families, f)
			}
		}
		// These would cut the supervisor off from the socket it serves or
		// from the notify socket.
		for _, key := range []string{"PrivateNetwork", "PrivateUsers"} {
			if v, ok := s.get("Service", key); ok {
				if on, err := parseBool(v); err != nil || on {
					t.Errorf("%s=%s breaks socket activation or sd_notify", key, v)
				}
			}
		}
	})

	t.Run("pulls in the socket", func(t *testing.T) {
		socket := strings.TrimSuffix(path.Base(serviceFile), ".service") + ".socket"
		deps := append(s.list("Unit", "Requires"), s.list("Unit", "Wants")...)
		if !slices.Contains(deps, socket) {
			t.Errorf("neither Requires= nor Wants= names %s", socket)
		}
		if !slices.Contains(s.list("Unit", "After"), socket) {
			t.Errorf("After= does not name %s", socket)
		}
	})
}

// atLeast reports whether a systemd rlimit value ("N", "SOFT:HARD",
// "infinity") is at least n in its soft part.
func atLeast(v string, n int) bool {
	soft, _, _ := strings.Cut(v, ":")
	if soft == "infinity" {
		return true
	}
	have, err := strconv.Atoi(soft)
	return err == nil && have >= n
}

func TestSocketUnit(t *testing.T) {
	s := loadService(t)
	u := loadUnit(t, socketFile)

	if svc, _ := u.get("Socket", "Service"); svc != path.Base(serviceFile) {
		t.Errorf("Service=%s, want %s", svc, path.Base(serviceFile))
	}
	streams := u.list("Socket", "ListenStream")
	if len(streams) != 1 {
		t.Fatalf("want one ListenStream=, have %v", streams)
	}
	port, err := listenPort(streams[0])
	if err != nil {
		t.Fatalf("ListenStream=%s: %v", streams[0], err)
	}
	if port != s.listen {
		t.Errorf("ListenStream=%s, but ExecStart has -listen port %d", streams[0], s.listen)
	}
	if v, ok := u.get("Socket", "Accept"); ok {
		if on, err := parseBool(v); err != nil || on {
			t.Errorf("Accept=%s: the supervisor must get the listening socket, not one instance per connection", v)
		}
	}
	if !slices.Contains(u.list("Install", "WantedBy"), "sockets.target") {
		t.Error("[Install] WantedBy= lacks sockets.target")
	}
}

func TestSystemdAnalyze(t *testing.T) {
	// The parser checks above always run; this one needs the real tool.
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skipf("systemd-analyze not installed (%v); only the unit parser checks ran", err)
	}
	s := loadService(t)
	root := systemdRoot(t, s.unit)
	units := []string{path.Base(serviceFile), path.Base(socketFile)}

	t.Run("verify", func(t *testing.T) {
		// verify exits 0 on mere warnings such as an unknown key, so any
		// output at all is a failure.
		out, err := exec.Command(bin, append([]string{"verify", "--man=no", "--root=" + root}, units...)...).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	t.Run("security", func(t *testing.T) {
		if v := systemdVersion(t, bin); v < 250 {
			t.Skipf("systemd %d has no offline security review (needs 250)", v)
		}
		// Exposure is scored 0.0 (best) to 10.0; the threshold is in tenths.
		out, err := exec.Command(bin, "security", "--offline=yes", "--threshold=20", "--root="+root, units[0]).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security: exposure above 2.0 or error: %v\n%s", err, out)
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Log(lines[len(lines)-1])
	})
}

func systemdVersion(t *testing.T, bin string) int {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("unrecognised version %q", out)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

// systemdRoot builds a throw-away root for `systemd-analyze --root`: the
// units under etc/systemd/system, the distribution's unit directory for
// the targets they depend on, and an executable stand-in for every program
// an Exec*= line names, because verify checks that they exist.
func systemdRoot(t *testing.T, svc unit) string {
	t.Helper()
	root := t.TempDir()
	etc := filepath.Join(root, "etc", "systemd", "system")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{serviceFile, socketFile} {
		if err := os.WriteFile(filepath.Join(etc, path.Base(rel)), readFile(t, rel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for key, lines := range svc["Service"] {
		if !strings.HasPrefix(key, "Exec") {
			continue
		}
		for _, line := range lines {
			prog := filepath.Join(root, filepath.FromSlash(execArgs(line)[0]))
			if err := os.MkdirAll(filepath.Dir(prog), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			copyTree(t, dir, filepath.Join(root, "usr", "lib", "systemd", "system"))
			break
		}
	}
	return root
}

// copyTree copies a directory of unit files, keeping symlinks as symlinks
// (masked and aliased units are symlinks).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.Create(to)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
