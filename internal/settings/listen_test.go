package settings

import (
	"errors"
	"strings"
	"testing"
)

func TestListenRepeatable(t *testing.T) {
	st, err := Parse([]string{"-listen", "api=127.0.0.1:3001", "-listen", "[::1]:3002", "-listen", "web=unix:/run/app.sock", "-listen", "fd:5", "-listen-mode", "0660"})
	if err != nil {
		t.Fatal(err)
	}
	specs, err := st.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, s := range specs {
		have = append(have, s.Name+"="+s.Network+"|"+s.Address())
	}
	want := "api=tcp|127.0.0.1:3001 [::1]:3002=tcp|[::1]:3002 web=unix|unix:/run/app.sock fd:5=fd|fd:5"
	if strings.Join(have, " ") != want {
		t.Errorf("listeners %v, want %s", have, want)
	}
	if st.ListenMode != 0o660 {
		t.Errorf("-listen-mode %#o, want 0660", st.ListenMode)
	}
	def, err := Parse(nil)
	if err != nil || def.Listen.String() != ":3000" || def.Listen.First() != ":3000" {
		t.Errorf("default -listen %q (%v), want :3000", def.Listen.String(), err)
	}
}

func TestListenRefused(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"-listen :3001 -listen :3001", `invalid value for flag -listen: ":3001": duplicate address, given as ":3001" already`},
		{"-listen a=:3001 -listen a=:3002", `invalid value for flag -listen: "a=:3002": the name "a" is taken by "a=:3001"`},
		{"-listen unix:/tmp/a.sock -listen unix:/tmp/a.sock", `duplicate address`},
		{"-listen unix:", `invalid value "unix:" for flag -listen: "unix:": unix: needs a path`},
		{"-listen fd:2", `invalid value "fd:2" for flag -listen: "fd:2": fd: needs a descriptor number of 3 or more`},
		{"-listen b@d=:3000", `invalid value "b@d=:3000" for flag -listen`},
		{"-listen :99999", `invalid value ":99999" for flag -listen`},
		{"-listen-mode 999", `invalid value "999" for flag -listen-mode: want octal permission bits`},
		{"-listen-owner no-such-user-here", `invalid value for flag -listen-owner or -listen-group`},
	} {
		_, err := Parse(strings.Fields(tc.args))
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}
