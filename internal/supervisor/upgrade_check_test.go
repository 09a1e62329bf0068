package supervisor

import (
	"strings"
	"testing"

	"github.com/prefork/prefork/internal/settings"
)

// The old image refuses a new binary whose -check-upgrade, given the same
// flags, does not name every listener it serves.
func TestCheckedListeners(t *testing.T) {
	two := []listening{{name: "127.0.0.1:8080"}, {name: "web"}}
	for _, tc := range []struct {
		out  string
		have []listening
		want string // "" accepted
	}{
		{"prefork-upgrade-check version=v2 format=3 listeners=127.0.0.1%3A8080,web\n", two, ""},
		{"prefork-upgrade-check version=v2 format=3 listeners=127.0.0.1%3A8080,web,api\n", two, ""},
		{"prefork-upgrade-check version=v2 format=3 listeners=127.0.0.1%3A8080\n", two, `would drop listener "web": given this supervisor's flags it serves 127.0.0.1:8080`},
		{"prefork-upgrade-check version=v2 format=3\n", two, `does not report its listeners (an older release?): it would drop listener "web"`},
		{"prefork-upgrade-check version=v2 format=3\n", two[:1], ""},
		{"prefork-upgrade-check version=v2 format=3 listeners=other\n", []listening{{name: "web", activated: true}}, ""},
		{"prefork-upgrade-check version=v2 format=3 listeners=unix%3A%2Ftmp%2Fa+b.sock\n", []listening{{name: "unix:/tmp/a b.sock"}}, ""},
	} {
		err := checkedListeners("/new", tc.out, tc.have)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q with %v: %v, want accepted", tc.out, tc.have, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q with %v: %v, want %q", tc.out, tc.have, err, tc.want)
		}
	}
}

// -check-upgrade names the listeners the flags give, escaped, in order.
func TestCheckListenersField(t *testing.T) {
	cfg := Config{Listen: settings.Listeners{"127.0.0.1:8080", "web=unix:/tmp/a b.sock", "unix:/tmp/c,d.sock"}}
	if got, want := checkListenersField(cfg), " listeners=127.0.0.1%3A8080,web,unix%3A%2Ftmp%2Fc%2Cd.sock"; got != want {
		t.Fatalf("checkListenersField = %q, want %q", got, want)
	}
}
