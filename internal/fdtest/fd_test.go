package fdtest

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSelf(t *testing.T) {
	before, err := List(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	n, err := Count(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n != len(before) {
		t.Fatalf("Count %d, List %d: %v", n, len(before), before)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	targets, err := Targets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{r, w} {
		if have := targets[int(f.Fd())]; !strings.HasPrefix(have, "pipe:[") {
			t.Errorf("fd %d: want a pipe, have %q", f.Fd(), have)
		}
	}
	list, err := List(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if want, have := len(before)+2, len(list); want != have {
		t.Errorf("with a pipe open: want %d descriptors, have %d: %v", want, have, list)
	}
	if want := strconv.Itoa(int(r.Fd())) + " -> " + targets[int(r.Fd())]; !slices.Contains(list, want) {
		t.Errorf("List: %q missing from %v", want, list)
	}
	if !slices.IsSortedFunc(list, func(a, b string) int { return fdOf(t, a) - fdOf(t, b) }) {
		t.Errorf("List not in descriptor order: %v", list)
	}
	r.Close()
	w.Close()
	after, err := List(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("after closing the pipe: want %v, have %v", before, after)
	}
}

func fdOf(t *testing.T, entry string) int {
	n, _, _ := strings.Cut(entry, " -> ")
	fd, err := strconv.Atoi(n)
	if err != nil {
		t.Fatalf("entry %q: %v", entry, err)
	}
	return fd
}

// TestChild reads another process's descriptors: a child given one pipe as
// stdin and as fd 3, another as stdout. (It may inherit more: whatever this
// process itself inherited without close-on-exec.)
func TestChild(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(r.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cat") // copies stdin to stdout until w is closed
	cmd.Stdin = r
	cmd.ExtraFiles = []*os.File{r}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer cmd.Wait()
	defer w.Close() // cat exits at EOF
	// Once cat echoes a byte it has opened whatever it opens at start-up,
	// so its table holds still while it is read.
	if _, err := w.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	list, err := List(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Count(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) < 4 {
		t.Fatalf("want at least 4 descriptors, have %v", list)
	}
	stdout, _ := strings.CutPrefix(list[1], "1 -> ")
	want := []string{"0 -> " + pipe, "1 -> " + stdout, "2 -> /dev/null", "3 -> " + pipe}
	if !strings.HasPrefix(stdout, "pipe:[") || stdout == pipe || !slices.Equal(want, list[:4]) || n != len(list) {
		t.Fatalf("want %v first; have Count %d, List %v", want, n, list)
	}
}

func TestGone(t *testing.T) {
	// pid_max is at most 4194304 (2^22), so this pid never exists.
	for name, f := range map[string]func(int) error{
		"Targets": func(pid int) error { _, err := Targets(pid); return err },
		"List":    func(pid int) error { _, err := List(pid); return err },
		"Count":   func(pid int) error { _, err := Count(pid); return err },
	} {
		if err := f(1 << 23); !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "fdtest: ") {
			t.Errorf("%s: want an fdtest: error wrapping fs.ErrNotExist, have %v", name, err)
		}
	}
}
