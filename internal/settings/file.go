package settings

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// A configuration file (-config) is TOML with one key per flag, named as
// the flag: the file is decoded into a struct made from the flag set
// itself, and each value is set through its flag's own Set, so every flag
// is a key by construction and a value is checked exactly as on the
// command line. Two keys are no flag: command, the worker COMMAND and its
// arguments, and the table listeners, NAME = "ADDRESS" entries of a
// repeatable -listen.

// Keys of a configuration file that are not flags.
const (
	keyCommand   = "command"   // COMMAND [ARGS...], as an array of strings
	keyListeners = "listeners" // a table of NAME = "ADDRESS": -listen NAME=ADDRESS each
)

// repeatable is a flag whose every Set adds a value, as -listen: it takes
// a TOML array, or one string. Its Value says so by Get returning a
// []string, or by a Values method.
type repeatable interface{ Values() []string }

// kind is the TOML type a flag's key takes.
type kind int

const (
	kindString   kind = iota // a string
	kindInt                  // an integer
	kindBool                 // true or false
	kindDuration             // a string time.ParseDuration reads: "30s"
	kindList                 // a repeatable flag: an array of strings, or one
)

// kindOf is the TOML type of flag f's key, from its Value's Go type.
func kindOf(f *flag.Flag) kind {
	if _, ok := f.Value.(repeatable); ok {
		return kindList
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return kindBool
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return kindString
	}
	switch g.Get().(type) {
	case int, int64, uint, uint64:
		return kindInt
	case time.Duration:
		return kindDuration
	case []string:
		return kindList
	}
	return kindString
}

// want is what a key of kind k must hold, for a wrong type's error.
func (k kind) want() string {
	return [...]string{
		kindString:   "a string",
		kindInt:      "an integer",
		kindBool:     "true or false",
		kindDuration: `a duration string such as "30s"`,
		kindList:     "an array of strings",
	}[k]
}

// goType is the Go type a key of kind k decodes into: a pointer, so that
// an absent key stays nil.
func (k kind) goType() reflect.Type {
	switch k {
	case kindInt:
		return reflect.TypeFor[*int64]()
	case kindBool:
		return reflect.TypeFor[*bool]()
	case kindList:
		return reflect.TypeFor[any]() // an array, or one string
	}
	return reflect.TypeFor[*string]()
}

// fileSettings is what a configuration file set.
type fileSettings struct {
	path    string
	lines   map[string]int // each key the file set (and the command line did not), by line
	command []string       // the command key; nil if absent
}

// fileKey is one key of the file's schema.
type fileKey struct {
	name string
	kind kind
	flag *flag.Flag // nil for command and listeners
}

// schema is the keys a file may hold: one per flag of fs that is a
// setting, plus command, plus listeners if -listen is repeatable.
func schema(fs *flag.FlagSet) []fileKey {
	var keys []fileKey
	fs.VisitAll(func(f *flag.Flag) {
		if !notSettings[f.Name] {
			keys = append(keys, fileKey{name: f.Name, kind: kindOf(f), flag: f})
		}
	})
	keys = append(keys, fileKey{name: keyCommand, kind: kindList})
	if f := fs.Lookup("listen"); f != nil && kindOf(f) == kindList {
		keys = append(keys, fileKey{name: keyListeners, kind: kindList})
	}
	return keys
}

// loadFile reads the TOML file at path and sets each of its keys through
// fs's flag of that name, but for the flags in skip, which the command
// line sets. An error names the file, the line and the key, and is a
// *UsageError.
func loadFile(fs *flag.FlagSet, path string, skip map[string]bool) (*fileSettings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("-config: %v", err)
	}
	fl := &fileSettings{path: path, lines: map[string]int{}}
	keys := schema(fs)
	fields := make([]reflect.StructField, len(keys))
	for i, k := range keys {
		t := k.kind.goType()
		switch k.name {
		case keyCommand:
			t = reflect.TypeFor[[]string]()
		case keyListeners:
			t = reflect.TypeFor[map[string]string]()
		}
		fields[i] = reflect.StructField{Name: "F" + strconv.Itoa(i), Type: t, Tag: reflect.StructTag(`toml:"` + k.name + `"`)}
	}
	v := reflect.New(reflect.StructOf(fields))
	if err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(v.Interface()); err != nil {
		return nil, fl.decodeError(data, keys, err)
	}
	lines := keyLines(data)
	for i, k := range keys {
		fv := v.Elem().Field(i)
		if fv.IsZero() || skip[k.name] || k.name == keyListeners && skip["listen"] {
			continue
		}
		line := lines[k.name]
		switch k.name {
		case keyCommand:
			fl.command = fv.Interface().([]string)
		case keyListeners:
			err = fl.setListeners(fs.Lookup("listen"), fv.Interface().(map[string]string), lines)
		default:
			err = fl.set(k, fv, line)
		}
		if err != nil {
			return nil, err
		}
		if _, ok := fl.lines[k.name]; !ok && k.name != keyListeners {
			fl.lines[k.name] = line
		}
	}
	return fl, nil
}

// set sets key k's decoded value fv through its flag.
func (fl *fileSettings) set(k fileKey, fv reflect.Value, line int) error {
	var values []string
	switch x := fv.Elem().Interface().(type) {
	case int64:
		values = []string{strconv.FormatInt(x, 10)}
	case bool:
		values = []string{strconv.FormatBool(x)}
	case string:
		values = []string{x}
	case []any: // a repeatable flag's array
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return fl.errorf(line, k.name, "want %s, not an array holding a TOML %s", k.kind.want(), tomlType(e))
			}
			values = append(values, s)
		}
	default:
		return fl.errorf(line, k.name, "want %s or one string, not %s", k.kind.want(), tomlType(x))
	}
	for _, s := range values {
		if err := k.flag.Value.Set(s); err != nil {
			if k.kind == kindDuration {
				err = errors.New(`want a duration such as "30s" or "1m30s"`)
			}
			return fl.errorf(line, k.name, "invalid value %q: %v", s, err)
		}
	}
	return nil
}

// setListeners sets the listeners table's entries, in the file's order,
// as -listen NAME=ADDRESS.
func (fl *fileSettings) setListeners(listen *flag.Flag, table map[string]string, lines map[string]int) error {
	names := make([]string, 0, len(table))
	for name := range table {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return lines[keyListeners+"."+a] - lines[keyListeners+"."+b] })
	for _, name := range names {
		line := lines[keyListeners+"."+name]
		if _, ok := fl.lines["listen"]; !ok {
			fl.lines["listen"] = line
		}
		if err := listen.Value.Set(name + "=" + table[name]); err != nil {
			return fl.errorf(line, keyListeners+"."+name, "invalid value %q: %v", table[name], err)
		}
	}
	return nil
}

// errorf is a usage error at line of the file, naming key.
func (fl *fileSettings) errorf(line int, key, format string, a ...any) error {
	return usagef("%s:%d: %s: %s", fl.path, line, key, fmt.Sprintf(format, a...))
}

// mismatch finds the TOML type in go-toml's "cannot decode TOML integer
// into ...".
var mismatch = regexp.MustCompile(`cannot decode TOML (\w+)`)

// decodeError is go-toml's error for the file, as file:line: key.
func (fl *fileSettings) decodeError(data []byte, keys []fileKey, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		line, _ := e.Position()
		key := strings.Join(e.Key(), ".")
		if notSettings[key] {
			return fl.errorf(line, key, "-%s is a command-line flag only", key)
		}
		return fl.errorf(line, key, "unknown key (each key is a flag's name: workers, grace, ...)")
	}
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return usagef("%s: %v", fl.path, err)
	}
	line, _ := de.Position()
	key := strings.Join(de.Key(), ".")
	if key == "" {
		key = keyAt(data, line)
	}
	if m := mismatch.FindStringSubmatch(de.Error()); m != nil {
		name, _, _ := strings.Cut(key, ".")
		want := "another type"
		for _, k := range keys {
			if k.name == name {
				want = k.kind.want()
			}
		}
		if name == keyListeners {
			want = `NAME = "ADDRESS" strings`
		}
		return fl.errorf(line, key, "want %s, not a TOML %s", want, m[1])
	}
	return fl.errorf(line, key, "%s", strings.TrimPrefix(de.Error(), "toml: "))
}

// tomlType names a decoded value's TOML type.
func tomlType(v any) string {
	switch v.(type) {
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	}
	return "date or time"
}

// keyLines is the line of each key the TOML document data sets, by its
// dotted path ("workers", "listeners.public"). data has decoded: it parses.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyPath(e)
			if len(table) > 0 {
				lines[strings.Join(table, ".")] = p.Shape(e.Child().Raw).Start.Line
			}
		case unstable.KeyValue:
			path := append(slices.Clone(table), keyPath(e)...)
			it := e.Key()
			if it.Next() {
				lines[strings.Join(path, ".")] = p.Shape(it.Node().Raw).Start.Line
			}
		}
	}
	return lines
}

// keyPath is the parts of the key of a table header or key-value node.
func keyPath(n *unstable.Node) []string {
	var parts []string
	it := n.Key()
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// keyAt guesses the key on a line of a document that does not parse: what
// stands before its '='.
func keyAt(data []byte, line int) string {
	all := strings.Split(string(data), "\n")
	if line < 1 || line > len(all) {
		return "?"
	}
	text := strings.TrimSpace(all[line-1])
	if k, _, ok := strings.Cut(text, "="); ok && strings.TrimSpace(k) != "" {
		return strings.TrimSpace(k)
	}
	if strings.HasPrefix(text, "[") {
		return strings.Trim(text, "[] ")
	}
	return "?"
}

// flagNamed finds the subject of a validation error: "flag -workers".
var flagNamed = regexp.MustCompile(`flag -([a-z][a-z0-9-]*)`)

// locate puts the file's line and key before a validation error err whose
// subject the file set: "prefork.toml:3: workers: invalid value 0 for flag
// -workers: ...". Other errors, and all without a file, are unchanged.
func (fl *fileSettings) locate(err error) error {
	if fl == nil {
		return err
	}
	m := flagNamed.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	line, ok := fl.lines[m[1]]
	if !ok {
		return err
	}
	return fl.errorf(line, m[1], "%v", err)
}
