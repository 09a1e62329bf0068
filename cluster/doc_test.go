package cluster

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docMapLists fails t unless the "Where to read" map of dir's doc.go names
// every non-test Go file of dir, and only those.
func docMapLists(t *testing.T, dir string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(dir, "doc.go"))
	if err != nil {
		t.Fatal(err)
	}
	mapped := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^//\t([a-z_]+\.go) `).FindAllStringSubmatch(string(doc), -1) {
		mapped[m[1]] = true
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasSuffix(name, "_test.go") || name == "doc.go" {
			continue
		}
		if !mapped[name] {
			t.Errorf("%s is not in %s/doc.go's map", name, dir)
		}
		delete(mapped, name)
	}
	for name := range mapped {
		t.Errorf("%s/doc.go maps %s, which does not exist", dir, name)
	}
}

func TestDocMap(t *testing.T) {
	docMapLists(t, ".")
	docMapLists(t, "primary")
}
