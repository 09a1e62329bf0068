package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
)

func TestListenMakesDefaultDirPrivate(t *testing.T) {
	checkLeaks(t)
	for _, umask := range []int{0o022, 0o277} { // 0o277: mkdir alone would make it 0500
		t.Run(fmt.Sprintf("umask %#o", umask), func(t *testing.T) {
			old := syscall.Umask(umask)
			defer syscall.Umask(old)
			// Without XDG_RUNTIME_DIR, in a stand-in for /tmp.
			t.Setenv("XDG_RUNTIME_DIR", "")
			tmp := t.TempDir()
			defer func(old string) { tmpDir = old }(tmpDir)
			tmpDir = tmp
			path := DefaultPath("127.0.0.1:4100")
			if want := filepath.Join(tmp, fmt.Sprintf("prefork-%d", os.Geteuid()), "127.0.0.1-4100.sock"); path != want {
				t.Fatalf("DefaultPath = %s, want %s", path, want)
			}
			serveAt(t, path, statusHandler(testStatus), nil)
			fi, err := os.Lstat(filepath.Dir(path))
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
				t.Fatalf("socket directory: %v, %v; want a directory with mode 0700", fi.Mode(), err)
			}
			if code, _, errOut := ctlRun(t, t.Context(), "-listen", "127.0.0.1:4100", "status"); code != 0 {
				t.Errorf("ctl status: exit %d, stderr %q", code, errOut)
			}
		})
	}
}

// A default directory that someone else made first, or made wrong, is
// refused by the supervisor and by ctl alike, and left as it is.
func TestSquattedDefaultDirRefused(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir string)
		want string
	}{
		{"mode 0755", func(t *testing.T, dir string) { mkdir(t, dir, 0o755) }, "has mode 0755"},
		{"mode 0701", func(t *testing.T, dir string) { mkdir(t, dir, 0o701) }, "has mode 0701"},
		{"a file", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not a directory"},
		{"a symlink to a private directory", func(t *testing.T, dir string) {
			target := filepath.Join(filepath.Dir(dir), "elsewhere")
			mkdir(t, target, 0o700)
			if err := os.Symlink(target, dir); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"another user's", func(t *testing.T, dir string) {
			if os.Geteuid() != 0 {
				t.Skip("skipped: making a directory of uid 65534 takes root, and this test runs as uid", os.Geteuid())
			}
			mkdir(t, dir, 0o700)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("belongs to uid 65534, not to uid %d", os.Geteuid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			xdg := t.TempDir()
			t.Setenv("XDG_RUNTIME_DIR", xdg)
			dir := filepath.Join(xdg, "prefork")
			tc.make(t, dir)
			before, _ := os.Lstat(dir)

			s, err := Listen(DefaultPath(":4101"), zaptest.NewLogger(t))
			if err == nil {
				s.Close()
				t.Fatal("Listen took the directory")
			}
			if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Listen: %v; want ErrUnsafeDir naming %s and saying %q", err, dir, tc.want)
			}
			code, out, errOut := ctlRun(t, t.Context(), "-listen", ":4101", "status")
			if code != 1 || out != "" || !strings.Contains(errOut, dir) || !strings.Contains(errOut, tc.want) {
				t.Errorf("ctl status: exit %d, stdout %q, stderr %q; want 1 naming %s and saying %q", code, out, errOut, dir, tc.want)
			}
			after, err := os.Lstat(dir)
			if err != nil || after.Mode() != before.Mode() || !os.SameFile(before, after) {
				t.Errorf("the directory changed: %v, %v", after, err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 && before.IsDir() && before.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("Listen left %v in it", ents)
			}
		})
	}
}

// A -control path outside DefaultDir is the operator's choice: its
// directory is neither made nor checked.
func TestExplicitPathDirNotChecked(t *testing.T) {
	checkLeaks(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	dir := filepath.Join(t.TempDir(), "shared")
	mkdir(t, dir, 0o755)
	_, path := serveAt(t, filepath.Join(dir, "ctl.sock"), statusHandler(testStatus), nil)
	if code, _, errOut := ctlRun(t, t.Context(), "-control", path, "status"); code != 0 {
		t.Errorf("ctl status: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Lstat(DefaultDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DefaultDir made for an explicit path: %v", err)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}
