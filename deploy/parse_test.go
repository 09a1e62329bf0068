package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// unit is a parsed systemd unit file: section → key → values in order. A
// key may repeat (ExecStartPre=, SystemCallFilter=); an empty assignment is
// kept as "" because it resets the list in systemd.
type unit map[string]map[string][]string

// parseUnit reads the INI dialect of systemd.syntax(7): [Section] headers,
// Key=Value lines, '#' and ';' comments, '\' line continuation.
func parseUnit(text string) (unit, error) {
	u := unit{}
	var section string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if next != "" && (next[0] == '#' || next[0] == ';') {
				continue // comments inside a continuation are skipped
			}
			line = strings.TrimSuffix(line, `\`) + " " + next
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", i+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: assignment outside a section", i+1)
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: no '=' in %q", i+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	return u, nil
}

// get returns the last value of key, the one systemd uses for single-valued
// settings.
func (u unit) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// list returns the space-separated words of every assignment of key after
// the last empty one, as systemd accumulates list settings.
func (u unit) list(section, key string) []string {
	var words []string
	for _, v := range u[section][key] {
		if v == "" {
			words = nil
			continue
		}
		words = append(words, strings.Fields(v)...)
	}
	return words
}

// parseBool follows systemd's boolean spellings.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

var timespanUnits = map[string]time.Duration{
	"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
	"ms": time.Millisecond, "msec": time.Millisecond,
	"us": time.Microsecond, "usec": time.Microsecond,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
}

var timespanPart = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)`)

// parseTimespan reads systemd.time(7) spans such as "45", "45s", "1min 30s".
func parseTimespan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "infinity" {
		return time.Duration(1<<63 - 1), nil
	}
	var total time.Duration
	for rest := s; rest != ""; rest = strings.TrimSpace(rest) {
		m := timespanPart.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("bad time span %q", s)
		}
		unit, ok := timespanUnits[m[2]]
		if !ok {
			return 0, fmt.Errorf("bad unit %q in time span %q", m[2], s)
		}
		n, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		total += time.Duration(n * float64(unit))
		rest = rest[len(m[0]):]
	}
	if s == "" {
		return 0, fmt.Errorf("empty time span")
	}
	return total, nil
}

// execArgs splits an Exec*= command line into argv, dropping systemd's
// special prefixes (@ - : + !). The units here need no quoting.
func execArgs(line string) []string {
	argv := strings.Fields(line)
	if len(argv) > 0 {
		argv[0] = strings.TrimLeft(argv[0], "@-:+!")
	}
	return argv
}

// flagValue finds a Go flag in args the way package flag would accept it:
// -name value, --name value, -name=value, --name=value; parsing stops at
// "--" or the first non-flag argument.
func flagValue(args []string, name string) (string, bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			return "", false
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		k, v, hasValue := strings.Cut(a, "=")
		if k != name {
			if !hasValue {
				i++ // every supervisor flag takes a value
			}
			continue
		}
		if hasValue {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", false
	}
	return "", false
}

// listenPort is the port of a -listen HOST:PORT value or a systemd
// ListenStream= (PORT, HOST:PORT, [V6]:PORT).
func listenPort(addr string) (int, error) {
	if p, err := strconv.Atoi(addr); err == nil {
		return p, nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// instruction is one Dockerfile instruction after line continuation.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from         instruction
	image, name  string
	instructions []instruction
}

type dockerfile struct {
	args   map[string]string // ARGs declared before the first FROM, with defaults
	stages []stage
}

// parseDockerfile understands what this repository's Dockerfile uses:
// comments and parser directives, '\' continuation, global ARGs with
// defaults in FROM, and "FROM image AS name".
func parseDockerfile(text string) (*dockerfile, error) {
	df := &dockerfile{args: map[string]string{}}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue
			}
			line = strings.TrimSuffix(line, `\`) + " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:] // --platform=...
			}
			if len(f) != 1 && !(len(f) == 3 && strings.EqualFold(f[1], "AS")) {
				return nil, fmt.Errorf("line %d: bad FROM %q", start, in.args)
			}
			st := stage{from: in, image: df.expand(f[0])}
			if len(f) == 3 {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0:
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", start, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			df.args[k] = v
		default:
			st := &df.stages[len(df.stages)-1]
			st.instructions = append(st.instructions, in)
		}
	}
	return df, nil
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func (df *dockerfile) expand(s string) string {
	return argRef.ReplaceAllStringFunc(s, func(ref string) string {
		return df.args[argRef.FindStringSubmatch(ref)[1]]
	})
}

// all returns the instructions of st with the given command.
func (st stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.instructions {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm decodes a JSON exec-form argument list (ENTRYPOINT, CMD).
func execForm(args string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		return nil, fmt.Errorf("not exec form %s: %w", args, err)
	}
	return argv, nil
}

// envAssignments parses "ENV K=V K2=V2" (the legacy "ENV K V" form too).
func envAssignments(args string) map[string]string {
	env := map[string]string{}
	f := strings.Fields(args)
	if len(f) == 2 && !strings.Contains(f[0], "=") {
		env[f[0]] = f[1]
		return env
	}
	for _, kv := range f {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = strings.Trim(v, `"'`)
	}
	return env
}

// ignoreRule is one line of a .dockerignore file.
type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

// parseDockerignore compiles .dockerignore patterns: Go filepath.Match
// syntax plus "**" for any number of directories, and "!" exceptions.
func parseDockerignore(text string) []ignoreRule {
	var rules []ignoreRule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, line[1:]
		}
		line = strings.Trim(line, "/")
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				b.WriteString("(?:.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				b.WriteString(".*")
				i++
			case c == '*':
				b.WriteString("[^/]*")
			case c == '?':
				b.WriteString("[^/]")
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		// A pattern that names a directory excludes everything in it.
		b.WriteString("(?:/.*)?$")
		r.re = regexp.MustCompile(b.String())
		rules = append(rules, r)
	}
	return rules
}

// ignored reports whether path (relative to the context root, with '/')
// is left out of the build context; the last matching rule wins.
func ignored(rules []ignoreRule, path string) bool {
	out := false
	for _, r := range rules {
		if r.re.MatchString(path) {
			out = !r.negate
		}
	}
	return out
}
