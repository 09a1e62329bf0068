package proctest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// modulePath is the module whose main packages Build builds.
const modulePath = "github.com/prefork/prefork"

// unused is how long a cache entry may go unused before Build removes it.
const unused = time.Hour

var builds struct {
	mu        sync.Mutex
	root      string // the module's directory
	cache     string // this user's cache directory
	src       string // hash of the module's sources and the go version
	goVersion string
	err       error
	once      map[string]*buildOnce
}

type buildOnce struct {
	sync.Once
	path string
	err  error
}

// Build returns the path of the main package pkg of the prefork module (a
// path relative to the module's root, as "./cmd/supervisor"), built by `go
// build` with flags ("-race", "-ldflags=-X main.version=v2", ...). The
// binary is named after the package's directory and sits in a directory of
// its own with the other packages built with the same flags, so the
// supervisor finds its default worker beside it when both are built alike.
// The supervisor (./cmd/supervisor) is built by scripts/build-supervisor,
// as make build builds it: the archive build when a C compiler is there
// (flags go to its go build; Plain makes a Go executable instead).
// A pkg with a go.mod of its own (a nested module, as examples/fasthttp)
// is built in its directory. Two packages whose directories have the same
// name would share a file: build them with different flags.
//
// Builds are cached across test binaries and runs, keyed by a hash of the
// module's sources, the go version and the flags: a test binary that asks
// for what another built from the same sources links nothing. Build is
// safe for concurrent use.
func Build(pkg string, flags ...string) (string, error) {
	key := strings.Join(append([]string{pkg}, flags...), "\x00")
	builds.mu.Lock()
	if builds.once == nil {
		builds.once = map[string]*buildOnce{}
		builds.root, builds.cache, builds.goVersion, builds.err = prepare()
		if builds.err == nil {
			builds.src, builds.err = hashSources(builds.root, builds.goVersion)
		}
	}
	if builds.err != nil {
		builds.mu.Unlock()
		return "", builds.err
	}
	b := builds.once[key]
	if b == nil {
		b = &buildOnce{}
		builds.once[key] = b
	}
	builds.mu.Unlock()
	b.Do(func() { b.path, b.err = build(pkg, flags) })
	return b.path, b.err
}

// MustBuild is Build for TestMain: it exits the test binary (status 1)
// when the build fails.
func MustBuild(pkg string, flags ...string) string {
	path, err := Build(pkg, flags...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return path
}

func build(pkg string, flags []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%q", builds.src, flags)
	src, target := builds.root, pkg
	if _, err := os.Stat(filepath.Join(builds.root, pkg, "go.mod")); err == nil {
		// A module of its own (examples/fasthttp): built in its directory.
		src, target = filepath.Join(builds.root, pkg), "."
	}
	dir := filepath.Join(builds.cache, hex.EncodeToString(h.Sum(nil))[:20])
	path := filepath.Join(dir, filepath.Base(pkg))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("proctest: %w", err)
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // in use: not one to prune
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	// Another test binary may build the same file at the same time: each
	// links to a name of its own and renames it into place, which is atomic.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	plain := slices.Contains(flags, Plain)
	goFlags := slices.DeleteFunc(slices.Clone(flags), func(f string) bool { return f == Plain })
	cmd := exec.Command("go", append(append([]string{"build"}, goFlags...), "-o", tmp, target)...)
	if filepath.Clean(pkg) == supervisorPkg {
		cmd = supervisorBuild(tmp, plain, goFlags)
	}
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("proctest: build %s %s: %w\n%s", strings.Join(flags, " "), pkg, err, out)
	}
	// A binary built while the sources changed must not be cached under
	// the hash of what they were before: reverting the change (to see a
	// test fail without a fix) would find it.
	if now, err := hashSources(builds.root, builds.goVersion); err != nil || now != builds.src {
		os.Remove(tmp)
		return "", fmt.Errorf("proctest: the sources changed while %s was built: run the tests again", pkg)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("proctest: %w", err)
	}
	return path, nil
}

// supervisorPkg is the supervisor command, which Build builds as make
// build does (scripts/build-supervisor), so that the tests run what ships.
const supervisorPkg = "cmd/supervisor"

// Plain, among Build's flags, builds ./cmd/supervisor as a Go executable,
// as scripts/build-supervisor does without a C compiler, rather than the
// archive build it makes otherwise. Other packages are built as without
// it, into the directory of the builds with these flags (the worker
// beside the plain supervisor).
const Plain = "-plain"

// supervisorBuild is the command that builds the supervisor into out.
func supervisorBuild(out string, plain bool, flags []string) *exec.Cmd {
	args := []string{out}
	if plain {
		args = []string{Plain, out}
	}
	return exec.Command(filepath.Join(builds.root, "scripts", "build-supervisor"), append(args, flags...)...)
}

// prepare finds the module and the go version, makes the cache directory
// and removes the entries nobody used for an hour.
func prepare() (root, cache, goVersion string, err error) {
	if root, err = moduleRoot(); err != nil {
		return "", "", "", err
	}
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", "", "", fmt.Errorf("proctest: go env GOVERSION: %w", err)
	}
	goVersion = string(out)
	// In the temporary directory, not the user's cache: workers a test
	// runs as another user (-user) must be able to reach the binaries.
	cache = filepath.Join(os.TempDir(), fmt.Sprintf("prefork-proctest-%d", os.Getuid()))
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", "", fmt.Errorf("proctest: %w", err)
	}
	// A directory another user made in /tmp could plant binaries.
	fi, err := os.Lstat(cache)
	if err != nil {
		return "", "", "", fmt.Errorf("proctest: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.IsDir() || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return "", "", "", fmt.Errorf("proctest: %s is not a directory only this user can write", cache)
	}
	prune(cache)
	return root, cache, goVersion, nil
}

// prune removes the cache entries not used for a while: builds of older
// sources.
func prune(cache string) {
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > unused {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
}

// moduleRoot walks up from the working directory (the test's package) to
// the prefork module's go.mod; it passes the go.mod of a nested module
// (dashboard/).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("proctest: %w", err)
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(sc.Text()) == "module "+modulePath {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("proctest: no go.mod of " + modulePath + " above the working directory")
		}
		dir = parent
	}
}

// hashSources hashes every file of the module, and of the modules nested in
// it that a build may use through a replace directive, that can change a
// binary: all but tests, docs, hidden directories and bin/.
func hashSources(root, goVersion string) (string, error) {
	h := sha256.New()
	io.WriteString(h, goVersion)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path == root {
				return nil
			}
			// Go ignores directories named _* and .*; tests make some
			// (cluster/primary's _readme*) while others build.
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules" || (name == "bin" && filepath.Dir(path) == root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".md") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("proctest: hashing the sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
