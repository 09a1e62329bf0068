package deploy

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// read records every file of this directory a test has read, so that
// TestMain can fail when a file is added that no test looks at.
var read sync.Map

// readFile reads a file of this module by its slash-separated path
// relative to deploy/.
func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		t.Fatal(err)
	}
	read.Store(rel, true)
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	// Only a full run can tell which files no test reads.
	full := true
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			full = false
		}
	}
	if code == 0 && full {
		if unread := unreadFiles(); len(unread) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: files in deploy/ that no test reads: %s\n", strings.Join(unread, ", "))
			code = 1
		}
	}
	os.Exit(code)
}

// unreadFiles lists the deployment files (everything but Go source and the
// module files) that readFile was never called for.
func unreadFiles() []string {
	var unread []string
	filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := filepath.ToSlash(path)
		if strings.HasSuffix(rel, ".go") || rel == "go.mod" || rel == "go.sum" {
			return nil
		}
		if _, ok := read.Load(rel); !ok {
			unread = append(unread, rel)
		}
		return nil
	})
	sort.Strings(unread)
	return unread
}
