package scripts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// need is one thing a test suite runs besides Go.
type need struct {
	name string // as the suite looks for it, and as deps names it when missing
	pkg  string // the Debian package that provides it
}

// testNeeds is what make test needs, in the order deps checks it. Each
// entry is how a suite finds the program; keep it in step with the suites,
// not with the script.
var testNeeds = []need{
	{"node", "nodejs"},                // internal/nodeipc, internal/e2e: node on PATH
	{"taskset", "util-linux"},         // internal/e2e/core_test.go: on PATH
	{"prlimit", "util-linux"},         // internal/e2e/limits_test.go: on PATH
	{"/usr/bin/python3", "python3"},   // internal/e2e/protocol_test.go: by path
	{"python3", "python3"},            // internal/chaos/hostile_test.go: on PATH
	{"/usr/bin/gunicorn", "gunicorn"}, // internal/e2e/protocol_test.go: by path
	{uvicorn, "python3-uvicorn"},      // internal/e2e: /usr/bin/python3 -c 'import uvicorn'
	{"chromium", "chromium"},          // dashboard/harness_test.go: chromium, chromium-browser or google-chrome(-stable) on PATH
	{"wrk", "wrk"},                    // bench/proxy_test.go: on PATH
	{"systemd-analyze", "systemd"},    // deploy/systemd_test.go: on PATH
}

// benchNeeds is what make bench needs (bench/main.go's preflight).
var benchNeeds = []need{{"wrk", "wrk"}, {"node", "nodejs"}, {"taskset", "util-linux"}}

const uvicorn = "uvicorn for /usr/bin/python3"

// provides is what each Debian package puts on the fake machine: a name
// with a slash is a path under the fake root, any other a program on PATH.
var provides = map[string][]string{
	"nodejs":          {"node"},
	"npm":             {"npm"},
	"util-linux":      {"taskset", "prlimit"},
	"python3":         {"/usr/bin/python3", "python3"},
	"gunicorn":        {"/usr/bin/gunicorn"},
	"python3-uvicorn": {uvicornDir},
	"chromium":        {"chromium"},
	"systemd":         {"systemd-analyze"},
	"wrk":             {"wrk"},
}

const uvicornDir = "/usr/lib/python3/dist-packages/uvicorn/"

// fakeNames are the programs the machine's PATH never lends the fake one:
// every program above, Chromium's other names, and the fakes'.
var fakeNames = []string{"node", "npm", "taskset", "prlimit", "python3", "gunicorn", "chromium",
	"chromium-browser", "google-chrome", "google-chrome-stable", "systemd-analyze", "wrk", "apt-get", "id"}

// base is a directory of links to every program on the test's PATH but
// fakeNames: the shell, find, make... that the fake machine shares.
var base string

func TestMain(m *testing.M) {
	dir, err := linkPath(os.Getenv("PATH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "scripts:", err)
		os.Exit(1)
	}
	base = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func linkPath(path string) (string, error) {
	dir, err := os.MkdirTemp("", "deps-base")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil { // other users run the script too
		return "", err
	}
	skip := map[string]bool{}
	for _, n := range fakeNames {
		skip[n] = true
	}
	for _, d := range filepath.SplitList(path) {
		entries, _ := os.ReadDir(d) // a PATH entry may not exist
		for _, e := range entries {
			if skip[e.Name()] || e.IsDir() {
				continue
			}
			skip[e.Name()] = true // the first on PATH wins, as for the shell
			if err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}

// machine is a fake machine: its PATH is bin then base, its root (for the
// absolute paths the suites use) is sys, and a fake apt-get installs from
// store, the files each package provides.
type machine struct {
	t                     *testing.T
	dir, repo, bin, sys   string
	aptLog, npmLog, goLog string
}

// uid is what the fake id -u prints; realID leaves the real id in place.
const realID = ""

// newMachine makes a machine with every package of pkgs installed.
func newMachine(t *testing.T, uid string, pkgs ...string) *machine {
	t.Helper()
	dir := t.TempDir()
	// Let another user (setpriv below) reach it.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := &machine{t: t, dir: dir, repo: filepath.Join(dir, "repo"), bin: filepath.Join(dir, "bin"), sys: filepath.Join(dir, "sys"),
		aptLog: filepath.Join(dir, "apt.log"), npmLog: filepath.Join(dir, "npm.log"), goLog: filepath.Join(dir, "go.log")}
	for _, d := range []string{m.bin, m.sys, filepath.Join(m.repo, "scripts")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{m.aptLog, m.npmLog, m.goLog} {
		m.write(f, "", 0o666)
		if err := os.Chmod(f, 0o666); err != nil { // the umask took some
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile("deps")
	if err != nil {
		t.Fatal(err)
	}
	m.write(filepath.Join(m.repo, "scripts", "deps"), string(script), 0o755)
	makefile, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m.write(filepath.Join(m.repo, "Makefile"), string(makefile), 0o644)
	m.write(filepath.Join(dir, "go"), "#!/bin/sh\necho \"$*\" >>"+m.goLog+"\nexit 1\n", 0o755)
	m.setID(uid)
	for p := range provides {
		m.put(filepath.Join(dir, "store", p), provides[p])
	}
	m.write(filepath.Join(m.bin, "apt-get"), `#!/bin/sh
echo "${DEBIAN_FRONTEND:-}|$*" >>`+m.aptLog+`
[ "$1" = install ] || exit 0
for p; do
	case $p in -*|install) continue ;; esac
	[ -d `+dir+`/store/$p ] || { echo "E: Unable to locate package $p" >&2; exit 100; }
	cp -R `+dir+`/store/$p/. `+dir+`/
done
`, 0o755)
	for _, p := range pkgs {
		m.put(dir, provides[p])
	}
	return m
}

func (m *machine) write(name, content string, perm fs.FileMode) {
	m.t.Helper()
	if err := os.WriteFile(name, []byte(content), perm); err != nil {
		m.t.Fatal(err)
	}
}

// put installs files, as provides names them, under root (the machine's
// directory or a package's in the store): programs in bin, paths in sys.
func (m *machine) put(root string, files []string) {
	m.t.Helper()
	for _, f := range files {
		p := filepath.Join(root, "bin", f)
		if strings.HasPrefix(f, "/") {
			p = filepath.Join(root, "sys", f)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			m.t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(f, "/"):
			if err := os.MkdirAll(p, 0o755); err != nil {
				m.t.Fatal(err)
			}
		case f == "/usr/bin/python3":
			// It imports uvicorn when python3-uvicorn is installed.
			m.write(p, "#!/bin/sh\ncase \"$*\" in *uvicorn*) [ -d "+filepath.Join(m.sys, uvicornDir)+" ] || exit 1 ;; esac\nexit 0\n", 0o755)
		case f == "npm":
			// npm ci installs the packages of the lockfile beside it.
			m.write(p, `#!/bin/sh
echo "$*" >>`+m.npmLog+`
dir=$PWD ci=
while [ $# -gt 0 ]; do
	case $1 in --prefix) dir=$2; shift ;; --prefix=*) dir=${1#--prefix=} ;; ci) ci=1 ;; esac
	shift
done
[ -n "$ci" ] || exit 1
mkdir -p "$dir/node_modules" && echo '{}' >"$dir/node_modules/.package-lock.json"
`, 0o755)
		default:
			m.write(p, "#!/bin/sh\nexit 0\n", 0o755)
		}
	}
}

// setID puts a fake id printing uid on PATH, or the real one.
func (m *machine) setID(uid string) {
	m.t.Helper()
	p := filepath.Join(m.bin, "id")
	os.Remove(p)
	if uid != realID {
		m.write(p, "#!/bin/sh\necho "+uid+"\n", 0o755)
		return
	}
	id, err := exec.LookPath("id")
	if err != nil {
		m.t.Fatal(err)
	}
	if err := os.Symlink(id, p); err != nil {
		m.t.Fatal(err)
	}
}

// lockfile writes a package-lock.json into dir (under the repository);
// with deps it lists one package to install.
func (m *machine) lockfile(dir string, deps bool) string {
	m.t.Helper()
	packages := `"": {"name": "app"}`
	if deps {
		packages += `, "node_modules/ms": {"version": "2.1.3"}`
	}
	p := filepath.Join(m.repo, dir, "package-lock.json")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	m.write(p, `{"name": "app", "lockfileVersion": 3, "requires": true, "packages": {`+packages+`}}`, 0o644)
	return p
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// run runs argv in the repository on the machine, as another user when
// asOther.
func (m *machine) run(asOther bool, argv ...string) result {
	m.t.Helper()
	if asOther {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			m.t.Fatal(err)
		}
		argv = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = m.repo
	cmd.Env = []string{"PATH=" + m.bin + ":" + base, "PREFORK_DEPS_SYSROOT=" + m.sys, "HOME=" + m.dir}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.code = exit.ExitCode()
	} else if err != nil {
		m.t.Fatal(err)
	}
	return r
}

func (m *machine) deps(what string) result {
	m.t.Helper()
	return m.run(false, filepath.Join(m.repo, "scripts", "deps"), what)
}

func (m *machine) log(name string) string {
	m.t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		m.t.Fatal(err)
	}
	return string(b)
}

// stops checks that r is deps stopping at once with exactly line, having
// installed nothing.
func (m *machine) stops(r result, line string) {
	m.t.Helper()
	if r.code != 1 || r.stdout != "" || r.stderr != line+"\n" {
		m.t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and only %q on stderr", r.code, r.stdout, r.stderr, line)
	}
	if r.took >= 5*time.Second {
		m.t.Errorf("took %v to stop; want under 5s", r.took)
	}
	m.nothingRan()
}

func (m *machine) silent(r result) {
	m.t.Helper()
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		m.t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and no output", r.code, r.stdout, r.stderr)
	}
	m.nothingRan()
}

func (m *machine) nothingRan() {
	m.t.Helper()
	if apt, npm := m.log(m.aptLog), m.log(m.npmLog); apt != "" || npm != "" {
		m.t.Errorf("apt-get ran %q, npm ran %q; want neither", apt, npm)
	}
}

func names(needs []need) (what, pkgs []string) {
	seen := map[string]bool{}
	for _, n := range needs {
		what = append(what, n.name)
		if !seen[n.pkg] {
			seen[n.pkg] = true
			pkgs = append(pkgs, n.pkg)
		}
	}
	return what, pkgs
}

func packages(needs []need) []string {
	_, pkgs := names(needs)
	return pkgs
}

// sudoLine is what deps says to a user who is not root.
func sudoLine(tag, what string, missing []need) string {
	w, pkgs := names(missing)
	return fmt.Sprintf("%s: missing %s: install them with: sudo apt-get install -y %s (or run make %s as root)",
		tag, strings.Join(w, ", "), strings.Join(pkgs, " "), what)
}

// without returns all but the packages the machine should lack.
func without(needs []need, drop ...string) []string {
	var keep []string
	for _, p := range packages(needs) {
		if !contains(drop, p) {
			keep = append(keep, p)
		}
	}
	return keep
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestDepsSilent: with everything present deps installs nothing and says
// nothing, as root or not.
func TestDepsSilent(t *testing.T) {
	for _, uid := range []string{"0", "1000"} {
		m := newMachine(t, uid, append(packages(testNeeds), "wrk")...)
		m.silent(m.deps("test"))
		m.silent(m.deps("bench"))
	}
}

// TestDepsNamesEachMissing takes away one package at a time (with the
// packages that depend on it, as apt-get remove does), the others present:
// a user who is not root gets one line naming what the suites miss and the
// packages, at once, and nothing is installed. A need deps stopped checking
// fails here.
func TestDepsNamesEachMissing(t *testing.T) {
	for _, c := range []struct {
		what  string
		tag   string
		needs []need
	}{{"test", "test-deps", testNeeds}, {"bench", "bench-tools", benchNeeds}} {
		for _, pkg := range packages(c.needs) {
			t.Run(c.what+"/"+pkg, func(t *testing.T) {
				gone := append([]string{pkg}, dependents[pkg]...)
				m := newMachine(t, "1000", without(c.needs, gone...)...)
				var missing []need
				for _, n := range c.needs {
					if contains(gone, n.pkg) {
						missing = append(missing, n)
					}
				}
				m.stops(m.deps(c.what), sudoLine(c.tag, c.what, missing))
			})
		}
	}
}

// dependents are the packages apt-get remove takes away with one.
var dependents = map[string][]string{"python3": {"gunicorn", "python3-uvicorn"}}

// TestDepsOneProgramOfAPackage: each program is checked on its own, not
// only the first of its package, and is there only as an executable file,
// as Go's exec.LookPath and the suites take it: a file without execute
// permission or a directory in its place is missing too.
func TestDepsOneProgramOfAPackage(t *testing.T) {
	spoil := map[string]func(p string) error{
		"removed": os.RemoveAll,
		"not executable": func(p string) error {
			return os.Chmod(p, 0o644)
		},
		"a directory": func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Mkdir(p, 0o755)
		},
	}
	for _, n := range testNeeds {
		for how, do := range spoil {
			// The other ways, for one program on PATH and one by path.
			if how != "removed" && n.name != "chromium" && n.name != "/usr/bin/gunicorn" {
				continue
			}
			t.Run(n.name+"/"+how, func(t *testing.T) {
				m := newMachine(t, "1000", packages(testNeeds)...)
				f := n.name
				if n.name == uvicorn {
					f = uvicornDir
				}
				p := filepath.Join(m.bin, f)
				if strings.HasPrefix(f, "/") {
					p = filepath.Join(m.sys, f)
				}
				if err := do(p); err != nil {
					t.Fatal(err)
				}
				missing := []need{n}
				if n.name == "/usr/bin/python3" { // uvicorn is imported by that python
					missing = append(missing, testNeeds[6])
				}
				m.stops(m.deps("test"), sudoLine("test-deps", "test", missing))
			})
		}
	}
}

// TestDepsNamesAllMissing: on a machine with none of it, one line names
// everything, each package once.
func TestDepsNamesAllMissing(t *testing.T) {
	m := newMachine(t, "1000")
	m.stops(m.deps("test"), sudoLine("test-deps", "test", testNeeds))
}

// TestDepsOtherChromium: the dashboard takes any of Chromium's names.
func TestDepsOtherChromium(t *testing.T) {
	for _, name := range []string{"chromium-browser", "google-chrome", "google-chrome-stable"} {
		m := newMachine(t, "1000", without(testNeeds, "chromium")...)
		m.put(m.dir, []string{name})
		m.silent(m.deps("test"))
	}
}

// TestDepsNoAptGet: without apt-get, even root is told what to install.
func TestDepsNoAptGet(t *testing.T) {
	m := newMachine(t, "0", without(testNeeds, "chromium", "gunicorn")...)
	if err := os.Remove(filepath.Join(m.bin, "apt-get")); err != nil {
		t.Fatal(err)
	}
	m.stops(m.deps("test"), "test-deps: missing /usr/bin/gunicorn, chromium: install them with your package manager (Debian: apt-get install -y gunicorn chromium)")
}

// TestDepsRealUser runs deps as a user who is not root, with the real id.
func TestDepsRealUser(t *testing.T) {
	m := newMachine(t, realID, without(testNeeds, "chromium")...)
	m.stops(m.run(os.Geteuid() == 0, filepath.Join(m.repo, "scripts", "deps"), "test"), sudoLine("test-deps", "test", []need{{"chromium", "chromium"}}))
}

// TestDepsInstallsAsRoot: root gets what is missing with one apt-get
// update and one non-interactive apt-get install of just that, and one
// line saying so; a second run is silent.
func TestDepsInstallsAsRoot(t *testing.T) {
	m := newMachine(t, "0", without(testNeeds, "chromium", "gunicorn", "python3-uvicorn")...)
	r := m.deps("test")
	if want := "test-deps: installed gunicorn python3-uvicorn chromium\n"; r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", r.code, r.stdout, r.stderr, want)
	}
	if have, want := m.log(m.aptLog), "|update -qq\nnoninteractive|install -y -qq gunicorn python3-uvicorn chromium\n"; have != want {
		t.Errorf("apt-get ran\n%s; want\n%s", have, want)
	}
	if err := os.Truncate(m.aptLog, 0); err != nil {
		t.Fatal(err)
	}
	m.silent(m.deps("test"))

	// bench-tools, the same way (make test needs wrk too, for bench's
	// own tests, so a machine without it).
	m = newMachine(t, "0", without(testNeeds, "wrk")...)
	r = m.deps("bench")
	if want := "bench-tools: installed wrk\n"; r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("bench: exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", r.code, r.stdout, r.stderr, want)
	}
}

// TestDepsInstallFails: when apt-get fails, or installs a package that does
// not provide what is missing, deps says so and fails.
func TestDepsInstallFails(t *testing.T) {
	m := newMachine(t, "0", without(testNeeds, "chromium")...)
	if err := os.RemoveAll(filepath.Join(m.dir, "store", "chromium")); err != nil {
		t.Fatal(err)
	}
	r := m.deps("test")
	if want := "E: Unable to locate package chromium\ntest-deps: apt-get install -y chromium failed (output above)\n"; r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
	}

	if err := os.MkdirAll(filepath.Join(m.dir, "store", "chromium"), 0o755); err != nil { // a package without the program
		t.Fatal(err)
	}
	r = m.deps("test")
	if want := "test-deps: still missing chromium after apt-get install -y chromium\n"; r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
	}
}

// TestDepsNpmCI: npm ci runs beside every package-lock.json of the
// repository (none inside node_modules) whose node_modules is missing or
// older than it, once.
func TestDepsNpmCI(t *testing.T) {
	m := newMachine(t, "1000", append(packages(testNeeds), "npm")...)
	lock := m.lockfile("examples/app", true)
	m.lockfile("examples/app/node_modules/ms", true) // a dependency's, not ours
	m.lockfile("examples/empty", false)              // nothing to install
	for i := 0; i < 2; i++ {
		r := m.deps("test")
		if want := "test-deps: ran npm ci in examples/app\n"; r.code != 0 || r.stdout != want || r.stderr != "" {
			t.Errorf("run %d: exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", i, r.code, r.stdout, r.stderr, want)
		}
		if have := m.log(m.npmLog); strings.Count(have, "\n") != 1 || !regexp.MustCompile(`\bci\b`).MatchString(have) ||
			!strings.Contains(have, filepath.Join(m.repo, "examples", "app")) {
			t.Errorf("run %d: npm ran %q; want one npm ci for examples/app", i, have)
		}
		if err := os.Truncate(m.npmLog, 0); err != nil {
			t.Fatal(err)
		}
		m.silent(m.deps("test"))
		// A lockfile newer than node_modules (a pull) makes it stale again.
		earlier := time.Now().Add(-time.Hour)
		if err := os.Chtimes(lock, earlier, earlier); err != nil {
			t.Fatal(err)
		}
		installed := filepath.Join(m.repo, "examples", "app", "node_modules", ".package-lock.json")
		if err := os.Chtimes(installed, earlier.Add(-time.Minute), earlier.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}

	// Without npm, a stale lockfile names it; root installs it.
	if err := os.Remove(filepath.Join(m.bin, "npm")); err != nil {
		t.Fatal(err)
	}
	m.stops(m.deps("test"), sudoLine("test-deps", "test", []need{{"npm", "npm"}}))
	m.setID("0")
	r := m.deps("test")
	if want := "test-deps: installed npm; ran npm ci in examples/app\n"; r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("as root: exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", r.code, r.stdout, r.stderr, want)
	}
}

// TestMakeTestNeedsDepsFirst: make test runs deps before anything else: a
// user who is not root without a package gets its line (and make's) within
// 5 seconds and no go command runs; with everything present go vet runs.
func TestMakeTestNeedsDepsFirst(t *testing.T) {
	make, err := exec.LookPath("make")
	if err != nil {
		t.Fatal(err)
	}
	m := newMachine(t, realID, without(testNeeds, "chromium")...)
	r := m.run(os.Geteuid() == 0, make, "-s", "test", "GO="+filepath.Join(m.dir, "go"))
	line := sudoLine("test-deps", "test", []need{{"chromium", "chromium"}})
	if lines := strings.Split(r.stderr, "\n"); r.code == 0 || r.stdout != "" || len(lines) != 3 || lines[0] != line ||
		!strings.HasPrefix(lines[1], "make: *** [Makefile:") || !strings.HasSuffix(lines[1], "test-deps] Error 1") {
		t.Errorf("exit %d, stdout %q, stderr %q; want a failure with %q and make's line", r.code, r.stdout, r.stderr, line)
	}
	if r.took >= 5*time.Second {
		t.Errorf("took %v to stop; want under 5s", r.took)
	}
	if have := m.log(m.goLog); have != "" {
		t.Errorf("go ran %q before deps passed", have)
	}

	m.put(m.dir, provides["chromium"])
	m.run(os.Geteuid() == 0, make, "-s", "test", "GO="+filepath.Join(m.dir, "go"))
	if have, want := m.log(m.goLog), "vet ./...\n"; have != want {
		t.Errorf("go ran %q; want %q: make test goes on to the tests once deps pass", have, want)
	}
}
