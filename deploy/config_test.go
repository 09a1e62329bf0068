package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"
)

// installed maps where an artefact installs a configuration file to the
// file of this module it installs.
var installed = map[string]string{
	"/etc/prefork/prefork.toml": "systemd/prefork.toml",
}

// settings is the supervisor's settings as a deployment gives them: the
// flags of its command line over the keys of its -config file, as the
// supervisor reads them.
type settings struct {
	args []string       // the command line, without the program
	file map[string]any // the -config file's keys; nil without one
	rel  string         // that file in this module
}

// flagKey is a supervisor flag's name, which is also its key in a file.
var flagKey = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)

func loadSettings(t *testing.T, args []string) settings {
	t.Helper()
	s := settings{args: args}
	path, ok := flagValue(args, "config")
	if !ok {
		return s
	}
	if s.rel, ok = installed[path]; !ok {
		t.Fatalf("-config %s: no file of deploy/ installs there", path)
	}
	if err := toml.Unmarshal(readFile(t, s.rel), &s.file); err != nil {
		t.Fatalf("%s: %v", s.rel, err)
	}
	for key, v := range s.file {
		if _, table := v.(map[string]any); !flagKey.MatchString(key) || table && key != "listeners" {
			t.Errorf("%s: key %q is no supervisor flag's name", s.rel, key)
		}
	}
	return s
}

// get is a setting's value as text: the flag's if the command line has
// it, else the file's key (a listen array: its first listener's address).
func (s settings) get(name string) (string, bool) {
	if v, ok := flagValue(s.args, name); ok {
		return v, true
	}
	v, ok := s.file[name]
	if !ok {
		return "", false
	}
	if list, ok := v.([]any); ok && len(list) > 0 {
		v = list[0]
	}
	text := fmt.Sprint(v)
	if name == "listen" {
		if _, addr, ok := strings.Cut(text, "="); ok {
			text = addr
		}
	}
	return text, true
}

// where names a setting's source, for messages: "-grace" or
// "grace in systemd/prefork.toml".
func (s settings) where(name string) string {
	if _, ok := flagValue(s.args, name); ok || s.file == nil {
		return "-" + name
	}
	return name + " in " + s.rel
}

func TestSettingsGet(t *testing.T) {
	s := settings{args: []string{"-grace", "5s", "-config", "x"}, file: map[string]any{"grace": "30s", "workers": int64(2), "listen": []any{"web=:8080"}}, rel: "x.toml"}
	for name, want := range map[string]string{"grace": "5s", "workers": "2", "listen": ":8080"} {
		if have, _ := s.get(name); have != want {
			t.Errorf("get(%s) = %q, want %q", name, have, want)
		}
	}
	if _, ok := s.get("mode"); ok {
		t.Error("get(mode): set in neither")
	}
	if s.where("grace") != "-grace" || s.where("workers") != "workers in x.toml" {
		t.Errorf("where: %s, %s", s.where("grace"), s.where("workers"))
	}
}
