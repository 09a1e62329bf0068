package filemap

import (
	"os"
	"path/filepath"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errs int
}

func (r *recorder) Errorf(string, ...any) { r.errs++ }
func (r *recorder) Helper()               {}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("doc.go", "// a.go  the a\npackage p\n")
	write("a.go", "package p\n")
	write("a_test.go", "package p\n")
	r := &recorder{TB: t}
	Check(r, dir)
	if r.errs != 0 {
		t.Fatalf("a complete map: %d failures, want none", r.errs)
	}
	write("b.go", "package p\n")
	r = &recorder{TB: t}
	Check(r, dir)
	if r.errs != 1 {
		t.Fatalf("a file missing from the map: %d failures, want 1", r.errs)
	}
	os.Remove(filepath.Join(dir, "a.go"))
	r = &recorder{TB: t}
	Check(r, dir)
	if r.errs != 2 {
		t.Fatalf("a file missing and a file gone: %d failures, want 2", r.errs)
	}
}
