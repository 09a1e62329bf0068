package settings

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Every field but Command and Respawn is the flag of the same name in kebab case, as
// the doc says and as Validate's errors assume.
func TestFieldsAreFlags(t *testing.T) {
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Settings]()) {
		name := f.Name
		if name == "Command" || name == "Respawn" || f.Anonymous || !f.IsExported() {
			continue
		}
		flag := "-" + kebab(name)
		if _, err := Parse([]string{flag + "=x"}); err != nil && strings.Contains(err.Error(), "not defined") {
			t.Errorf("Settings.%s: no flag %s", name, flag)
		}
		if !strings.Contains(Usage, "  "+flag+" ") && !strings.Contains(Usage, ", "+flag+" ") {
			t.Errorf("Settings.%s: %s is not in Usage", name, flag)
		}
	}
	for have, want := range map[string]string{"MaxRSS": "max-rss", "MaxRequestsJitter": "max-requests-jitter", "Listen": "listen", "AdminActions": "admin-actions"} {
		if kebab(have) != want {
			t.Errorf("kebab(%s) = %s, want %s", have, kebab(have), want)
		}
	}
}

// A Go caller's errors name the field it set; the command line's name the
// flag (TestParseUsageErrors).
func TestValidateNamesFields(t *testing.T) {
	def, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*Settings)
		want   string
	}{
		{func(s *Settings) { *s = Settings{} }, `invalid value "" for Settings.Listen`},
		{func(s *Settings) { s.Workers = -1 }, "invalid value -1 for Settings.Workers: must be from 0 to 1024"},
		{func(s *Settings) { s.Respawn = "sometimes" }, `invalid value "sometimes" for Settings.Respawn: must be auto or manual`},
		{func(s *Settings) { s.Mode = "fast" }, `invalid value "fast" for Settings.Mode`},
		{func(s *Settings) { s.HangTimeout = 1 }, "for Settings.HangTimeout"},
		{func(s *Settings) { s.MaxRequestsJitter = 3 }, "Settings.MaxRequestsJitter needs Settings.MaxRequests"},
		{func(s *Settings) { s.AdminActions = true }, "Settings.AdminActions needs Settings.Admin"},
		{func(s *Settings) { s.WorkerProtocol = ProtocolPlain }, "Settings.Mode rr cannot be used with Settings.WorkerProtocol plain"},
	} {
		st := def
		tc.change(&st)
		err := st.Validate()
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "flag") {
			t.Errorf("have %v, want an ErrUsage with %q and no flag", err, tc.want)
		}
	}
	if err := def.Validate(); err != nil {
		t.Errorf("the defaults: %v", err)
	}
	// Node's start-up: no workers, then Fork; a command line needs one.
	none := def
	none.Workers, none.Respawn = 0, RespawnManual
	if err := none.Validate(); err != nil {
		t.Errorf("no workers, manual respawn: %v", err)
	}
	if _, err := Parse([]string{"-workers", "0"}); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "-workers: must be from 1") {
		t.Errorf("-workers 0: %v, want a usage error from 1", err)
	}
}
