package primary

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's Go API section is checked as written: every Go block is
// marked, a fragment compiles, a file is the example it names (which
// TestReadmeExample runs), and each row of the "Coming from Node" table
// compiles and names a test of this package.

// readmeGoAPI is the README's "Go API" section.
func readmeGoAPI(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n## Go API")
	if i < 0 {
		t.Fatal("README has no Go API section")
	}
	s = s[i+1:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s
}

// snippet is a Go block of the README and its marker's argument.
type snippet struct{ mark, code string }

var snippetRE = regexp.MustCompile("(?s)(<!-- snippet: ([^ ]+) -->\n)?```go\n(.*?)```")

func readmeSnippets(t *testing.T) []snippet {
	var out []snippet
	for _, m := range snippetRE.FindAllStringSubmatch(readmeGoAPI(t), -1) {
		if m[1] == "" {
			t.Errorf("a Go block of the README's Go API section has no snippet marker:\n%s", m[3])
		}
		out = append(out, snippet{mark: m[2], code: m[3]})
	}
	if len(out) < 3 {
		t.Fatalf("%d Go blocks in the README's Go API section", len(out))
	}
	return out
}

// fragmentFile is a program in which each fragment is a block of its own,
// with the names the README's fragments use in scope.
func fragmentFile(fragments []string) string {
	var b strings.Builder
	b.WriteString(`package main

import (
	"context"
	"fmt"
	"net/http"
	"syscall"

	"github.com/prefork/prefork/cluster"
	"github.com/prefork/prefork/cluster/primary"
)

var _, _, _, _ = fmt.Sprint, syscall.SIGTERM, http.NewServeMux, cluster.IsWorker

func main() {}
`)
	for i, f := range fragments {
		fmt.Fprintf(&b, `
func fragment%d() error {
	var (
		ctx = context.Background()
		st  = cluster.DefaultSettings()
		p   *primary.Primary
		w   *primary.Worker
		ev  primary.Event
		mux = http.NewServeMux()
	)
	_, _, _, _, _, _ = ctx, st, p, w, ev, mux
	{
%s
	}
	return nil
}
`, i, f)
	}
	return b.String()
}

// buildFragments compiles fragments in a package of this module, made for
// the purpose and removed.
func buildFragments(t *testing.T, fragments []string) {
	t.Helper()
	dir, err := os.MkdirTemp(".", "_readme") // "_": not in ./... for anyone else
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(fragmentFile(fragments)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "build", "-o", os.DevNull, "./"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("the README's Go does not compile: %v\n%s", err, out)
	}
}

// Every Go block of the Go API section compiles as written, and the
// complete program is the example file it names.
func TestReadmeSnippets(t *testing.T) {
	var fragments []string
	for _, s := range readmeSnippets(t) {
		switch s.mark {
		case "fragment":
			fragments = append(fragments, s.code)
		default:
			b, err := os.ReadFile(filepath.Join("../..", s.mark))
			if err != nil {
				t.Fatalf("snippet %s: %v", s.mark, err)
			}
			if string(b) != s.code {
				t.Errorf("the README's %s differs from the file", s.mark)
			}
		}
	}
	buildFragments(t, fragments)
}

var parityRowRE = regexp.MustCompile("(?m)^\\| (.+?) \\| `(.+?)` \\| `(Test\\w+)` \\|$")

// Each row of the "Coming from Node" table: its Go line compiles, and the
// test it names is a test of this package (which make test runs).
func TestReadmeParity(t *testing.T) {
	s := readmeGoAPI(t)
	i := strings.Index(s, "<!-- parity table -->")
	if i < 0 {
		t.Fatal("no parity table in the README's Go API section")
	}
	table := s[i:]
	table = table[:strings.Index(table, "\n\n")]
	rows := parityRowRE.FindAllStringSubmatch(table, -1)
	if n := strings.Count(table, "\n|") - 2; len(rows) != n || n < 5 {
		t.Fatalf("%d of the table's %d rows read as | Node | `Go` | `TestName` |", len(rows), n)
	}
	tests := packageTests(t)
	var lines []string
	for _, r := range rows {
		if !tests[r[3]] {
			t.Errorf("row %q names %s, which is not a test of package primary", r[1], r[3])
		}
		lines = append(lines, r[2])
	}
	buildFragments(t, lines)
}

// packageTests are the Test functions of this package's test files.
func packageTests(t *testing.T) map[string]bool {
	files, _ := filepath.Glob("*_test.go")
	tests := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") {
				tests[fd.Name.Name] = true
			}
		}
	}
	return tests
}

// The README's whole example, built and run: it forks its workers, counts
// every request exactly, forks again after a kill -9, does not after a
// worker disconnects itself, and stops cleanly on SIGTERM.
func TestReadmeExample(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fromnode")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/fromnode").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a free port for the program
	cmd := exec.Command(bin, "-listen", addr, "-workers", "2", "-control", "none", "-sched", "normal", "-log-format", "json")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	expect := func(re string) []string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("output ended waiting for %q", re)
				}
				if m := regexp.MustCompile(re).FindStringSubmatch(line); m != nil {
					return m
				}
			case <-deadline:
				t.Fatalf("no line %q within 20s", re)
			}
		}
	}
	expect(`^worker \d+ listening$`)
	expect(`^worker \d+ listening$`)
	served := 0
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/" {
			served++
		}
		return string(b)
	}
	var pid int
	for range 50 {
		fmt.Sscanf(get("/"), "hello world from %d", &pid)
	}
	syscall.Kill(pid, syscall.SIGKILL) // kill -9
	expect(fmt.Sprintf(`^worker %d died \(0 SIGKILL\)$`, pid))
	expect(`^worker \d+ listening$`) // the program forked again
	for range 50 {
		get("/")
	}
	get("/leave")
	expect(`^worker \d+ died \(0 \)$`) // disconnected itself: no fork
	cmd.Process.Signal(syscall.SIGTERM)
	total := expect(`^requests = (\d+)$`)
	if total[1] != fmt.Sprint(served) {
		t.Errorf("the primary counted %s requests, want %d", total[1], served)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
