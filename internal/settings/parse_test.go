package settings

import (
	"errors"
	"github.com/prefork/prefork/internal/ipc"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.String() != ":3000" || c.Mode != "rr" || c.Grace != 30*time.Second || c.Workers < 1 || len(c.Command) != 1 || !strings.HasSuffix(c.Command[0], "/worker") {
		t.Fatalf("defaults wrong: %+v", c)
	}
}

func TestParseCommand(t *testing.T) {
	c, err := Parse([]string{"-workers", "3", "-max-rss", "512MiB", "--", "/bin/app", "-x"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 3 || c.MaxRSS != 512<<20 || len(c.Command) != 2 || c.Command[0] != "/bin/app" {
		t.Fatalf("have %+v", c)
	}
}

func TestParseUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-mode", "x"}, "-mode"},
		{[]string{"-listen", "x"}, "-listen"},
		{[]string{"-max-rss", "lots"}, "-max-rss"},
		{[]string{"-worker-output", "file"}, "-worker-output"},
		{[]string{"-metrics", "nohost"}, "-metrics"},
		{[]string{"-admin", "nohost"}, "-admin"},
		{[]string{"-admin", "127.0.0.1:99999"}, "-admin"},
		{[]string{"-admin-actions"}, "-admin-actions needs -admin"},
		{[]string{"-group", "g"}, "-group"},
		{[]string{"-hang-timeout", "0s"}, "-hang-timeout"},
		{[]string{"-queue-max", "-1"}, "-queue-max"},
		// Below two heartbeats every healthy worker would be killed as hung.
		{[]string{"-hang-timeout", "1s"}, "-hang-timeout"},
		{[]string{"-hang-timeout", "1999ms"}, "-hang-timeout"},
		// rand.IntN(J+1) panics once J+1 wraps, and N+J must not wrap.
		{[]string{"-max-requests", "100", "-max-requests-jitter", "9223372036854775807"}, "-max-requests-jitter"},
		{[]string{"-max-requests-jitter", "9223372036854775807"}, "-max-requests-jitter"},
		{[]string{"-max-requests-jitter", "10"}, "-max-requests"},
		{[]string{"-max-requests", "100", "-max-requests-jitter", "101"}, "-max-requests-jitter"},
		{[]string{"-max-requests", "9223372036854775807", "-max-requests-jitter", "1"}, "-max-requests-jitter"},
		{[]string{"-max-requests", "-1"}, "-max-requests"},
		// n * unit must not wrap around to a small limit.
		{[]string{"-max-rss", "20000000000G"}, "-max-rss"},
		{[]string{"-max-rss", "18446744073709551616"}, "-max-rss"},
		{[]string{"-mode", "shared", "-max-requests", "10", "--", "node", "app.js"}, "-max-requests"},
		{[]string{"-mode", "reuseport", "-max-rss", "1GiB", "--", "./app.mjs"}, "-max-rss"},
		{[]string{"-mode", "shared", "-worker-protocol", "fastcgi"}, "-worker-protocol"},
		// rr hands connections over a control channel these workers lack.
		{[]string{"-mode", "rr", "-worker-protocol", "plain"}, "-mode rr"},
		{[]string{"-mode", "rr", "-worker-protocol", "systemd"}, "-worker-protocol systemd"},
		{[]string{"-mode", "shared", "-worker-protocol", "plain", "-max-requests", "10"}, "-max-requests"},
		{[]string{"-mode", "reuseport", "-worker-protocol", "systemd", "-max-rss", "1GiB"}, "-max-rss"},
	} {
		_, err := Parse(tc.args)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: want a usage error naming %s, have %v", tc.args, tc.flag, err)
		}
	}
}

func TestParseLimits(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(Settings) bool
	}{
		{[]string{"-hang-timeout", "2s"}, func(c Settings) bool { return c.HangTimeout == MinHangTimeout }},
		{[]string{"-max-requests", "100", "-max-requests-jitter", "100"}, func(c Settings) bool { return c.MaxRequestsJitter == 100 }},
		{[]string{"-max-requests", "4611686018427387904", "-max-requests-jitter", "4611686018427387903"}, func(c Settings) bool {
			return c.MaxRequests+c.MaxRequestsJitter == math.MaxInt
		}},
		{[]string{"-max-requests", "9223372036854775807"}, func(c Settings) bool { return c.MaxRequests == math.MaxInt }},
		{[]string{"-max-rss", "17179869183GiB"}, func(c Settings) bool { return c.MaxRSS == 17179869183<<30 }},
	} {
		c, err := Parse(tc.args)
		if err != nil || !tc.check(c) {
			t.Errorf("%v: want accepted, have %v, %+v", tc.args, err, c)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"100": 100, "1KiB": 1024, "512MiB": 512 << 20, "2GB": 2e9, "3M": 3 << 20,
		"18446744073709551615": math.MaxUint64, "18446744073GB": 18446744073e9,
	} {
		if have, err := ParseSize(in); err != nil || have != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, have, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "1TB", "MiB",
		"18446744073709551616", "18446744074GB", "17179869184GiB", "20000000000G", "99999999999999999999999KiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): no error", bad)
		}
	}
}

func TestParseWorkerProtocol(t *testing.T) {
	c, err := Parse(nil)
	if err != nil || c.WorkerProtocol != ProtocolPrefork {
		t.Fatalf("default -worker-protocol %q (%v), want prefork", c.WorkerProtocol, err)
	}
	for _, mode := range []string{"shared", "reuseport", "rr"} {
		for _, proto := range []string{ProtocolSystemd, ProtocolPlain, ProtocolNode} {
			if mode == "rr" && proto != ProtocolNode {
				continue // refused: see TestParseUsageErrors
			}
			c, err := Parse([]string{"-mode", mode, "-worker-protocol", proto, "--", "python3", "app.py"})
			if err != nil || c.WorkerProtocol != proto || c.Mode != mode {
				t.Errorf("-mode %s -worker-protocol %s: have %q %q, %v", mode, proto, c.Mode, c.WorkerProtocol, err)
			}
		}
	}
	// Node's IPC channel takes handed connections: rr for a node command.
	if c, err := Parse([]string{"-mode", "rr", "--", "node", "app.js"}); err != nil || c.Mode != ipc.ModeRR || c.WorkerProtocol != ProtocolNode {
		t.Errorf("-mode rr -- node app.js: have %q %q, %v; want rr and node", c.Mode, c.WorkerProtocol, err)
	}
	// A Node.js command defaults to the node protocol; -worker-protocol
	// still decides when given.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-mode", "shared", "--", "node", "app.js"}, ProtocolNode},
		{[]string{"-mode", "shared", "--", "/usr/local/bin/node", "app.js"}, ProtocolNode},
		{[]string{"-mode", "reuseport", "--", "./server.js"}, ProtocolNode},
		{[]string{"-mode", "reuseport", "--", "/srv/app/main.mjs"}, ProtocolNode},
		{[]string{"-mode", "reuseport", "--", "app.cjs", "-x"}, ProtocolNode},
		{[]string{"-mode", "shared", "--", "python3", "app.js"}, ProtocolPrefork},
		{[]string{"-mode", "shared", "--", "nodemon", "app.js"}, ProtocolPrefork},
		{[]string{"-mode", "shared", "-worker-protocol", "plain", "--", "node", "app.js"}, ProtocolPlain},
		{[]string{"-worker-protocol", "prefork", "--", "node", "app.js"}, ProtocolPrefork},
	} {
		c, err := Parse(tc.args)
		if err != nil || c.WorkerProtocol != tc.want {
			t.Errorf("%v: -worker-protocol %q (%v), want %q", tc.args, c.WorkerProtocol, err, tc.want)
		}
	}
	// Without -mode, a protocol that cannot take handed connections runs
	// in shared mode: `supervisor -- node app.js` just runs.
	for _, args := range [][]string{{"--", "node", "app.js"}, {"-worker-protocol", "systemd", "--", "gunicorn"}, {"-worker-protocol", "plain"}} {
		if c, err := Parse(args); err != nil || c.Mode != ipc.ModeShared {
			t.Errorf("%v: -mode %q (%v), want shared by default", args, c.Mode, err)
		}
	}
}
