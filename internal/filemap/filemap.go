package filemap

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Check fails tb for every non-test .go file in dir that dir's doc.go does
// not name, and for every .go file doc.go names that does not exist.
func Check(tb testing.TB, dir string) {
	tb.Helper()
	doc, err := os.ReadFile(filepath.Join(dir, "doc.go"))
	if err != nil {
		tb.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range goFile.FindAllString(string(doc), -1) {
		named[m] = true
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		tb.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		have[name] = true
		if name != "doc.go" && !strings.HasSuffix(name, "_test.go") && !named[name] {
			tb.Errorf("%s is not in doc.go's file map", name)
		}
	}
	for name := range named {
		if !have[name] {
			tb.Errorf("doc.go names %s, which does not exist", name)
		}
	}
}

// goFile is a file name as a file map writes it.
var goFile = regexp.MustCompile(`\b[a-z0-9_]+\.go\b`)
