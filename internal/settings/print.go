package settings

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// TOML is st as a configuration file for -config: every setting, defaults
// included, one key per flag in the flags' order, each after its flag's
// help as a comment, and the worker command. Reading it back gives st
// again (-print-config).
func (st Settings) TOML() []byte {
	var b strings.Builder
	b.WriteString("# prefork supervisor settings (supervisor -config FILE); flags override them.\n")
	var table []string
	for _, kv := range st.keyValues() {
		if kv.key == "listen" {
			if table = listenersTable(st.Listen); table != nil {
				continue // after the keys: a table ends them
			}
		}
		fmt.Fprintf(&b, "\n# %s\n%s = %s\n", kv.help, kv.key, kv.toml)
	}
	if table != nil {
		fmt.Fprintf(&b, "\n# listen: one NAME = \"ADDRESS\" per listener, in order\n[%s]\n%s\n", keyListeners, strings.Join(table, "\n"))
	}
	return []byte(b.String())
}

// listenersTable is the listeners as the lines of a [listeners] table,
// if each has a name a bare TOML key can hold; else nil.
func listenersTable(l Listeners) []string {
	var lines []string
	for _, e := range l {
		name, addr, ok := strings.Cut(e, "=")
		if !ok || name == "" || strings.TrimFunc(name, func(r rune) bool {
			return r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))
		}) != "" {
			return nil
		}
		lines = append(lines, name+" = "+tomlString(addr))
	}
	return lines
}

// keyValue is one key of a configuration file with its value.
type keyValue struct {
	key, help string
	toml      string // the value as TOML
}

// keyValues is st's keys and values, as TOML prints them: one per
// setting, and command if st has one.
func (st Settings) keyValues() []keyValue {
	fs, c := st.flags()
	var kvs []keyValue
	for _, k := range schema(fs) {
		var v string
		switch {
		case k.name == keyListeners:
			continue // -listen's values are listen's
		case k.name == keyCommand && c.Command == nil:
			continue
		case k.name == keyCommand:
			v = tomlArray(c.Command)
		case k.kind == kindList:
			v = tomlArray(listValues(k.flag))
		case k.kind == kindString || k.kind == kindDuration:
			v = tomlString(k.flag.Value.String())
		default:
			v = k.flag.Value.String()
		}
		help := "the worker COMMAND and its arguments (after -- on the command line)"
		if k.flag != nil {
			help = strings.ReplaceAll(k.flag.Usage, "`", "")
		}
		kvs = append(kvs, keyValue{key: k.name, help: help, toml: v})
	}
	return kvs
}

// flags is a copy of st with the settings' flags over it: each flag's
// value is the copy's.
func (st Settings) flags() (*flag.FlagSet, *Settings) {
	c := new(Settings)
	fs := flag.NewFlagSet("supervisor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineSettings(fs, c) // sets c's fields to the defaults:
	*c = st               // the flags' values are st's again
	return fs, c
}

// listValues is a repeatable flag's values.
func listValues(f *flag.Flag) []string {
	if r, ok := f.Value.(repeatable); ok {
		return r.Values()
	}
	v, _ := f.Value.(flag.Getter).Get().([]string)
	return v
}

// tomlArray is ss as a TOML array of strings.
func tomlArray(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// tomlString is s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsControl(r):
			b.WriteString(`\u` + fmt.Sprintf("%04X", r))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
