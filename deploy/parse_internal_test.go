package deploy

import (
	"slices"
	"testing"
	"time"
)

// The parsers are small; these pin down the corners the real files do not
// exercise.

func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[Service]\nExecStart=/bin/a \\\n  -x 1\n; c\nSystemCallFilter=@a\nSystemCallFilter=\nSystemCallFilter=@b @c\n[Unit]\nAfter = x.socket\n")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := u.get("Service", "ExecStart"); v != "/bin/a  -x 1" {
		t.Errorf("continuation: have %q", v)
	}
	if want, have := []string{"@b", "@c"}, u.list("Service", "SystemCallFilter"); !slices.Equal(want, have) {
		t.Errorf("list reset: want %v, have %v", want, have)
	}
	if v, _ := u.get("Unit", "After"); v != "x.socket" {
		t.Errorf("spaces around '=': have %q", v)
	}
	for _, bad := range []string{"Key=outside\n", "[Service\n", "[Service]\nno equals sign\n"} {
		if _, err := parseUnit(bad); err == nil {
			t.Errorf("parseUnit(%q): want an error", bad)
		}
	}
}

func TestParseTimespan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"45": 45 * time.Second, "45s": 45 * time.Second, "1min 30s": 90 * time.Second,
		"2m": 2 * time.Minute, "500ms": 500 * time.Millisecond, "1h": time.Hour,
	} {
		if have, err := parseTimespan(in); err != nil || have != want {
			t.Errorf("parseTimespan(%q) = %v, %v; want %v", in, have, err, want)
		}
	}
	for _, bad := range []string{"", "abc", "5 fortnights"} {
		if _, err := parseTimespan(bad); err == nil {
			t.Errorf("parseTimespan(%q): want an error", bad)
		}
	}
}

func TestFlagValue(t *testing.T) {
	args := []string{"-listen", ":8080", "--workers=2", "-grace", "25s", "--", "-mode", "x"}
	for name, want := range map[string]string{"listen": ":8080", "workers": "2", "grace": "25s"} {
		if have, ok := flagValue(args, name); !ok || have != want {
			t.Errorf("flagValue(%s) = %q, %v; want %q", name, have, ok, want)
		}
	}
	if v, ok := flagValue(args, "mode"); ok {
		t.Errorf("flag after --: have %q", v)
	}
}

func TestParseDockerfile(t *testing.T) {
	df, err := parseDockerfile("# syntax=docker/dockerfile:1\nARG V=1.2\nFROM --platform=$BUILDPLATFORM golang:${V} AS b\nRUN a \\\n  # c\n  b\nFROM scratch\nCOPY --from=b /x /y/\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) != 2 || df.stages[0].image != "golang:1.2" || df.stages[0].name != "b" {
		t.Fatalf("stages %+v", df.stages)
	}
	if run := df.stages[0].all("RUN"); len(run) != 1 || run[0].args != "a  b" {
		t.Errorf("RUN %+v", run)
	}
	if !copiesInto(df, df.stages[1], "x", "/y") {
		t.Error("copiesInto missed COPY --from=b /x /y/")
	}
	if _, err := parseDockerfile("RUN x\n"); err == nil {
		t.Error("RUN before FROM: want an error")
	}
}

func TestDockerignoreMatching(t *testing.T) {
	rules := parseDockerignore(".git\n**/*_test.go\n*.md\n!README.md\ndocs/\n")
	for p, want := range map[string]bool{
		".git/HEAD": true, "a/b/c_test.go": true, "c_test.go": true, "x.md": true,
		"README.md": false, "docs/a/b": true, "a/x.md": false, "main.go": false, "gitx": false,
	} {
		if have := ignored(rules, p); have != want {
			t.Errorf("ignored(%q) = %v, want %v", p, have, want)
		}
	}
}
