// Package filemap checks a package's file map: the "where to read" list
// of its doc.go must name every non-test file of the package, and only
// files that exist. Test-only.
//
//	func TestDocNamesEveryFile(t *testing.T) { filemap.Check(t, ".") }
package filemap
