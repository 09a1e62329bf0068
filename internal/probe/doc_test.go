package probe

import (
	"testing"

	"github.com/prefork/prefork/internal/filemap"
)

// The file map in doc.go names every non-test file of the package.
func TestDocNamesEveryFile(t *testing.T) { filemap.Check(t, ".") }
