package settings

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeConfig writes a configuration file into the test's temp dir.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prefork.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// same compares two Settings but for where they were read from.
func same(a, b Settings) bool {
	a.from, b.from = nil, nil
	return reflect.DeepEqual(a, b)
}

// Every flag that is a setting is a key of the file: walked from the flag
// set, so a new flag without a sample here fails. Each key set in a file
// gives what its flag gives on the command line, and not the default.
func TestFileSetsEveryFlag(t *testing.T) {
	auth := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(auth, []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// value: as on the command line; with: flags it needs, on both.
	samples := map[string]struct {
		value string
		with  []string
	}{
		"listen": {value: "127.0.0.1:8080"}, "workers": {value: "3"}, "mode": {value: "shared"},
		"balance": {value: "least-conn"}, "grace": {value: "5s"}, "ready-timeout": {value: "7s"},
		"log-format": {value: "json"}, "queue-max": {value: "10"}, "queue-timeout": {value: "3s"},
		"rebalance": {value: "false"}, "handback": {value: "false"}, "max-crashes": {value: "4"}, "crash-window": {value: "2m0s"},
		"hang-timeout": {value: "9s"}, "max-requests": {value: "100"},
		"max-requests-jitter": {value: "10", with: []string{"-max-requests", "100"}},
		"max-rss":             {value: "512MiB"}, "control": {value: "/run/p.sock"}, "metrics": {value: "127.0.0.1:9100"},
		"admin":          {value: "127.0.0.1:9200"},
		"admin-actions":  {value: "true", with: []string{"-admin", "127.0.0.1:9200"}},
		"admin-auth":     {value: auth, with: []string{"-admin", "127.0.0.1:9200"}},
		"admin-tls-cert": {value: "/etc/cert.pem", with: []string{"-admin", "127.0.0.1:9200", "-admin-tls-key", "/etc/key.pem"}},
		"admin-tls-key":  {value: "/etc/key.pem", with: []string{"-admin", "127.0.0.1:9200", "-admin-tls-cert", "/etc/cert.pem"}},
		"user":           {value: "nobody"}, "group": {value: "nogroup", with: []string{"-user", "nobody"}},
		"worker-output": {value: "capture"}, "sched": {value: "normal"},
		"defer-accept": {value: "true"}, "strict-listen": {value: "true"},
		"listen-mode": {value: "0660"}, "listen-owner": {value: "1000"}, "listen-group": {value: "1000"},
		"worker-protocol": {value: "plain", with: []string{"-mode", "shared"}},
		"sticky":          {value: "cookie:sid"}, "sticky-wait": {value: "1s"}, "sticky-hold": {value: "2s"},
		"sticky-table": {value: "10"}, "sticky-table-age": {value: "1m0s"}, "sticky-forget": {value: "never"},
		"proxy-protocol": {value: "true"}, "proxy-wait": {value: "2s"},
		"proxy-from": {value: "10.0.0.0/8", with: []string{"-proxy-protocol"}},
		"canary":     {value: "2"}, "bake": {value: "10s"}, "canary-insufficient": {value: "continue"},
		"canary-error-pp": {value: "2.5"}, "canary-error-ratio": {value: "3"},
		"canary-latency-ratio": {value: "2"}, "canary-min-requests": {value: "50"},
	}
	def, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := newCommandLine(new(Settings), forCommand)
	keys := schema(cl.fs)
	if len(keys) < 25 {
		t.Fatalf("schema has %d keys", len(keys))
	}
	for _, k := range keys {
		if k.flag == nil {
			continue // command and listeners: TestFilePrecedence
		}
		s, ok := samples[k.name]
		if !ok {
			t.Errorf("flag -%s: no sample value: add one, and check the file sets it", k.name)
			continue
		}
		want, err := Parse(append(s.with, "-"+k.name+"="+s.value))
		if err != nil {
			t.Fatalf("-%s %s: %v", k.name, s.value, err)
		}
		value := tomlString(s.value)
		if k.kind == kindInt || k.kind == kindBool {
			value = s.value
		}
		path := writeConfig(t, k.name+" = "+value+"\n")
		have, err := Parse(append(s.with, "-config", path))
		if err != nil {
			t.Errorf("%s = %s: %v", k.name, value, err)
			continue
		}
		if !same(have, want) || same(have, def) {
			t.Errorf("%s = %s in a file: have %+v, want %+v (not the default)", k.name, value, have, want)
		}
		if have.ConfigFile() != path {
			t.Errorf("ConfigFile() = %q, want %q", have.ConfigFile(), path)
		}
	}
}

// Flags override the file, key by key; COMMAND overrides command.
func TestFilePrecedence(t *testing.T) {
	path := writeConfig(t, `
workers = 3
grace = "5s"
listen = "127.0.0.1:7001"
max-requests = 50
command = ["/bin/app", "-x"]
`)
	st, err := Parse([]string{"-workers", "2", "-config", path, "-listen", "127.0.0.1:7002"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers != 2 || st.Listen.String() != "127.0.0.1:7002" {
		t.Errorf("flags did not override the file: workers %d, listen %s", st.Workers, st.Listen.String())
	}
	if st.Grace.String() != "5s" || st.MaxRequests != 50 || !reflect.DeepEqual(st.Command, []string{"/bin/app", "-x"}) {
		t.Errorf("the file's keys did not apply: grace %s, max-requests %d, command %q", st.Grace, st.MaxRequests, st.Command)
	}
	st, err = Parse([]string{"-config", path, "--", "/bin/other"})
	if err != nil || !reflect.DeepEqual(st.Command, []string{"/bin/other"}) || st.Workers != 3 {
		t.Errorf("COMMAND did not override command: %q, workers %d, %v", st.Command, st.Workers, err)
	}
	// A bad value in the file is an error even where a flag overrides it?
	// No: the flag wins, and the file's key is not read.
	bad := writeConfig(t, "workers = 0\n")
	if _, err := Parse([]string{"-config", bad, "-workers", "2"}); err != nil {
		t.Errorf("a flag overriding a bad key: %v", err)
	}
	// A Node.js command from the file picks the node protocol, as after --.
	node := writeConfig(t, `command = ["node", "app.js"]`)
	if st, err := Parse([]string{"-config", node}); err != nil || st.WorkerProtocol != ProtocolNode || st.Mode != "shared" {
		t.Errorf("command = node app.js: protocol %q mode %q, %v", st.WorkerProtocol, st.Mode, err)
	}
}

// Each kind of bad file is a usage error naming file:line: key.
func TestFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", "workers = 2\n\nworkerz = 3\n", ":3: workerz: unknown key"},
		{"unknown table", "workers = 2\n[server]\nport = 3\n", ":2: server: unknown key"},
		{"a flag only", "version = true\n", ":1: version: -version is a command-line flag only"},
		{"wrong type", "grace = \"5s\"\nworkers = \"4\"\n", `:2: workers: want an integer, not a TOML string`},
		{"duration as integer", "\n\ngrace = 30\n", `:3: grace: want a duration string such as "30s", not a TOML integer`},
		{"bool as string", "rebalance = \"no\"\n", `:1: rebalance: want true or false, not a TOML string`},
		{"bad value", "mode = \"rr\"\ngrace = \"soon\"\n", `:2: grace: invalid value "soon": want a duration`},
		{"bad size", "max-rss = \"lots\"\n", `:1: max-rss: invalid value "lots": want a positive size`},
		{"invalid setting", "# comment\nworkers = 0\n", ":2: workers: invalid value 0 for flag -workers"},
		{"invalid combination", "workers = 2\nmax-requests-jitter = 5\n", ":2: max-requests-jitter: flag -max-requests-jitter needs -max-requests"},
		{"bad command", "command = \"app\"\n", ":1: command: want an array of strings, not a TOML string"},
		{"syntax", "workers = 2\ngrace = \"5s\n", ":2: grace: "},
		{"syntax array", "workers = 2\n\nlisten = [\n", ":3: listen: "},
		{"duplicate key", "workers = 2\nworkers = 3\n", ":2: workers: key workers is already defined"},
	} {
		path := writeConfig(t, tc.text)
		_, err := Parse([]string{"-config", path})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), path+tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: want one line %q, have %v", tc.name, path+tc.want, err)
		}
	}
	if _, err := Parse([]string{"-config", "/nonexistent/prefork.toml"}); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "/nonexistent/prefork.toml") {
		t.Errorf("a missing file: %v", err)
	}
}

// -print-config's output is a configuration file giving the same
// settings: the file and the flags merged, defaults included.
func TestPrintConfigRoundTrip(t *testing.T) {
	path := writeConfig(t, "workers = 3\nmax-rss = \"1536MiB\"\nhang-timeout = \"1m30s\"\n")
	st, act, err := ParseCommandLine([]string{"-config", path, "-print-config", "-grace", "7s", "-metrics", "127.0.0.1:9100",
		"--", "/bin/app", `a "quoted" \ arg`, "tab\there", "ünï"})
	if err != nil || act != ActionPrintConfig {
		t.Fatalf("%v, action %v", err, act)
	}
	out := st.TOML()
	for _, want := range []string{"\nworkers = 3\n", "\ngrace = \"7s\"\n", "\nmax-rss = \"1536MiB\"\n", "\nqueue-max = 4096\n", "\nrebalance = true\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-print-config has no %q:\n%s", want, out)
		}
	}
	again, err := Parse([]string{"-config", writeConfig(t, string(out))})
	if err != nil {
		t.Fatalf("-print-config's output does not read back: %v\n%s", err, out)
	}
	if !same(again, st) {
		t.Errorf("round trip: have %+v, want %+v", again, st)
	}
	if string(again.TOML()) != string(out) {
		t.Errorf("printed twice, differs:\n%s\n---\n%s", out, again.TOML())
	}
}

// Listeners: an array for listen, or a [listeners] table of NAME =
// "ADDRESS" in the file's order; -listen on the command line replaces
// them all.
func TestFileListeners(t *testing.T) {
	path := writeConfig(t, `listen = ["127.0.0.1:7001"]

[listeners]
public = ":8080"
internal = "unix:/run/app.sock"
admin = "[::1]:8081"
`)
	st, err := Parse([]string{"-config", path})
	want := Listeners{"127.0.0.1:7001", "public=:8080", "internal=unix:/run/app.sock", "admin=[::1]:8081"}
	if err != nil || !reflect.DeepEqual(st.Listen, want) {
		t.Fatalf("listeners %q (%v), want %q", st.Listen, err, want)
	}
	again, err := Parse([]string{"-config", writeConfig(t, string(st.TOML()))})
	if err != nil || !same(again, st) {
		t.Errorf("-print-config's listeners read back as %q (%v), want %q", again.Listen, err, st.Listen)
	}
	named, err := Parse([]string{"-config", writeConfig(t, "[listeners]\npublic = \":8080\"\ninternal = \"unix:/run/app.sock\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if out := string(named.TOML()); !strings.HasSuffix(out, "[listeners]\npublic = \":8080\"\ninternal = \"unix:/run/app.sock\"\n") {
		t.Errorf("-print-config of named listeners, want a [listeners] table last:\n%s", out)
	}
	if again, err := Parse([]string{"-config", writeConfig(t, string(named.TOML()))}); err != nil || !same(again, named) {
		t.Errorf("the [listeners] table read back as %q (%v), want %q", again.Listen, err, named.Listen)
	}
	st, err = Parse([]string{"-config", path, "-listen", "a=127.0.0.1:7002"})
	if err != nil || !reflect.DeepEqual(st.Listen, Listeners{"a=127.0.0.1:7002"}) {
		t.Errorf("-listen did not replace the file's listeners: %q, %v", st.Listen, err)
	}
	st, err = Parse([]string{"-config", writeConfig(t, `listen = "unix:/run/one.sock"`)})
	if err != nil || !reflect.DeepEqual(st.Listen, Listeners{"unix:/run/one.sock"}) {
		t.Errorf("listen as one string: %q, %v", st.Listen, err)
	}
	for _, tc := range []struct{ text, want string }{
		{"[listeners]\npublic = \":8080\"\ninternal = \"nohost\"\n", ":3: listeners.internal: invalid value \"nohost\""},
		{"[listeners]\npublic = 8080\n", `:2: listeners.public: want NAME = "ADDRESS" strings, not a TOML integer`},
		{"listen = [\":8080\", 8081]\n", ":1: listen: want an array of strings, not an array holding a TOML integer"},
		{"\nlisten = [\":8080\", \"x\"]\n", ":2: listen: invalid value \"x\""},
	} {
		path := writeConfig(t, tc.text)
		if _, err := Parse([]string{"-config", path}); err == nil || !strings.HasPrefix(err.Error(), path+tc.want) {
			t.Errorf("%q: want %q, have %v", tc.text, path+tc.want, err)
		}
	}
}

// deploy/'s configuration file reads, as the supervisor reads it.
func TestDeployConfigFile(t *testing.T) {
	st, err := Parse([]string{"-config", "../../deploy/systemd/prefork.toml"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.Listen, Listeners{":8080"}) || st.Grace.String() != "30s" {
		t.Errorf("deploy/systemd/prefork.toml: listen %q, grace %s", st.Listen, st.Grace)
	}
}
